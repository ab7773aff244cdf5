"""The PMT features and programme components read the form's full code lists (docs/FORM.md) as the
groups the model was written with: a head's diploma as primary, junior secondary, senior secondary
(general or vocational) or tertiary; working in agriculture as any sub-sector of KBLI section A;
a disability as a lot of difficulty, or cannot, in any domain. This system's earlier codes read as
they always did, so a family's features (and the model version) do not change with the new lists."""

from __future__ import annotations

import copy

import pytest

from classify.model import components, features
from regsosek.contracts import FamilyInterview, HouseholdProfile, household_profile
from regsosek.contracts.interview import DifficultyLevel, Diploma, Industry
from regsosek.examples import family_interview

DIPLOMA_FEATURES = ("head_diploma_sd", "head_diploma_smp", "head_diploma_sma", "head_diploma_tertiary")
# The head's diploma -> the one diploma feature that is 1 (None: all 0, no diploma).
EXPECTED_TIER = {
    "none": None, "sd": "head_diploma_sd", "smp": "head_diploma_smp", "sma": "head_diploma_sma",
    "smk": "head_diploma_sma", "d1_d2": "head_diploma_tertiary", "d3": "head_diploma_tertiary",
    "d4_s1": "head_diploma_tertiary", "s2": "head_diploma_tertiary", "s3": "head_diploma_tertiary",
    "d1_d3": "head_diploma_tertiary", "s2_s3": "head_diploma_tertiary",
}
AGRICULTURE = {"food_crops", "horticulture", "plantation", "fisheries", "livestock", "forestry_other_agriculture",
               "agriculture"}


def profile(head: dict | None = None, child: dict | None = None) -> HouseholdProfile:
    d = copy.deepcopy(family_interview())
    d["members"][0] |= head or {}
    d["members"][2] |= child or {}
    return household_profile(FamilyInterview.model_validate(d))


def test_the_table_covers_every_diploma_code():
    assert set(EXPECTED_TIER) == {c.value for c in Diploma}


@pytest.mark.parametrize("code", list(Diploma))
def test_the_heads_diploma_maps_to_its_group(code):
    f = features(profile({"highest_diploma": code.value}))
    on = [name for name in DIPLOMA_FEATURES if f[name] == 1.0]
    assert on == ([EXPECTED_TIER[code.value]] if EXPECTED_TIER[code.value] else [])
    assert all(f[name] in (0.0, 1.0) for name in DIPLOMA_FEATURES)


@pytest.mark.parametrize("code", list(Industry))
def test_the_head_works_in_agriculture_in_any_sub_sector_of_section_a(code):
    f = features(profile({"industry": code.value}))
    assert f["head_agriculture"] == (1.0 if code.value in AGRICULTURE else 0.0)


def test_a_head_who_did_not_work_is_not_in_agriculture():
    f = features(profile({"worked_last_week": False, "hours_worked": 0, "industry": None, "job_status": None}))
    assert f["head_agriculture"] == 0.0


@pytest.mark.parametrize("new,old", [("smk", "sma"), ("d3", "d1_d3"), ("s3", "s2_s3"), ("plantation", "agriculture"),
                                     ("fisheries", "agriculture")])
def test_a_new_code_gives_the_same_features_as_the_earlier_code_it_refines(new, old):
    field = "industry" if new in AGRICULTURE else "highest_diploma"
    assert features(profile({field: new})) == features(profile({field: old}))


@pytest.mark.parametrize("level", list(DifficultyLevel))
def test_a_disability_in_any_domain_is_the_severe_disability_component(level):
    # the child is 3: seeing is asked at that age; the worst domain is the member's difficulty
    p = profile(child={"difficulty": level.value, "difficulties": {"seeing": level.value}})
    assert components(p)["severe_disability"] is (level in (DifficultyLevel.A_LOT, DifficultyLevel.CANNOT))


def test_the_worst_domain_decides_the_component():
    answers = {"seeing": "some", "hearing": "some", "walking": "some", "using_hands": "some", "communicating": "some",
               "behaviour": "some", "remembering": "some", "self_care": "cannot"}
    p = profile({"difficulty": "cannot", "difficulties": answers})
    assert p.head.difficulty is DifficultyLevel.CANNOT
    assert components(p)["severe_disability"] is True
