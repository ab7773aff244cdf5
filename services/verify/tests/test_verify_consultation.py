"""A family added at a village consultation and ground-checked (verify.consultation), pure: decided
as a family added to its SLS, whatever the census roster lists, with every other interview check."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from test_verify_domain import SLS, entry, interview

from regsosek.contracts import FkpGroundChecked, FlagReason, RosterStatus, VerificationOutcome
from verify.consultation import CAUSE, on_ground_check
from verify.domain import InterviewState, Roster


def check(iv) -> FkpGroundChecked:
    return FkpGroundChecked(forum_id=str(uuid.uuid4()), family_id=iv.family_id, sls_id=iv.location.sls_id,
                            outcome="found", checked_on=date(2023, 5, 10), checked_by="OFC-1",
                            checked_at=datetime(2023, 5, 10, 2, tzinfo=UTC), interview=iv)


def roster(*entries) -> Roster:
    return Roster(SLS, 3, uuid.uuid4(), list(entries))


def test_a_found_family_missing_from_the_roster_is_verified_as_added():
    iv = interview(building=77)
    outcome = on_ground_check(InterviewState(False, None, roster(entry(RosterStatus.PRESENT))), check(iv))
    [v] = outcome.verdicts
    assert v.decision.verified and v.decision.outcome is VerificationOutcome.VERIFIED_ADDED
    assert (v.cause, v.matched, v.roster_revision, v.decision_seq) == (CAUSE, None, 3, 1)
    assert outcome.recount == SLS and outcome.claims[0].family_id == iv.family_id


def test_without_a_roster_it_is_decided_all_the_same_and_no_sls_is_recounted():
    outcome = on_ground_check(InterviewState(False, None, None), check(interview(building=77)))
    [v] = outcome.verdicts
    assert v.decision.outcome is VerificationOutcome.VERIFIED_ADDED and v.roster_revision is None
    assert outcome.recount is None and outcome.held is not None


def test_a_nik_held_by_another_family_is_still_flagged():
    iv = interview(building=77)
    holders = {h: f"{SLS}-0001-001" for h in iv.nik_hashes()}
    [v] = on_ground_check(InterviewState(False, None, roster(), holders), check(iv)).verdicts
    assert not v.decision.verified and v.decision.reason is FlagReason.DUPLICATE_NIK


def test_an_erased_family_and_a_family_not_found_change_nothing():
    iv = interview(building=77)
    assert on_ground_check(InterviewState(True, None, roster()), check(iv)).verdicts == ()
    not_found = check(iv).model_copy(update={"outcome": "not_found", "interview": None})
    assert on_ground_check(InterviewState(False, None, roster()), not_found).verdicts == ()
