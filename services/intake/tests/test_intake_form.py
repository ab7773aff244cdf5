"""The complete REGSOSEK22-K form: the extra Block III/IV/V answers validate as the field
procedure says, and the OpenAPI document shows every block and the meaning of every code."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from intake.app import create_app
from intake.domain import check_interview
from regsosek.contracts import FamilyInterview
from regsosek.examples import family_interview

COLLECTION = (date(2022, 10, 15), date(2022, 11, 20))


def full_form() -> dict:
    doc = family_interview()
    doc["housing"]["land_title"] = "shm"
    head = doc["members"][0]
    head |= {"id_document": "ktp", "has_business": True, "programmes": ["kur", "employment_insurance"],
             "business": {"workers": 2, "paid_workers": 1, "industry": "trade", "licensed": True,
                          "turnover": "5m_15m", "uses_internet": True},
             "school_level": "sma", "school_class": 3, "has_npwp": True,
             "difficulty": "a_lot", "has_caregiver": False, "chronic_disease": True,
             "chronic_diseases": ["hypertension", "diabetes"], "social_security": ["jkk", "jht"],
             "difficulties": {"seeing": "a_lot", "hearing": "none", "walking": "some"}}
    doc["members"][2] |= {"id_document": "birth_certificate", "under5_nutrition": "stunted"}
    doc["housing"] |= {"toilet_type": "gooseneck", "septic_distance": "ge_10m"}
    doc["economy"] = {"programmes_received": ["pkh", "sembako"], "bank_account": True, "internet_access": True,
                      "last_receipts": [{"programme": "pkh", "month": 9, "year": 2022}],
                      "internet_types": ["mobile"], "account_types": ["bank", "e_wallet"]}
    return doc


def test_full_form_is_accepted():
    iv = FamilyInterview.model_validate(full_form())
    errors, _ = check_interview(iv, collection=COLLECTION)
    assert errors == []
    assert iv.members[0].business.turnover.value == "5m_15m"
    assert iv.members[0].difficulties.worst().value == "a_lot"


@pytest.mark.parametrize("patch,needle", [
    (lambda d: d["members"][0].update(has_business=False), "business details apply only"),
    (lambda d: d["members"][0].update(difficulty="none"), "worst of the per-domain"),
    (lambda d: d["members"][0].update(programmes=["kur", "kur"]), "each programme may appear once"),
    (lambda d: d["housing"].update(tenure="rented"), "land_title applies only"),
    (lambda d: d["members"][0]["business"].update(turnover="lots"), "Input should be"),
    (lambda d: d["members"][0].update(chronic_disease=False), "chronic_diseases apply only"),
    (lambda d: d["members"][2].update(school="never", school_level="paud"), "school_level applies only"),
    (lambda d: d["members"][0].update(school_level=None), "school_class is given with"),
    (lambda d: d["members"][0]["business"].update(paid_workers=3), "paid_workers cannot exceed"),
    (lambda d: d["members"][0].update(social_security=["jkk", "jkk"]), "each code of social_security"),
    (lambda d: d["housing"].update(toilet="none", toilet_type="gooseneck"), "toilet_type applies only"),
    (lambda d: d["housing"].update(faeces_disposal="open"), "septic_distance applies only"),
    (lambda d: d["economy"]["last_receipts"].append({"programme": "blt_desa", "month": 1, "year": 2022}),
     "only for programmes received"),
    (lambda d: d["economy"]["last_receipts"][0].update(month=13), "less than or equal to 12"),
    (lambda d: d["economy"].update(internet_access=False), "internet_types apply only"),
    (lambda d: d["economy"].update(bank_account=False), "account_types apply only"),
])
def test_contract_rejects_incoherent_answers(patch, needle):
    doc = full_form()
    patch(doc)
    with pytest.raises(ValidationError) as e:
        FamilyInterview.model_validate(doc)
    assert needle in str(e.value)


def test_nutrition_of_a_child_over_five_is_an_error_at_its_path():
    doc = full_form()
    doc["members"][0]["under5_nutrition"] = "normal"  # the head is 42
    errors, _ = check_interview(FamilyInterview.model_validate(doc), collection=COLLECTION)
    assert [e.path for e in errors] == ["/members/0/under5_nutrition"]


@pytest.mark.parametrize("age_note,dob,difficulty,allowed", [
    ("aged 60+", "1950-01-01", "none", True),
    ("with a disability", "1990-01-01", "cannot", True),
    ("under 60 without a disability", "1990-01-01", "some", False),
])
def test_the_caregiver_question_is_asked_of_the_elderly_and_the_disabled(age_note, dob, difficulty, allowed):
    doc = full_form()
    doc["members"][0] |= {"date_of_birth": dob, "difficulty": difficulty, "difficulties": None, "nik": None}
    errors, _ = check_interview(FamilyInterview.model_validate(doc), collection=COLLECTION)
    assert ([e.path for e in errors] == []) is allowed, (age_note, errors)
    if not allowed:
        assert [e.path for e in errors] == ["/members/0/has_caregiver"]


def test_form_codes_added_for_fidelity_are_accepted():
    doc = full_form()
    doc["members"][2]["under5_nutrition"] = "dont_know"
    doc["members"][0] |= {"job_status": "civil_servant", "worked_last_week": True, "industry": "public_administration"}
    assert check_interview(FamilyInterview.model_validate(doc), collection=COLLECTION)[0] == []


def test_openapi_documents_every_block_and_code_meaning():
    spec = create_app().openapi()
    schemas = spec["components"]["schemas"]
    for block in ("Location", "Housing", "Member", "FamilyEconomy", "Livestock", "Business", "FunctionalDifficulties"):
        assert block in schemas, block
    enums = {name: s for name, s in schemas.items() if "enum" in s}
    assert len(enums) >= 20
    undocumented = [name for name, s in enums.items() if not s.get("description")]
    assert undocumented == []
    assert "milik sendiri" in schemas["Tenure"]["description"]
    assert "pembantu/sopir" in schemas["Relationship"]["description"]
    assert "PNS/TNI/Polri/BUMN" in schemas["JobStatus"]["description"]
    for enum in ("InterviewResult", "MemberPresence", "KkStatus", "SupervisorCheckOutcome", "ToiletType", "SchoolLevel",
                 "SepticDistance", "ChronicDisease", "SocialSecurity", "InternetType", "AccountType"):
        assert schemas[enum].get("description"), enum
    member = schemas["Member"]["properties"]
    for field in ("nik", "date_of_birth", "school", "highest_diploma", "job_status", "business", "difficulties",
                  "has_caregiver", "chronic_disease", "under5_nutrition", "health_insurance", "programmes"):
        assert field in member, field
