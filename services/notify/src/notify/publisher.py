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

# A subscriber's test delivery (POST /v1/subscriptions/{id}/test-event): no family, no decision, nothing
# to confirm on the topics.
TEST_EVENT_TYPE = "regsosek.test"


def test_event(event_id: str, sub_id: UUID, requested_by: str, now: datetime) -> dict:
    """The payload of a test delivery: clearly marked, with no personal data (ids of the subscription only)."""
    return {"event_id": event_id, "event_type": TEST_EVENT_TYPE, "subject": f"test-{sub_id}", "time": now.isoformat(),
            "data": {"test": True, "subscription_id": str(sub_id), "requested_by": requested_by,
                     "note": "A test delivery from Regsosek notify: no family, no eligibility decision."}}


class Publisher:
    def delivered(self, uow: UnitOfWork, subscription_id: UUID, subscriber: str, deliveries: Iterable[dict],
                  now: datetime) -> None:
        """eligibility-delivered for each newly acknowledged delivery (its queued payload, event id and
        traceparent), keyed by SLS, in the trace of the submission."""
        for d in deliveries:
            if d["payload"].get("event_type") == TEST_EVENT_TYPE:
                continue  # a test delivery concerns no family
            data = d["payload"]["data"]
            with in_trace_of(d["traceparent"], "notify confirm"):
                uow.outbox.publish(Topic.ELIGIBILITY_DELIVERED, data["sls_id"], EligibilityDelivered(
                    family_id=data["family_id"], sls_id=data["sls_id"], submission_id=data["submission_id"],
                    version=data["version"], eligibility_event_id=d["event_id"], subscription_id=subscription_id,
                    subscriber=subscriber, delivered_at=now), subject=data["family_id"])
