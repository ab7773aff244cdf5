"""Intake follows each submission downstream to answer "where is my submission?".

Every step is kept with the producer's decision sequence it carries; the status view orders
verify's and classify's decisions by it, not by arrival (docs/ORDERING.md)."""

from __future__ import annotations

from regsosek.contracts import (
    EligibilityDecided,
    EligibilityDelivered,
    FamilyClassified,
    InterviewFlagged,
    InterviewVerified,
)
from regsosek.messaging import Incoming, UnitOfWork

from intake import store


async def on_verified(uow: UnitOfWork, msg: Incoming) -> None:
    e: InterviewVerified = msg.data
    store.record_step(uow, e.interview.submission_id, "verified",
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
    InterviewFlagged: on_flagged,
    FamilyClassified: on_classified,
    EligibilityDecided: on_eligibility,
    EligibilityDelivered: on_delivered,
}
