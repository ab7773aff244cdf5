"""Notify's one publisher: every event notify emits is built here and put in the unit of work's outbox
(committed with the transaction that records what caused it)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from regsosek.contracts import EligibilityDelivered
from regsosek.messaging import UnitOfWork
from regsosek.telemetry import in_trace_of
from regsosek.topics import Topic


class Publisher:
    def delivered(self, uow: UnitOfWork, subscription_id: UUID, subscriber: str, deliveries: Iterable[dict],
                  now: datetime) -> None:
        """eligibility-delivered for each newly acknowledged delivery (its queued payload, event id and
        traceparent), keyed by SLS, in the trace of the submission."""
        for d in deliveries:
            data = d["payload"]["data"]
            with in_trace_of(d["traceparent"], "notify confirm"):
                uow.outbox.publish(Topic.ELIGIBILITY_DELIVERED, data["sls_id"], EligibilityDelivered(
                    family_id=data["family_id"], sls_id=data["sls_id"], submission_id=data["submission_id"],
                    version=data["version"], eligibility_event_id=d["event_id"], subscription_id=subscription_id,
                    subscriber=subscriber, delivered_at=now), subject=data["family_id"])
