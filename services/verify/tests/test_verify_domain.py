"""Verification decisions: an interview against its SLS roster."""

from __future__ import annotations

import copy
import re

import pytest

from regsosek.contracts import FamilyInterview, FlagReason, RosterStatus, VerificationOutcome, pseudonymise_interview
from regsosek.pseudonyms import kk_hash_hex
from verify.domain import Decision, RosterEntry, decide, duplicate_interview, duplicate_nik, find_entry, no_roster

KEY = "unit-test-nik-key"

SLS = "64720100010001"
KK = "6472010101220001"
OTHER_KK = "6472010101220999"
NAMES = ("Budi", "Siti", "Ani")
NIKS = ("6472010505800001", "6472014506850002")

BASE = {
    "submission_id": "7d1c9a56-63a4-4b51-8f5e-2f0c8f4c8b21",
    "officer_id": "OFC-1",
    "interviewed_at": "2022-10-20T10:00:00+08:00",
    "location": {"sls_id": SLS, "building_no": 1, "family_no": 1, "kk_number": KK},
    "housing": {"tenure": "owned", "floor_area_m2": 36, "floor": "wood_plank", "wall": "wood_board", "roof": "zinc",
                "drinking_water": "refill", "lighting": "pln_metered", "installed_power": "450",
                "cooking_fuel": "lpg_3kg", "toilet": "own", "faeces_disposal": "septic_tank"},
    "members": [
        {"line_no": 1, "name": "Budi", "nik": NIKS[0], "sex": "male", "date_of_birth": "1980-05-05",
         "relationship": "head", "marital_status": "married", "school": "not_anymore", "highest_diploma": "sd",
         "worked_last_week": True, "hours_worked": 40, "industry": "agriculture", "job_status": "casual"},
        {"line_no": 2, "name": "Siti", "nik": NIKS[1], "sex": "female", "date_of_birth": "1985-06-05",
         "relationship": "spouse", "marital_status": "married", "school": "not_anymore", "highest_diploma": "sd",
         "worked_last_week": False, "pregnant": True},
        {"line_no": 3, "name": "Ani", "sex": "female", "date_of_birth": "2019-01-01", "relationship": "child",
         "marital_status": "never_married", "school": "never", "highest_diploma": "none", "worked_last_week": False},
    ],
}


def interview(*, kk: str | None = KK, building: int = 1, family: int = 1, members: int = 3) -> FamilyInterview:
    d = copy.deepcopy(BASE)
    d["location"].update(kk_number=kk, building_no=building, family_no=family)
    d["members"] = d["members"][:members]
    return pseudonymise_interview(FamilyInterview.model_validate(d), KEY)


def entry(status: RosterStatus, *, building: int = 1, family: int = 1, kk: str | None = KK, count: int = 3) -> RosterEntry:
    return RosterEntry(building, family, kk_hash_hex(KEY, kk), count, status)


@pytest.mark.parametrize(
    "roster,verified,outcome,reason",
    [
        ([entry(RosterStatus.PRESENT)], True, VerificationOutcome.VERIFIED, None),
        ([entry(RosterStatus.ADDED)], True, VerificationOutcome.VERIFIED_ADDED, None),
        ([entry(RosterStatus.MOVED)], False, None, FlagReason.ROSTER_SAYS_MOVED),
        ([entry(RosterStatus.DISSOLVED)], False, None, FlagReason.ROSTER_SAYS_DISSOLVED),
        ([entry(RosterStatus.UNKNOWN)], False, None, FlagReason.ROSTER_SAYS_UNKNOWN),
        ([], False, None, FlagReason.NOT_ON_ROSTER),
        ([entry(RosterStatus.PRESENT, building=2, kk=OTHER_KK)], False, None, FlagReason.NOT_ON_ROSTER),
        ([entry(RosterStatus.PRESENT, family=2, kk=None)], False, None, FlagReason.NOT_ON_ROSTER),
        ([entry(RosterStatus.PRESENT, count=4)], False, None, FlagReason.MEMBER_COUNT_DIFFERS),
        ([entry(RosterStatus.PRESENT, count=2)], False, None, FlagReason.MEMBER_COUNT_DIFFERS),
        ([entry(RosterStatus.ADDED, count=5)], False, None, FlagReason.MEMBER_COUNT_DIFFERS),
        # the RT head's status is reported before a member count difference
        ([entry(RosterStatus.MOVED, count=5)], False, None, FlagReason.ROSTER_SAYS_MOVED),
        ([entry(RosterStatus.DISSOLVED, count=1)], False, None, FlagReason.ROSTER_SAYS_DISSOLVED),
    ],
    ids=["present", "added", "moved", "dissolved", "unknown", "empty-roster", "other-family", "other-serial",
         "more-on-roster", "fewer-on-roster", "added-count-differs", "moved-and-count", "dissolved-and-count"],
)
def test_decide_table(roster, verified, outcome, reason):
    d = decide(interview(), roster)
    assert (d.verified, d.outcome, d.reason) == (verified, outcome, reason)
    if verified:
        assert d.detail == ""
    else:
        assert d.detail


def test_kk_match_takes_precedence_over_serials():
    by_serial = entry(RosterStatus.MOVED, building=1, family=1, kk=OTHER_KK)
    by_kk = entry(RosterStatus.PRESENT, building=7, family=3, kk=KK)
    for roster in ([by_serial, by_kk], [by_kk, by_serial]):
        assert find_entry(interview(), roster) is by_kk
        assert decide(interview(), roster).outcome is VerificationOutcome.VERIFIED


def test_kk_match_precedence_also_when_kk_entry_is_flagged():
    by_serial = entry(RosterStatus.PRESENT, building=1, family=1, kk=None)
    by_kk = entry(RosterStatus.DISSOLVED, building=7, family=3, kk=KK)
    assert decide(interview(), [by_serial, by_kk]).reason is FlagReason.ROSTER_SAYS_DISSOLVED


@pytest.mark.parametrize("kk", [None, OTHER_KK])
def test_serial_match_when_kk_absent_or_not_listed(kk):
    target = entry(RosterStatus.ADDED, building=4, family=2, kk=None)
    roster = [entry(RosterStatus.PRESENT, building=1, family=1, kk="6472010101229999"), target]
    iv = interview(kk=kk, building=4, family=2)
    assert find_entry(iv, roster) is target
    assert decide(iv, roster).outcome is VerificationOutcome.VERIFIED_ADDED


def test_interview_without_kk_does_not_match_roster_entry_without_kk_by_kk():
    # None == None must not count as a KK match
    wrong = entry(RosterStatus.MOVED, building=9, family=9, kk=None)
    right = entry(RosterStatus.PRESENT, building=1, family=1, kk=None)
    assert find_entry(interview(kk=None), [wrong, right]) is right


def test_member_count_detail_gives_both_counts():
    d = decide(interview(members=2), [entry(RosterStatus.PRESENT, count=3)])
    assert d.reason is FlagReason.MEMBER_COUNT_DIFFERS
    assert "3" in d.detail and "2" in d.detail


def test_not_on_roster_detail_names_the_serials():
    d = decide(interview(building=12, family=5), [])
    assert "building 12" in d.detail and "family 5" in d.detail


def test_flag_constructors():
    d = duplicate_nik([2, 3])
    assert (d.verified, d.reason) == (False, FlagReason.DUPLICATE_NIK)
    assert "2, 3" in d.detail
    d = duplicate_interview()
    assert (d.verified, d.reason) == (False, FlagReason.DUPLICATE_INTERVIEW)
    d = no_roster(48)
    assert (d.verified, d.reason) == (False, FlagReason.NO_ROSTER)
    assert "48 h" in d.detail


def _all_flag_details() -> list[Decision]:
    iv = interview()
    decisions = [decide(iv, [])]
    for status in (RosterStatus.MOVED, RosterStatus.DISSOLVED, RosterStatus.UNKNOWN):
        decisions.append(decide(iv, [entry(status)]))
    decisions.append(decide(iv, [entry(RosterStatus.PRESENT, count=9)]))
    decisions.append(decide(interview(kk=KK, building=9999, family=999), []))
    decisions += [duplicate_nik([1, 2]), duplicate_interview(), no_roster(72)]
    return decisions


@pytest.mark.parametrize("decision", _all_flag_details(), ids=lambda d: d.reason.value)
def test_detail_texts_carry_no_personal_data(decision):
    text = decision.detail
    assert text
    assert len(text) <= 500  # fits InterviewFlagged.detail
    for name in NAMES:
        assert name not in text
    for ident in (KK, *NIKS):
        assert ident not in text
        assert ident[-8:] not in text  # not even a tail of it
    assert not re.search(r"\d{8,}", text), text


# ---------------------------------------------------------------- interview versions and decision sequences


def test_interview_arrival_by_version_not_by_order():
    from verify.domain import Arrival, interview_arrival

    iv = pseudonymise_interview(FamilyInterview.model_validate(BASE), KEY)  # version 1
    sid = str(iv.submission_id)
    assert interview_arrival(None, iv) is Arrival.NEW
    assert interview_arrival((1, sid), iv) is Arrival.REPEATED
    assert interview_arrival((1, "00000000-0000-4000-8000-000000000000"), iv) is Arrival.DUPLICATE
    assert interview_arrival((2, "00000000-0000-4000-8000-000000000000"), iv) is Arrival.SUPERSEDED
    newer = pseudonymise_interview(FamilyInterview.model_validate(
        {**BASE, "version": 2, "submission_id": "00000000-0000-4000-8000-000000000001"}), KEY)
    assert interview_arrival((1, sid), newer) is Arrival.NEW
