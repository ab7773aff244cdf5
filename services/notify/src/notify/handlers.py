"""Notify's handler: each eligibility decision becomes a delivery for every
subscription whose filters match, in the same transaction as the inbox entry."""

from __future__ import annotations

from dataclasses import dataclass

from regsosek.contracts import EligibilityDecided
from regsosek.messaging import Incoming, UnitOfWork
from regsosek.telemetry import current_trace_headers
from regsosek.topics import Topic

from notify import store
from notify.domain import Filters, newer_decision, recipients


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
    subscriptions = await _subscriptions.get(uow)
    matching = {sub_id for sub_id, filters in subscriptions
                if filters.matches(event_type=Topic.ELIGIBILITY_DECIDED.value, sls_id=e.sls_id,
                                   welfare_group=int(e.welfare_group), eligible=eligible)}
    # The batch's decisions are weighed and its deliveries written together, in order, at commit.
    pending = uow.cache.setdefault("decisions", [])
    pending.append(_Decision(e.family_id, e.decision_seq, msg.envelope.id, payload,
                             current_trace_headers().get("traceparent"), matching,
                             frozenset(sub_id for sub_id, _ in subscriptions)))
    uow.defer("deliveries", lambda: _enqueue_newer(uow, pending))


@dataclass(frozen=True)
class _Decision:
    family_id: str
    decision_seq: int
    event_id: str
    payload: dict
    traceparent: str | None
    matching: set  # subscriptions whose filters match this decision
    live: frozenset  # every live subscription when it was read


async def _enqueue_newer(uow: UnitOfWork, decisions: list[_Decision]) -> None:
    """Queues each decision newer than the newest already queued for its family (classify's
    decision sequence, see domain.newer_decision) for its recipients (domain.recipients), and
    remembers the newest and which subscriptions were told about which family."""
    family_ids = sorted({d.family_id for d in decisions})
    seen = await store.family_decisions(uow.conn, family_ids)
    informed = await store.informed_subscriptions(uow.conn, family_ids)
    newest: dict[str, tuple[int, str]] = {}
    deliveries: list[tuple] = []
    newly_informed: set[tuple] = set()
    for d in decisions:
        if not newer_decision(seen.get(d.family_id), d.decision_seq):
            continue  # older than a decision already queued for the family: never sent after it
        seen[d.family_id] = d.decision_seq
        newest[d.family_id] = (d.decision_seq, d.event_id)
        told = informed.setdefault(d.family_id, set())
        for sub_id in sorted(recipients(d.matching, told, d.live), key=str):
            deliveries.append((sub_id, d.event_id, Topic.ELIGIBILITY_DECIDED.value, d.family_id, d.payload,
                               d.traceparent))
            if sub_id not in told:
                told.add(sub_id)
                newly_informed.add((sub_id, d.family_id))
    decisions.clear()
    await store.save_family_decisions(uow.conn, newest)
    await store.remember_informed(uow.conn, sorted(newly_informed, key=lambda p: (str(p[0]), p[1])))
    if deliveries:
        await store.enqueue(uow.conn, deliveries)


HANDLERS = {EligibilityDecided: on_eligibility}
