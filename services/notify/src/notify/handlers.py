"""Notify's handler: each eligibility decision becomes a delivery for every
subscription whose filters match, in the same transaction as the inbox entry."""

from __future__ import annotations

from regsosek.contracts import EligibilityDecided
from regsosek.messaging import Incoming, UnitOfWork
from regsosek.telemetry import current_trace_headers
from regsosek.topics import Topic

from notify import store
from notify.domain import Filters


class _BatchSubscriptions:
    """The live subscriptions, read once per consumed batch rather than once per event.

    The consumer applies a batch in one transaction on one pooled connection, and
    asyncpg hands out a new connection proxy on every acquire, so the proxy (with the
    batch's outbox) identifies the batch: a retried batch, or the next one, reads
    again. A subscription created while a batch is being applied starts with the next
    batch, as it would have if it had been created a moment later."""

    def __init__(self) -> None:
        self._key: tuple[object, object] | None = None
        self._subs: list[tuple[object, Filters]] = []

    async def get(self, uow: UnitOfWork) -> list[tuple[object, Filters]]:
        key = (uow.conn, uow.outbox)
        if self._key is None or self._key[0] is not key[0] or self._key[1] is not key[1]:
            self._subs = [(s["id"], store.filters_of(s)) for s in await store.live_subscriptions(uow.conn)]
            self._key = key
        return self._subs


_subscriptions = _BatchSubscriptions()


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
        (sub_id, msg.envelope.id, Topic.ELIGIBILITY_DECIDED.value, e.family_id, payload, traceparent)
        for sub_id, filters in await _subscriptions.get(uow)
        if filters.matches(event_type=Topic.ELIGIBILITY_DECIDED.value, sls_id=e.sls_id,
                           welfare_group=int(e.welfare_group), eligible=eligible)
    ]
    if rows:  # the batch's deliveries are written together, in order, at commit
        pending = uow.cache.setdefault("deliveries", [])
        pending.extend(rows)
        uow.defer("deliveries", lambda: store.enqueue(uow.conn, pending))


HANDLERS = {EligibilityDecided: on_eligibility}
