"""Intake's status view takes only outcome, time, sequence and submission id from
interview-verified (v2, and v1 records still on the topic): nothing of the family."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

from intake import handlers
from regsosek.contracts import FamilyInterview, InterviewVerified, InterviewVerifiedV1, household_profile
from regsosek.examples import family_interview

AT = datetime(2022, 10, 20, 2, 0, 5, tzinfo=UTC)


def _steps(monkeypatch, handler, event) -> list[tuple]:
    steps: list[tuple] = []
    monkeypatch.setattr(handlers.store, "record_step", lambda *a: steps.append(a))
    asyncio.run(handler(SimpleNamespace(), SimpleNamespace(data=event, envelope=SimpleNamespace(id="evt-1"))))
    return steps


def test_verified_step_holds_outcome_time_and_ids_only(monkeypatch):
    iv = FamilyInterview.model_validate(family_interview())
    v2 = InterviewVerified(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome="verified_added",
                           verified_at=AT, profile=household_profile(iv), decision_seq=3)
    v1 = InterviewVerifiedV1(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome="verified_added",
                             verified_at=AT, interview=iv, decision_seq=3)
    expected = (iv.submission_id, "verified", {"outcome": "verified_added", "at": AT.isoformat()}, "evt-1", 3)
    for handler, event in ((handlers.on_verified, v2), (handlers.on_verified_v1, v1)):
        (step,) = _steps(monkeypatch, handler, event)
        assert step[1:] == expected  # (uow, submission id, step, data, event id, decision sequence)
    assert handlers.HANDLERS[InterviewVerifiedV1] is handlers.on_verified_v1
