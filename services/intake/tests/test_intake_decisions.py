"""Intake's pure decisions (intake.domain): a checked submission, the idempotency outcome of each
submission against what is stored, and what an erasure changes. Plain values in, a decision out."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime

from intake.domain import (
    Decision,
    EarlierErasure,
    ErasureState,
    IntakeState,
    Invalid,
    Received,
    StoredBody,
    Submission,
    checked_submission,
    decide_erasure,
    decide_submissions,
    placement_problems,
)
from regsosek.contracts import FamilyInterview, VerificationResolved
from regsosek.examples import family_interview

COLLECTION = (date(2022, 10, 15), date(2022, 11, 20))
SLS = "64720100010001"
FAMILY = f"{SLS}-0001-001"
AT = datetime(2022, 10, 20, tzinfo=UTC)


def checked(**changes) -> Submission:
    s = checked_submission(FamilyInterview.model_validate({**family_interview(), **changes}), "OFC-1",
                           collection=COLLECTION)
    assert isinstance(s, Submission)
    return s


def stored(s: Submission, **changes) -> Received:
    return replace(Received(s.submission_id, s.kind, s.sls_id, s.family_id, s.version, s.content_hash, "evt-1", AT,
                            s.warnings), **changes)


def test_a_checked_interview_carries_its_ids_hash_and_stored_document():
    s = checked()
    assert (s.kind, s.sls_id, s.family_id, s.version, s.submitted_by) == ("interview", SLS, FAMILY, 1, "OFC-1")
    assert s.document["members"][0]["nik"] == "6472010505800001" and s.warnings == []
    assert checked().content_hash == s.content_hash != checked(version=2).content_hash


def test_text_the_database_cannot_store_is_a_problem_at_its_pointer():
    doc = family_interview()
    doc["members"][0]["name"] = "Bu\x00di"
    r = checked_submission(FamilyInterview.model_validate(doc), "OFC-1", collection=COLLECTION)
    assert isinstance(r, Invalid) and [p.path for p in r.problems] == ["/members/0/name"]


def test_an_actor_too_long_for_the_field_is_a_problem_not_a_truncation():
    r = checked_submission(FamilyInterview.model_validate(family_interview()), "X" * 65, collection=COLLECTION)
    assert isinstance(r, Invalid) and [p.path for p in r.problems] == ["/officer_id"]


def test_a_decision_about_a_family_outside_its_sls_is_misplaced():
    res = VerificationResolved.model_validate({
        "submission_id": str(uuid.uuid4()), "family_id": "64720100010002-0001-001", "sls_id": SLS,
        "decision": "verify", "supervisor_id": "SPV-1", "reason": "seen", "decided_at": "2022-11-01T10:00:00+08:00"})
    assert [p.path for p in placement_problems(res)] == ["/family_id"]
    assert placement_problems(FamilyInterview.model_validate(family_interview())) == []


def test_new_replay_conflict_and_erased():
    new, same, other = checked(), checked(), checked(interviewed_at="2022-10-21T10:00:00+08:00")
    assert [o.decision for o in decide_submissions([new], IntakeState())] == [Decision.NEW]
    state = IntakeState(earlier={new.submission_id: stored(new)})
    (replay,) = decide_submissions([same], state)
    assert replay.decision is Decision.REPLAY and replay.earlier == stored(new)
    assert [o.decision for o in decide_submissions([other], state)] == [Decision.CONFLICT]
    kind_changed = IntakeState(earlier={new.submission_id: stored(new, kind="roster")})
    assert [o.decision for o in decide_submissions([same], kind_changed)] == [Decision.CONFLICT]
    erased = IntakeState(earlier=state.earlier, erased_families=frozenset({FAMILY}))
    assert [o.decision for o in decide_submissions([same], erased)] == [Decision.ERASED]


def test_the_same_id_twice_in_a_batch_is_weighed_against_its_first_occurrence():
    a, a_again, a_other = checked(), checked(), checked(interviewed_at="2022-10-21T10:00:00+08:00")
    outcomes = decide_submissions([a, a_again, a_other], IntakeState())
    assert [(o.decision, o.first) for o in outcomes] == [(Decision.NEW, None), (Decision.REPLAY, 0),
                                                          (Decision.CONFLICT, 0)]


def test_erasure_redacts_only_the_bodies_that_name_the_family_and_a_repeat_changes_nothing():
    iv = checked()
    other_roster = {"sls_id": SLS, "families": [{"building_no": 2, "family_no": 1, "kk_number": "6472010101220009",
                                                 "head_name": "Ani"}]}
    bodies = [StoredBody(iv.submission_id, "interview", iv.document), StoredBody(uuid.uuid4(), "roster", other_roster)]
    d = decide_erasure(FAMILY, ErasureState(None, bodies))
    assert d.earlier is None and [b.submission_id for b in d.redacted] == [iv.submission_id]
    assert d.changed == {"interview": 1} and "nik" not in d.redacted[0].document["members"][0]
    assert bodies[0].document["members"][0]["nik"] == "6472010505800001"  # pure: the input is not changed
    first = EarlierErasure(uuid.UUID(int=7), "court_order", AT)
    repeat = decide_erasure(FAMILY, ErasureState(first, bodies))
    assert repeat.earlier == first and repeat.redacted == [] and repeat.changed == {}


def test_a_replaced_actor_is_the_only_change_and_is_held_to_its_field():
    """The caller replaces the form's actor; everything else is the validated form as it came (the same
    as validating the whole form again with the new actor), and a subject the field cannot hold is refused."""
    form = FamilyInterview.model_validate({**family_interview(), "officer_id": "SOMEONE-ELSE"})
    s = checked_submission(form, "OFC-1", collection=COLLECTION)
    assert isinstance(s, Submission)
    assert s.contract == FamilyInterview.model_validate({**family_interview(), "officer_id": "OFC-1"})
    assert s.document["officer_id"] == "OFC-1" and [w["path"] for w in s.warnings] == ["/officer_id"]
    too_long = checked_submission(form, "X" * 65, collection=COLLECTION)
    assert isinstance(too_long, Invalid) and [p.path for p in too_long.problems] == ["/officer_id"]
    empty = checked_submission(form, "", collection=COLLECTION)
    assert isinstance(empty, Invalid) and [p.path for p in empty.problems] == ["/officer_id"]
