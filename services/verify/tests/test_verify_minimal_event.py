"""interview-verified is a minimal event: verify builds it from the interview with the family's
HouseholdProfile (what classify needs) and nothing that identifies a person."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from regsosek.contracts import (
    EVENT_TYPES,
    FamilyInterview,
    FlagReason,
    HouseholdProfile,
    InterviewVerified,
    InterviewVerifiedV1,
    VerificationOutcome,
    household_profile,
)
from regsosek.envelope import encode
from regsosek.examples import family_interview
from regsosek_tools.sample import generate
from verify.domain import Decision
from verify.publisher import verified_event

AT = datetime(2022, 10, 20, 3, 0, 5, tzinfo=UTC)
VERIFIED = Decision(True, outcome=VerificationOutcome.VERIFIED)
ADDRESS = "Jl. Pahlawan Gg. Mawar No. 17, RT 001"
GPS = {"lat": -0.502106, "lon": 117.153709}


def example() -> FamilyInterview:
    """The worked example, with the identifying fields it leaves empty filled in as well."""
    d = family_interview()
    d["location"].update(address=ADDRESS, gps=GPS)
    return FamilyInterview.model_validate(d)


def identifying_values(iv: FamilyInterview) -> dict[str, str]:
    """Every identifying value of the interview, as text (label -> value)."""
    out = {"officer_id": iv.officer_id}
    loc = iv.location
    if loc.kk_number:
        out["kk_number"] = loc.kk_number
    if loc.address:
        out["address"] = loc.address
    if loc.gps:
        out["gps.lat"], out["gps.lon"] = repr(loc.gps.lat), repr(loc.gps.lon)
    for m in iv.members:
        out[f"member {m.line_no} name"] = m.name
        out[f"member {m.line_no} birth date"] = m.date_of_birth.isoformat()
        out[f"member {m.line_no} birth date (compact)"] = m.date_of_birth.strftime("%Y%m%d")
        if m.nik:
            out[f"member {m.line_no} NIK"] = m.nik
    return out


def test_serialised_event_of_the_example_holds_no_identifying_value():
    iv = example()
    body = encode(verified_event(iv, VERIFIED, AT, 1))
    values = identifying_values(iv)
    assert {"kk_number", "address", "gps.lat", "member 1 NIK", "member 1 name", "member 3 birth date"} <= set(values)
    found = {label: v for label, v in values.items() if v.encode() in body}
    assert not found, f"identifying values in the serialised interview-verified: {sorted(found)}"
    # and the check can fail: the v1 shape, with the interview, holds every one of them
    old = encode(InterviewVerifiedV1(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome="verified",
                                     verified_at=AT, interview=iv, decision_seq=1))
    assert all(v.encode() in old for label, v in values.items() if "compact" not in label)


def test_generated_families_leak_nothing_either():
    """Over a synthetic sample (many names, NIKs, KK numbers and birth dates): no value appears in
    its family's event, as a JSON string or as a bare number."""
    for iv in generate(7, 300).interviews:
        body = encode(verified_event(iv, VERIFIED, AT, 1)).decode()
        for label, v in identifying_values(iv).items():
            assert json.dumps(v) not in body and f":{v}" not in body, f"{iv.family_id}: {label} in the event"


def _property_names(schema) -> set[str]:
    names: set[str] = set()
    if isinstance(schema, dict):
        names |= set(schema.get("properties", {}))
        for v in schema.values():
            names |= _property_names(v)
    elif isinstance(schema, list):
        for v in schema:
            names |= _property_names(v)
    return names


def test_the_contract_has_no_field_for_identifying_data():
    names = _property_names(InterviewVerified.model_json_schema())
    assert {"age", "sex", "floor_area_m2", "assets", "submission_id", "sls_id"} <= names  # the scan sees fields
    # a member's form row (line_no) is there: member-level decisions (PBI-JKN, PIP) name members by it; it
    # identifies no one without intake's sealed record, and the list's order carried the same before
    assert not names & {"name", "nik", "kk_number", "address", "gps", "lat", "lon", "date_of_birth",
                        "interview", "interviewed_at", "officer_id", "building_no", "family_no"}


@pytest.mark.parametrize(
    ("dob", "age"),
    [
        ("1980-10-20", 42),  # birthday on the interview day (local date 2022-10-20)
        ("1980-10-21", 41),  # the day after
        ("1962-10-21", 59),
        ("1962-10-20", 60),
        ("2022-10-20", 0),  # born on the interview day
    ],
)
def test_ages_are_completed_years_on_the_interview_date(dob, age):
    d = family_interview()
    d["members"][0].update(date_of_birth=dob, nik=None)
    d["members"][1:] = []
    assert household_profile(FamilyInterview.model_validate(d)).members[0].age == age


def test_the_interview_local_date_counts_not_utc():
    d = family_interview()
    d["interviewed_at"] = "2022-10-20T01:00:00+08:00"  # 2022-10-19 in UTC
    d["members"][0].update(date_of_birth="1980-10-20", nik=None)
    assert household_profile(FamilyInterview.model_validate(d)).members[0].age == 42


def test_the_profile_keeps_what_classify_reads():
    iv = example()
    p = verified_event(iv, VERIFIED, AT, 4).profile
    assert (p.family_id, p.sls_id, p.submission_id, p.version) == (iv.family_id, iv.location.sls_id,
                                                                   iv.submission_id, iv.version)
    assert [m.age for m in p.members] == [42, 37, 3]
    assert [(m.sex, m.relationship, m.pregnant, m.school, m.highest_diploma, m.worked_last_week, m.industry,
             m.job_status, m.difficulty) for m in p.members] == [
        (m.sex, m.relationship, m.pregnant, m.school, m.highest_diploma, m.worked_last_week, m.industry,
         m.job_status, m.difficulty) for m in iv.members]
    # the form's answers the PMT does not read stay with verify (household.py: a model that needs one adds it there)
    assert p.housing.model_dump() == iv.housing.model_dump(exclude={"tenure", "land_title", "toilet_type",
                                                                    "septic_distance"})
    assert p.economy.model_dump() == iv.economy.model_dump(exclude={"programmes_received", "last_receipts",
                                                                    "internet_types", "account_types"})


def test_verified_event_carries_the_decision():
    iv = example()
    e = verified_event(iv, Decision(True, outcome=VerificationOutcome.VERIFIED_ADDED), AT, 7)
    assert (e.family_id, e.sls_id, e.outcome, e.verified_at, e.decision_seq) == (
        iv.family_id, iv.location.sls_id, VerificationOutcome.VERIFIED_ADDED, AT, 7)
    assert EVENT_TYPES[type(e)].endswith(".interview.verified.v2")
    with pytest.raises(ValueError):
        verified_event(iv, Decision(False, reason=FlagReason.NOT_ON_ROSTER), AT, 7)


def test_a_v1_record_upgrades_to_the_same_v2_event():
    iv = example()
    v1 = InterviewVerifiedV1(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome="verified",
                             verified_at=AT, interview=iv, decision_seq=3)
    assert v1.upgraded() == verified_event(iv, VERIFIED, AT, 3)


def test_profile_and_event_must_name_the_same_family():
    iv = example()
    p = household_profile(iv)
    other = copy.deepcopy(p.model_dump(mode="json"))
    other.update(family_id="64720100010002-0001-001", sls_id="64720100010002")
    with pytest.raises(ValidationError):
        InterviewVerified(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome="verified", verified_at=AT,
                          profile=HouseholdProfile.model_validate(other))
    with pytest.raises(ValidationError):
        HouseholdProfile.model_validate({**p.model_dump(mode="json"), "sls_id": "64720100010002"})
