"""The domain's one call per event: a state value in, an Outcome out (pure, no store)."""

from __future__ import annotations

import uuid

import pytest
from test_verify_handlers import SLS, again, erasure, family, interview, nik, resolution, roster

from regsosek.contracts import FlagReason, RosterStatus, SupervisorDecision
from verify.domain import (
    HoldState,
    InterviewState,
    NotResolvable,
    ResolutionState,
    RosterState,
    Stored,
    judge,
    on_hold_expired,
    on_interview,
    on_resolution,
    on_roster,
    roster_of,
)

OTHER_FAMILY = "64720100010009-0001-001"


def stored(iv, state: str = "verified", outcome: str | None = "verified", seq: int = 1, *, body: bool = True,
           traceparent: str | None = None) -> Stored:
    return Stored(iv.family_id, iv.location.sls_id, iv.version, str(iv.submission_id), state, outcome, "", seq,
                  iv if body else None, traceparent)


def current(*families, revision: int = 1):
    return roster_of(roster(*families), revision)


# ---------------------------------------------------------------- judge: NIK claims


def test_judge_claims_free_niks_and_names_the_lines_another_family_holds():
    iv = interview()
    spouse = bytes.fromhex(iv.members[1].nik_hash)
    holders = {spouse: OTHER_FAMILY}
    claim, d = judge(iv, current(family(1)), holders)
    assert (claim.family_id, claim.clashes, d.reason) == (iv.family_id, (2,), FlagReason.DUPLICATE_NIK)
    assert set(claim.niks) == set(iv.nik_hashes())
    assert holders[spouse] == OTHER_FAMILY and list(holders.values()).count(iv.family_id) == 1


def test_judge_keeps_the_familys_own_claims_and_releases_the_ones_it_no_longer_lists():
    iv = interview()
    dropped = b"\x01" * 32
    holders = {h: iv.family_id for h in iv.nik_hashes()} | {dropped: iv.family_id}
    claim, d = judge(iv, current(family(1)), holders)
    assert claim.clashes == () and d.verified
    assert dropped not in holders


# ---------------------------------------------------------------- interviews


def test_an_interview_without_a_roster_is_held_and_claims_nothing():
    iv = interview()
    out = on_interview(InterviewState(False, None, None), iv)
    assert (out.held, out.claims, out.verdicts, out.recount) == (iv, (), (), None)


def test_an_interview_with_its_roster_is_held_claimed_and_decided_under_the_next_sequence():
    iv = interview(version=2)
    out = on_interview(InterviewState(False, stored(again(iv, version=1), seq=4), current(family(1))), iv)
    (v,) = out.verdicts
    assert (v.decision.verified, v.cause, v.decision_seq, v.matched, v.roster_revision) == (True, "interview", 5, (1, 1), 1)
    assert out.held == iv and [c.family_id for c in out.claims] == [iv.family_id] and out.recount == SLS


@pytest.mark.parametrize("stored_version,same_submission,verdicts", [(2, False, 0), (1, True, 0), (1, False, 1)],
                         ids=["superseded", "repeated", "duplicate"])
def test_an_interview_meeting_a_stored_version(stored_version, same_submission, verdicts):
    iv = interview()
    there = again(iv, version=stored_version, submission_id=str(iv.submission_id if same_submission else uuid.uuid4()))
    out = on_interview(InterviewState(False, stored(there, seq=3), current(family(1))), iv)
    assert (out.held, out.claims, len(out.verdicts)) == (None, (), verdicts)
    if verdicts:
        (v,) = out.verdicts
        assert (v.decision.reason, v.decision_seq, v.changes_family) == (FlagReason.DUPLICATE_INTERVIEW, 3, False)


def test_an_erased_familys_interview_changes_nothing():
    out = on_interview(InterviewState(True, None, current(family(1))), interview())
    assert out == type(out)()


# ---------------------------------------------------------------- rosters


def test_a_roster_decides_held_interviews_in_order_claims_included():
    a = interview(building=1)
    b = interview(building=2, niks=(nik(SLS, 1, 1), nik(SLS, 2, 2)))  # shares the head's NIK with a
    state = RosterState(SLS, 0, frozenset(), (stored(a, "held", None, 0), stored(b, "held", None, 0)))
    out = on_roster(state, roster(family(1), family(2)))
    assert [(v.interview.family_id, v.decision.code, v.cause, v.decision_seq) for v in out.verdicts] == [
        (a.family_id, "verified", "roster", 1), (b.family_id, "duplicate_nik", "roster", 1)]
    assert [c.clashes for c in out.claims] == [(), (1,)]
    assert out.roster.roster.revision == 1 and out.recount == SLS


def test_a_roster_revision_rematches_unchanged_families_and_leaves_supervisors_decisions():
    a, b = interview(building=1), interview(building=2)
    state = RosterState(SLS, 3, frozenset(), (stored(a), stored(b, "rejected", "rejected_by_supervisor", 2)))
    out = on_roster(state, roster(family(1), family(2, RosterStatus.MOVED)))
    assert out.verdicts == ()
    assert [(m.family_id, m.matched, m.roster_revision) for m in out.rematches] == [
        (a.family_id, (1, 1), 4), (b.family_id, (2, 1), 4)]
    assert [c.family_id for c in out.claims] == [a.family_id], "a supervisor's decision is not judged again"


def test_a_roster_keeps_no_kk_hash_of_an_erased_family():
    fid = interview(building=2).family_id
    out = on_roster(RosterState(SLS, 1, frozenset({fid}), ()), roster(family(1), family(2)))
    assert [f.kk_hash is None for f in out.roster.received.families] == [False, True]
    assert [e.kk_hash is None for e in out.roster.roster.entries] == [False, True]
    assert erasure(fid).sls_id == SLS


# ---------------------------------------------------------------- resolutions and holds


def test_a_resolution_verifies_a_flagged_family_under_the_next_sequence():
    iv = interview()
    r = resolution(iv.family_id, SupervisorDecision.VERIFY)
    out = on_resolution(ResolutionState(stored(iv, "flagged", "not_on_roster", 2), None), r)
    (v,) = out.verdicts
    assert (v.decision.code, v.decision_seq, v.matched, out.resolution, out.recount) == (
        "verified_by_supervisor", 3, None, (r, 1), None)


@pytest.mark.parametrize("state,match", [
    (None, "no interview"), ("held", "held"), ("erased", "erased"),
])
def test_resolutions_that_cannot_apply(state, match):
    iv = interview()
    there = None if state is None else stored(iv, "held" if state == "held" else "flagged", None, body=state != "erased")
    with pytest.raises(NotResolvable, match=match):
        on_resolution(ResolutionState(there, None), resolution(iv.family_id, SupervisorDecision.VERIFY))


def test_an_expired_hold_is_flagged_no_roster_in_its_own_trace():
    iv = interview()
    out = on_hold_expired(HoldState(stored(iv, "held", None, 0, traceparent="00-ab-cd-01"), None), 7200)
    (v,) = out.verdicts
    assert (v.decision.reason, v.cause, v.decision_seq, v.traceparent) == (FlagReason.NO_ROSTER, "hold_timeout", 1,
                                                                           "00-ab-cd-01")
    assert "2 h" in v.decision.detail and out.claims == ()


def test_an_expired_hold_with_its_roster_after_all_is_judged():
    iv = interview()
    out = on_hold_expired(HoldState(stored(iv, "held", None, 0), current(family(1))), 7200)
    (v,) = out.verdicts
    assert (v.decision.verified, v.cause, out.recount) == (True, "roster", SLS)
    assert on_hold_expired(HoldState(None, None), 7200).verdicts == ()
