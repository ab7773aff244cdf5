"""The form's full code lists (docs/FORM.md) at intake: every diploma and industry code is accepted
(a job's and an own business's industry alike, this system's earlier codes too); a functional
difficulty answered for a member younger than its domain's age filter is an error naming the field
and the age, through the HTTP API a 422; each code's meaning is in the OpenAPI."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from fastapi.testclient import TestClient

from intake.app import create_app
from intake.domain import check_interview
from intake.settings import IntakeSettings
from regsosek.auth import Role, mint
from regsosek.contracts import FamilyInterview
from regsosek.contracts.interview import (
    DIFFICULTY_MIN_AGE,
    EARLIER_CODES,
    DifficultyLevel,
    Diploma,
    FunctionalDifficulties,
    Industry,
    current_codes,
)
from regsosek.examples import family_interview

COLLECTION = (date(2022, 10, 15), date(2022, 11, 20))
# The example's members on its interview date (2022-10-20): head 42, spouse 37, child 3.
CHILD = 2


def errors_of(doc: dict) -> list[tuple[str, str]]:
    errors, _ = check_interview(FamilyInterview.model_validate(doc), collection=COLLECTION)
    return [(e.path, e.reason) for e in errors]


@pytest.mark.parametrize("code", list(Diploma))
def test_every_diploma_code_is_accepted(code):
    doc = family_interview()
    doc["members"][0]["highest_diploma"] = code.value
    assert errors_of(doc) == []


@pytest.mark.parametrize("code", list(Industry))
def test_every_industry_code_is_accepted_for_a_job_and_an_own_business(code):
    doc = family_interview()
    doc["members"][0] |= {"industry": code.value, "has_business": True,
                          "business": {"industry": code.value, "workers": 1, "paid_workers": 0, "turnover": "lt_5m"}}
    iv = FamilyInterview.model_validate(doc)
    assert iv.members[0].industry is code and iv.members[0].business.industry is code
    assert errors_of(doc) == []


def test_an_unknown_code_is_refused_by_the_contract():
    for field, bad in (("highest_diploma", "sltp"), ("industry", "farming")):
        doc = family_interview()
        doc["members"][0][field] = bad
        with pytest.raises(ValueError, match="Input should be"):
            FamilyInterview.model_validate(doc)


def test_the_lists_have_the_forms_length_and_sections():
    assert [c.value for c in current_codes(Diploma)] == ["none", "sd", "smp", "sma", "smk", "d1_d2", "d3", "d4_s1",
                                                        "s2", "s3"]
    assert len(current_codes(Industry)) == 26  # 21 KBLI sections, A split in six
    assert sorted({c.kbli_section for c in Industry}) == list("ABCDEFGHIJKLMNOPQRSTU")
    assert [c.value for c in Industry if c.agricultural] == [
        "food_crops", "horticulture", "plantation", "fisheries", "livestock", "forestry_other_agriculture",
        "agriculture"]
    assert {c.value for c in EARLIER_CODES} == {"d1_d3", "s2_s3", "agriculture"}
    assert set(DIFFICULTY_MIN_AGE) == set(FunctionalDifficulties.model_fields)  # every domain has its filter


# ---------------------------------------------------------------- functional difficulty: age filters


def with_child(age_dob: str, **answers) -> dict:
    doc = family_interview()
    doc["members"][CHILD] |= {"date_of_birth": age_dob, **answers}
    return doc


@pytest.mark.parametrize("domain", list(DIFFICULTY_MIN_AGE))
def test_each_domain_is_refused_below_its_age_and_accepted_from_it(domain):
    min_age = DIFFICULTY_MIN_AGE[domain]
    younger = f"{2022 - min_age}-12-01"  # turns min_age after the interview: min_age - 1 on 2022-10-20
    of_age = f"{2022 - min_age}-01-01"
    answers = {"difficulty": "some", "difficulties": {domain: "some"}}
    errors = errors_of(with_child(younger, **answers))
    path = f"/members/{CHILD}/difficulties/{domain}"
    assert path in [p for p, _ in errors], errors
    reason = dict(errors)[path]
    assert f"aged {min_age} or more" in reason and f"is {min_age - 1}" in reason
    assert errors_of(with_child(of_age, **answers)) == []


def test_a_child_under_two_is_not_asked_at_all():
    errors = errors_of(with_child("2021-06-01", difficulty="a_lot"))
    assert errors == [(f"/members/{CHILD}/difficulty",
                       "functional difficulty is asked only of members aged 2 or more (this member is 1)")]


def test_remembering_and_self_care_wait_until_five_while_the_others_start_at_two():
    three = "2019-01-01"
    ok = {"seeing": "a_lot", "hearing": "some", "walking": "cannot", "using_hands": "some",
          "communicating": "some", "behaviour": "a_lot"}
    assert errors_of(with_child(three, difficulty="cannot", difficulties=ok)) == []
    errors = errors_of(with_child(three, difficulty="cannot", difficulties=ok | {"remembering": "some",
                                                                                  "self_care": "cannot"}))
    assert [p for p, _ in errors] == [f"/members/{CHILD}/difficulties/remembering",
                                      f"/members/{CHILD}/difficulties/self_care"]


def test_none_is_accepted_at_any_age():
    baby = "2022-09-01"
    all_none = {d: "none" for d in DIFFICULTY_MIN_AGE}
    assert errors_of(with_child(baby, difficulty="none", difficulties=all_none, school="never")) == []


def test_an_age_given_instead_of_a_birth_date_is_filtered_the_same_way():
    doc = family_interview()
    doc["members"][CHILD] |= {"date_of_birth": None, "age": 4, "difficulty": "some",
                              "difficulties": {"self_care": "some"}}
    assert [p for p, _ in errors_of(doc)] == [f"/members/{CHILD}/difficulties/self_care"]


def test_a_newborn_reported_in_an_update_is_not_asked_about_difficulty():
    from intake.registry_domain import update_problems
    from regsosek.contracts.updates import FamilyUpdate

    newborn = {"line_no": 4, "name": "Bayi", "sex": "female", "date_of_birth": "2023-02-01", "relationship": "child",
               "marital_status": "never_married", "school": "never", "highest_diploma": "none",
               "worked_last_week": False, "difficulty": "cannot", "difficulties": {"seeing": "cannot"}}
    u = FamilyUpdate.model_validate({
        "submission_id": str(uuid.uuid4()), "family_id": "64720100010001-0001-001", "sls_id": "64720100010001",
        "channel": "village", "reported_by": "DESA-1", "occurred_on": "2023-02-01",
        "change": {"kind": "birth", "member": newborn}})
    paths = [p.path for p in update_problems(u, Role.VILLAGE_OFFICIAL, date(2022, 11, 20))]
    assert paths == ["/change/member/difficulty", "/change/member/difficulties/seeing"]


# ---------------------------------------------------------------- through the HTTP API


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(IntakeSettings(env="local")))


def test_an_out_of_filter_difficulty_is_a_422_naming_the_field_and_the_reason(client):
    doc = with_child("2019-01-01", difficulty="some", difficulties={"remembering": "some"})
    doc["submission_id"] = str(uuid.uuid4())
    r = client.post("/v1/interviews", json=doc,
                    headers={"authorization": f"Bearer {mint(subject='T-1', role=Role.OFFICER, areas=['64'])}"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"path": f"/members/{CHILD}/difficulties/remembering",
                                   "reason": "remembering difficulty is asked only of members aged 5 or more "
                                             "(this member is 3)"}]


# ---------------------------------------------------------------- the OpenAPI keeps each code's meaning


def test_openapi_gives_the_meaning_of_every_code_and_the_age_filters():
    schemas = create_app().openapi()["components"]["schemas"]
    for enum in (Diploma, Industry, DifficultyLevel):
        schema = schemas[enum.__name__]
        assert schema["enum"] == [c.value for c in enum]
        text = " ".join(schema["description"].split())  # the docstring as written, unwrapped
        missing = [c.value for c in enum if f"{c.value} = " not in text]
        assert missing == [], (enum.__name__, missing)
    assert "SMK/MAK" in schemas["Diploma"]["description"]
    assert "KBLI 2020" in schemas["Industry"]["description"]
    described = schemas["FunctionalDifficulties"]["description"]
    assert "from age 2" in described and "from age 5" in described
    member = schemas["Member"]["properties"]
    assert "aged 2 or more" in member["difficulty"]["description"]
    assert "docs/FORM.md" in member["highest_diploma"]["description"]
    assert "docs/FORM.md" in member["industry"]["description"]
