"""Notify's handler: each eligibility decision becomes a delivery for every
subscription whose filters match, in the same transaction as the inbox entry. Each
delivery carries that subscription's payload only (domain.payload_for): the decisions
and reasons of its own programmes, and the fields they may receive."""

from __future__ import annotations

from dataclasses import dataclass

from notify import store
from notify.domain import AccessRules, Filters, newer_decision, payload_for, recipients
from regsosek import audit
from regsosek.contracts import EligibilityDecided, FamilyErased
from regsosek.messaging import Incoming, UnitOfWork
from regsosek.telemetry import current_trace_headers
from regsosek.topics import Topic

# What each programme may receive (data/programme-access-*.yaml); set once by app.definition.
access: AccessRules | None = None


class _BatchSubscriptions:
    """The live subscriptions, read once per consumed batch rather than once per event.

    The consumer applies a batch in one transaction on one pooled connection, and
    asyncpg hands out a new connection proxy on every acquire, so the proxy (with the
    batch's outbox) identifies the batch: a retried batch, or the next one, reads
    again. A subscription created while a batch is being applied starts with the next
    batch, as it would have if it had been created a moment later."""

    def __init__(self) -> None:
        self._key: tuple[object, object] | None = None
        self._subs: list[tuple[object, Filters, tuple[str, ...]]] = []
        self.scopes: dict[object, tuple[str, ...]] = {}

    async def get(self, uow: UnitOfWork) -> list[tuple[object, Filters, tuple[str, ...]]]:
        """(id, filters, programmes whose decisions it receives) of each live subscription."""
        key = (uow.conn, uow.outbox)
        if self._key is None or self._key[0] is not key[0] or self._key[1] is not key[1]:
            self._subs = [(s["id"], store.filters_of(s), tuple(s["scope_programmes"]))
                          for s in await store.live_subscriptions(uow.conn)]
            self.scopes = {sub_id: scope for sub_id, _, scope in self._subs}  # shared by the batch's events
            self._key = key
        return self._subs


_subscriptions = _BatchSubscriptions()


async def on_eligibility(uow: UnitOfWork, msg: Incoming) -> None:
    e: EligibilityDecided = msg.data
    eligible = {d.programme for d in e.decisions if d.eligible}
    envelope = {
        "event_id": msg.envelope.id,
        "event_type": msg.envelope.type,
        "subject": e.family_id,
        "time": msg.envelope.time,
    }
    subscriptions = await _subscriptions.get(uow)
    matching = {sub_id for sub_id, filters, _ in subscriptions
                if filters.matches(event_type=Topic.ELIGIBILITY_DECIDED.value, sls_id=e.sls_id,
                                   welfare_group=int(e.welfare_group), eligible=eligible)}
    # The batch's decisions are weighed and its deliveries written together, in order, at commit.
    pending = uow.cache.setdefault("decisions", [])
    pending.append(_Decision(e.family_id, e.decision_seq, msg.envelope.id, envelope, e.model_dump(mode="json"),
                             current_trace_headers().get("traceparent"), matching,
                             _subscriptions.scopes))
    uow.defer("deliveries", lambda: _enqueue_newer(uow, pending))


@dataclass(frozen=True)
class _Decision:
    family_id: str
    decision_seq: int
    event_id: str
    envelope: dict  # event_id, event_type, subject, time
    data: dict  # the whole decision (JSON form); never queued as such, see payload
    traceparent: str | None
    matching: set  # subscriptions whose filters match this decision
    live: dict  # every live subscription when it was read -> programmes whose decisions it receives

    def payload(self, scope: tuple[str, ...], cache: dict) -> dict:
        """The delivery of this decision to a subscription receiving `scope`'s decisions."""
        if scope not in cache:
            assert access is not None, "notify.handlers.access is set by app.definition"
            cache[scope] = {**self.envelope, "data": payload_for(self.data, scope, access)}
        return cache[scope]


async def _enqueue_newer(uow: UnitOfWork, decisions: list[_Decision]) -> None:
    """Queues each decision newer than the newest already queued for its family (classify's
    decision sequence, see domain.newer_decision) for its recipients (domain.recipients), and
    remembers the newest and which subscriptions were told about which family."""
    family_ids = sorted({d.family_id for d in decisions})
    erased = await store.erased_among(uow.conn, family_ids)
    if erased:  # erased families: none of their decisions is queued any more
        decisions[:] = [d for d in decisions if d.family_id not in erased]
        family_ids = [f for f in family_ids if f not in erased]
    seen = await store.family_decisions(uow.conn, family_ids)
    informed = await store.informed_subscriptions(uow.conn, family_ids)
    newest: dict[str, tuple[int, str]] = {}
    registry: dict[str, tuple[int, str, dict]] = {}
    deliveries: list[tuple] = []
    newly_informed: set[tuple] = set()
    for d in decisions:
        if not newer_decision(seen.get(d.family_id), d.decision_seq):
            continue  # older than a decision already queued for the family: never sent after it
        seen[d.family_id] = d.decision_seq
        newest[d.family_id] = (d.decision_seq, d.event_id)
        registry[d.family_id] = (d.decision_seq, d.event_id, d.data)  # the DCI read model (notify.dci)
        told = informed.setdefault(d.family_id, set())
        payloads: dict[tuple[str, ...], dict] = {}  # one per programme scope among the recipients
        for sub_id in sorted(recipients(d.matching, told, set(d.live)), key=str):
            deliveries.append((sub_id, d.event_id, Topic.ELIGIBILITY_DECIDED.value, d.family_id,
                               d.payload(d.live[sub_id], payloads), d.traceparent))
            if sub_id not in told:
                told.add(sub_id)
                newly_informed.add((sub_id, d.family_id))
    decisions.clear()
    await store.save_family_decisions(uow.conn, newest)
    await store.save_registry(uow.conn, registry)
    await store.remember_informed(uow.conn, sorted(newly_informed, key=lambda p: (str(p[0]), p[1])))
    if deliveries:
        await store.enqueue(uow.conn, deliveries)


async def on_erased(uow: UnitOfWork, msg: Incoming) -> None:
    """Erasure: the family's delivery payloads are emptied (not-yet-sent ones are not sent), the
    delivery figures stay; later decisions about it are not queued; audited (ids and counts)."""
    e: FamilyErased = msg.data
    await store.family_decisions(uow.conn, [e.family_id])  # the family's ordering row, locked if any
    counts = await store.erase_family(uow.conn, e)
    await store.forget_registry_family(uow.conn, e.family_id)  # and leaves the DCI read model
    await audit.record(uow.conn, audit.entry(
        "intake", "service", "family.erase", "family", e.family_id, request_id=msg.envelope.id,
        detail={"erasure_id": str(e.erasure_id), "reason": e.reason.value, **counts}))


HANDLERS = {EligibilityDecided: on_eligibility, FamilyErased: on_erased}
