"""Intake's status view takes only outcome, time, sequence and submission id from
interview-verified (v2, and v1 records still on the topic): nothing of the family."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from intake.handlers import IntakeHandlers
from intake.publisher import IntakePublisher
from intake.settings import IntakeSettings
from regsosek.contracts import FamilyInterview, InterviewVerified, InterviewVerifiedV1, household_profile
from regsosek.examples import family_interview
from regsosek.testing import FakeUnitOfWork

from intake_fakes import InMemoryIntakeStore

AT = datetime(2022, 10, 20, 2, 0, 5, tzinfo=UTC)


def publisher() -> IntakePublisher:
    return IntakePublisher("k" * 32, IntakeSettings(env="local").identity_keyring())


async def _steps(handler_of, event) -> list[tuple]:
    store = InMemoryIntakeStore()
    h = IntakeHandlers(IntakeSettings(env="local"), lambda uow: store, publisher())
    uow = FakeUnitOfWork("intake")
    await handler_of(h)(uow, SimpleNamespace(data=event, envelope=SimpleNamespace(id="evt-1")))
    await uow.commit()
    return [(e.submission_id, e.step, e.detail, e.event_id, e.decision_seq) for e in store.steps]


async def test_verified_step_holds_outcome_time_and_ids_only():
    iv = FamilyInterview.model_validate(family_interview())
    v2 = InterviewVerified(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome="verified_added",
                           verified_at=AT, profile=household_profile(iv), decision_seq=3)
    v1 = InterviewVerifiedV1(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome="verified_added",
                             verified_at=AT, interview=iv, decision_seq=3)
    expected = (iv.submission_id, "verified", {"outcome": "verified_added", "at": AT.isoformat()}, "evt-1", 3)
    for handler_of, event in ((lambda h: h.on_verified, v2), (lambda h: h.on_verified_v1, v1)):
        (step,) = await _steps(handler_of, event)
        assert step == expected  # (submission id, step, data, event id, decision sequence)
    h = IntakeHandlers(IntakeSettings(env="local"), lambda uow: InMemoryIntakeStore(), publisher())
    assert h.consumers()[InterviewVerifiedV1] == h.on_verified_v1
