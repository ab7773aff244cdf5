"""Intake follows each submission downstream to answer "where is my submission?".

Every step is kept with the producer's decision sequence it carries; the status view orders
verify's and classify's decisions by it, not by arrival (docs/ORDERING.md)."""

from __future__ import annotations

from uuid import UUID

from intake import store
from regsosek.contracts import (
    EligibilityDecided,
    EligibilityDelivered,
    FamilyClassified,
    InterviewFlagged,
    InterviewVerified,
    InterviewVerifiedV1,
)
from regsosek.messaging import Incoming, UnitOfWork


async def on_verified(uow: UnitOfWork, msg: Incoming) -> None:
    """The status view takes the outcome, time, sequence and submission id, nothing of the
    family's profile (the journey step holds no personal data)."""
    e: InterviewVerified = msg.data
    _record_verified(uow, msg, e.profile.submission_id, e)


async def on_verified_v1(uow: UnitOfWork, msg: Incoming) -> None:
    """A v1 record (still on the topic after the rollout): only its submission id is read from
    the interview it carries."""
    e: InterviewVerifiedV1 = msg.data
    _record_verified(uow, msg, e.interview.submission_id, e)


def _record_verified(uow: UnitOfWork, msg: Incoming, submission_id: UUID,
                     e: InterviewVerified | InterviewVerifiedV1) -> None:
    store.record_step(uow, submission_id, "verified",
                      {"outcome": e.outcome.value, "at": e.verified_at.isoformat()}, msg.envelope.id,
                      e.decision_seq)


async def on_flagged(uow: UnitOfWork, msg: Incoming) -> None:
    e: InterviewFlagged = msg.data
    store.record_step(uow, e.submission_id, "flagged",
                      {"reason": e.reason.value, "detail": e.detail, "at": e.flagged_at.isoformat()},
                      msg.envelope.id, e.decision_seq)


async def on_classified(uow: UnitOfWork, msg: Incoming) -> None:
    e: FamilyClassified = msg.data
    store.record_step(uow, e.submission_id, "classified",
                      {"welfare_group": int(e.welfare_group), "decile": e.decile,
                       "model_version": e.model_version, "at": e.classified_at.isoformat()}, msg.envelope.id,
                      e.decision_seq)


async def on_eligibility(uow: UnitOfWork, msg: Incoming) -> None:
    e: EligibilityDecided = msg.data
    store.record_step(uow, e.submission_id, "eligibility",
                      {"eligible": [d.programme for d in e.decisions if d.eligible],
                       "rule_version": e.rule_version, "at": e.decided_at.isoformat()}, msg.envelope.id,
                      e.decision_seq)


async def on_delivered(uow: UnitOfWork, msg: Incoming) -> None:
    e: EligibilityDelivered = msg.data
    store.record_step(uow, e.submission_id, "notified",
                      {"subscriber": e.subscriber, "at": e.delivered_at.isoformat()}, msg.envelope.id)


HANDLERS = {
    InterviewVerified: on_verified,
    InterviewVerifiedV1: on_verified_v1,
    InterviewFlagged: on_flagged,
    FamilyClassified: on_classified,
    EligibilityDecided: on_eligibility,
    EligibilityDelivered: on_delivered,
}
