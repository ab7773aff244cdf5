"""A worked example of each submission: used as the OpenAPI example, in the README and
as the base of unit tests (which derive broken variants from it)."""

from __future__ import annotations

import copy

FAMILY_INTERVIEW: dict = {
    "submission_id": "7d1c9a56-63a4-4b51-8f5e-2f0c8f4c8b21",
    "officer_id": "OFC-1",
    "interviewed_at": "2022-10-20T10:00:00+08:00",
    "location": {"sls_id": "64720100010001", "building_no": 1, "family_no": 1, "kk_number": "6472010101220001"},
    "housing": {"tenure": "owned", "floor_area_m2": 36, "floor": "wood_plank", "wall": "wood_board", "roof": "zinc",
                "drinking_water": "refill", "lighting": "pln_metered", "installed_power": "450",
                "cooking_fuel": "lpg_3kg", "toilet": "own", "faeces_disposal": "septic_tank"},
    "members": [
        {"line_no": 1, "name": "Budi", "nik": "6472010505800001", "sex": "male", "date_of_birth": "1980-05-05",
         "relationship": "head", "marital_status": "married", "school": "not_anymore", "highest_diploma": "sd",
         "worked_last_week": True, "hours_worked": 40, "industry": "food_crops", "job_status": "casual"},
        {"line_no": 2, "name": "Siti", "nik": "6472014506850002", "sex": "female", "date_of_birth": "1985-06-05",
         "relationship": "spouse", "marital_status": "married", "school": "not_anymore", "highest_diploma": "sd",
         "worked_last_week": False, "pregnant": True},
        {"line_no": 3, "name": "Ani", "sex": "female", "date_of_birth": "2019-01-01", "relationship": "child",
         "marital_status": "never_married", "school": "never", "highest_diploma": "none", "worked_last_week": False},
    ],
    "economy": {"assets": ["motorbike", "smartphone"]},
}


def family_interview() -> dict:
    """A fresh, mutable copy of the example family."""
    return copy.deepcopy(FAMILY_INTERVIEW)
