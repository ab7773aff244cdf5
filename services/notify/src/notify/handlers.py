"""Notify's handler: each eligibility decision becomes a delivery for every
subscription whose filters match, in the same transaction as the inbox entry."""

from __future__ import annotations

from regsosek.contracts import EligibilityDecided
from regsosek.messaging import Incoming, UnitOfWork
from regsosek.telemetry import current_trace_headers
from regsosek.topics import Topic

from notify import store


async def on_eligibility(uow: UnitOfWork, msg: Incoming) -> None:
    e: EligibilityDecided = msg.data
    eligible = {d.programme for d in e.decisions if d.eligible}
    payload = {
        "event_id": msg.envelope.id,
        "event_type": msg.envelope.type,
        "subject": e.family_id,
        "time": msg.envelope.time,
        "data": e.model_dump(mode="json"),
    }
    traceparent = current_trace_headers().get("traceparent")
    rows = [
        (s["id"], msg.envelope.id, Topic.ELIGIBILITY_DECIDED.value, e.family_id, payload, traceparent)
        for s in await store.live_subscriptions(uow.conn)
        if store.filters_of(s).matches(event_type=Topic.ELIGIBILITY_DECIDED.value, sls_id=e.sls_id,
                                       welfare_group=int(e.welfare_group), eligible=eligible)
    ]
    if rows:
        await store.enqueue(uow.conn, rows)


HANDLERS = {EligibilityDecided: on_eligibility}
