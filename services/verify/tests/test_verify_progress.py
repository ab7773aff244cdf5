"""SLS completeness, later rosters, supervisor resolutions and progress grouping: pure rules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from test_verify_domain import KEY, KK, OTHER_KK, interview

from regsosek.contracts import (
    EVENT_TYPES,
    FlagReason,
    RosterStatus,
    SlsCompleted,
    SupervisorDecision,
    VerificationOutcome,
    VerificationResolved,
)
from regsosek.pseudonyms import kk_hash_hex
from regsosek.topics import Topic
from verify.domain import (
    ABSENT,
    Decided,
    Decision,
    NotResolvable,
    RosterEntry,
    changed,
    decide,
    decided_by_supervisor,
    group_length,
    matched_key,
    progress,
    resolve,
)

FAMILY = "64720100010001-0001-001"


def entry(building: int, status: RosterStatus = RosterStatus.PRESENT, *, family: int = 1,
          kk: str | None = None, count: int = 3) -> RosterEntry:
    return RosterEntry(building, family, kk_hash_hex(KEY, kk), count, status)


# ---------------------------------------------------------------- completeness


def test_empty_sls_is_not_complete_until_roster_families_are_accounted_for():
    roster = [entry(1), entry(2)]
    p = progress(roster, [])
    assert (p.expected, p.interviewed, p.absent, p.outstanding, p.complete) == (2, 0, 0, 2, False)


def test_complete_when_every_family_interviewed_or_confirmed_absent():
    roster = [entry(1), entry(2, RosterStatus.ADDED), entry(3, RosterStatus.MOVED), entry(4, RosterStatus.DISSOLVED),
              entry(5, RosterStatus.UNKNOWN)]
    p = progress(roster, [Decided(True, (1, 1)), Decided(False, (2, 1))])
    assert p.complete
    assert (p.expected, p.interviewed, p.verified, p.flagged, p.absent, p.outstanding) == (5, 2, 1, 1, 3, 0)


@pytest.mark.parametrize("status", [RosterStatus.PRESENT, RosterStatus.ADDED])
def test_a_family_expected_present_and_not_interviewed_keeps_the_sls_open(status):
    p = progress([entry(1), entry(2, status)], [Decided(True, (1, 1))])
    assert not p.complete and p.outstanding == 1 and p.absent == 0


def test_an_absent_family_that_was_interviewed_counts_as_interviewed_not_absent():
    roster = [entry(1, RosterStatus.MOVED), entry(2, RosterStatus.UNKNOWN)]
    p = progress(roster, [Decided(False, (1, 1))])
    assert p.complete
    assert (p.interviewed, p.flagged, p.absent) == (1, 1, 1)


def test_interviews_not_on_the_roster_are_counted_but_account_for_no_roster_family():
    p = progress([entry(1)], [Decided(False, None), Decided(False, None)])
    assert (p.interviewed, p.flagged, p.outstanding, p.complete) == (2, 2, 1, False)
    p = progress([entry(1)], [Decided(False, None), Decided(True, (1, 1))])
    assert (p.interviewed, p.verified, p.flagged, p.complete) == (2, 1, 1, True)


def test_two_interviews_matching_one_entry_account_for_it_once():
    p = progress([entry(1), entry(2)], [Decided(True, (1, 1)), Decided(False, (1, 1))])
    assert (p.interviewed, p.outstanding, p.complete) == (2, 1, False)


def test_a_match_must_be_the_exact_entry():
    p = progress([entry(1, family=2)], [Decided(True, (1, 1))])
    assert not p.complete


def test_absent_statuses_are_the_rt_heads_not_here_statuses():
    assert {RosterStatus.MOVED, RosterStatus.DISSOLVED, RosterStatus.UNKNOWN} == ABSENT


def test_matched_key_follows_kk_then_serials():
    by_kk = entry(7, family=3, kk=KK)
    assert matched_key(interview(), [entry(1, kk=OTHER_KK), by_kk]) == (7, 3)
    assert matched_key(interview(kk=None), [entry(1)]) == (1, 1)
    assert matched_key(interview(building=9), [entry(1, kk=OTHER_KK)]) is None


# ---------------------------------------------------------------- later rosters


def test_decision_state_and_code():
    verified = Decision(True, outcome=VerificationOutcome.VERIFIED)
    assert (verified.state, verified.code) == ("verified", "verified")
    d = Decision(False, reason=FlagReason.ROSTER_SAYS_MOVED, detail="x")
    assert (d.state, d.code) == ("flagged", "roster_says_moved")
    assert Decision(False, reason=FlagReason.REJECTED_BY_SUPERVISOR).state == "rejected"


def test_changed_compares_state_outcome_and_detail():
    verified = decide(interview(), [entry(1, kk=KK)])
    assert not changed("verified", "verified", None, verified)
    assert not changed("verified", "verified", "", verified)
    moved = decide(interview(), [entry(1, RosterStatus.MOVED, kk=KK)])
    assert changed("verified", "verified", "", moved)
    assert not changed("flagged", "roster_says_moved", moved.detail, moved)
    count4 = decide(interview(), [entry(1, kk=KK, count=4)])
    count5 = decide(interview(), [entry(1, kk=KK, count=5)])
    assert changed("flagged", count4.code, count4.detail, count5), "a different count is a different text"
    added = decide(interview(), [entry(1, RosterStatus.ADDED, kk=KK)])
    assert changed("verified", "verified", "", added)


@pytest.mark.parametrize("state,outcome,final", [
    ("rejected", "rejected_by_supervisor", True),
    ("verified", "verified_by_supervisor", True),
    ("verified", "verified", False),
    ("verified", "verified_added", False),
    ("flagged", "not_on_roster", False),
    ("flagged", "no_roster", False),
    ("flagged", "duplicate_nik", False),
])
def test_supervisor_decisions_stand_against_later_rosters(state, outcome, final):
    assert decided_by_supervisor(state, outcome) is final


# ---------------------------------------------------------------- resolutions


def resolution(decision: SupervisorDecision, reason: str = "checked on site") -> VerificationResolved:
    return VerificationResolved(submission_id=uuid.uuid4(), family_id=FAMILY, sls_id=FAMILY[:14], decision=decision,
                                supervisor_id="SPV-1", reason=reason, decided_at=datetime(2022, 10, 25, tzinfo=UTC))


@pytest.mark.parametrize("state", ["flagged", "rejected"])
def test_verify_resolution_verifies_a_flagged_or_rejected_family(state):
    d = resolve(state, resolution(SupervisorDecision.VERIFY))
    assert (d.state, d.outcome) == ("verified", VerificationOutcome.VERIFIED_BY_SUPERVISOR)
    assert "SPV-1" in d.detail


@pytest.mark.parametrize("state", ["flagged", "verified"])
def test_reject_resolution_rejects_with_who_and_why(state):
    d = resolve(state, resolution(SupervisorDecision.REJECT, "lives in the next RT"))
    assert (d.state, d.reason) == ("rejected", FlagReason.REJECTED_BY_SUPERVISOR)
    assert d.detail == "rejected by supervisor SPV-1: lives in the next RT"


def test_reject_detail_fits_the_flag_contract():
    d = resolve("flagged", resolution(SupervisorDecision.REJECT, "x" * 500))
    assert len(d.detail) == 500


@pytest.mark.parametrize("state,decision", [("verified", SupervisorDecision.VERIFY),
                                            ("rejected", SupervisorDecision.REJECT)])
def test_resolution_that_changes_nothing(state, decision):
    assert resolve(state, resolution(decision)) is None


@pytest.mark.parametrize("decision", list(SupervisorDecision))
def test_a_held_family_cannot_be_resolved(decision):
    with pytest.raises(NotResolvable):
        resolve("held", resolution(decision))


# ---------------------------------------------------------------- progress grouping and the event


@pytest.mark.parametrize("prefix,by,length", [
    ("64", None, 2), ("6472", None, 4), ("", None, 0), ("64", "regency", 4), ("6472", "village", 10),
    ("6472", "sls", 14), ("", "province", 2), ("6472010", "district", 7),
])
def test_group_length(prefix, by, length):
    assert group_length(prefix, by) == length


def test_group_level_above_the_prefix_is_refused():
    with pytest.raises(ValueError):
        group_length("6472010001", "regency")


def counts(**over) -> dict:
    d = {"sls_id": "64720100010001", "roster_revision": 1, "roster_submission_id": str(uuid.uuid4()),
         "expected": 5, "interviewed": 3, "verified": 2, "flagged": 1, "absent": 2,
         "completed_at": "2022-10-30T10:00:00+08:00"}
    d.update(over)
    return d


def test_sls_completed_contract():
    e = SlsCompleted.model_validate(counts())
    assert EVENT_TYPES[SlsCompleted] == "id.go.bps.regsosek.sls.completed.v1"
    assert Topic.SLS_COMPLETED.value == "sls-completed"
    assert e.interviewed == e.verified + e.flagged


@pytest.mark.parametrize("over", [{"verified": 3}, {"absent": 6}, {"roster_revision": 0}, {"expected": -1},
                                  {"sls_id": "6472"}])
def test_sls_completed_contract_rejects_inconsistent_counts(over):
    with pytest.raises(ValidationError):
        SlsCompleted.model_validate(counts(**over))
