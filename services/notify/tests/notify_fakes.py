"""An in-memory notify store for fast tests of handler logic: the same public methods, with the same
signatures, as notify.store.NotifyStore (test_notify_handlers checks they cannot drift), holding its
rows in dicts and lists. It keeps the store's rules that handlers rely on (a family's decision never
goes backwards; one delivery per subscription and event; erased payloads emptied), not its SQL."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

from notify.dci_domain import holds
from notify.domain import (
    Attempt,
    AttemptRecord,
    AttemptState,
    DeliveryPlan,
    FamilyState,
    Filters,
    LiveSubscription,
    SealedIdentities,
)
from regsosek import audit
from regsosek.contracts.identities import identity_aad
from regsosek.crypto import Keyring


def _now() -> datetime:
    return datetime.now(UTC)


class InMemoryNotifyStore:
    def __init__(self) -> None:
        self.subscriptions: dict[object, dict] = {}
        self.deliveries: list[dict] = []
        self.family_decisions: dict[str, tuple[int, str]] = {}
        self.informed: set[tuple[object, str]] = set()
        self.erased: dict[str, dict] = {}
        self.registry: dict[str, tuple[int, str, dict]] = {}
        self.attempts: list[dict] = []
        self.audit: list[audit.Entry] = []
        self.dci_transactions: dict[str, dict] = {}
        self.dci_callbacks: list[dict] = []
        self.dci_messages: dict[tuple[str, str], datetime] = {}
        self.identities: dict[tuple[str, UUID], SealedIdentities] = {}
        self.calls: list[str] = []  # the methods called, in order (a test counts reads per batch)
        self._ids = itertools.count(1)

    # ---------------------------------------------------------------- subscriptions

    def _add(self, sub_id: object, *, scope: tuple[str, ...], filters: Filters, owner: str) -> dict:
        row = {"id": sub_id, "owner": owner, "callback_url": "http://receiver/hook", "secret": None,
               "scope_programmes": list(scope), "programmes": list(filters.programmes),
               "area_prefixes": list(filters.area_prefixes), "welfare_groups": list(filters.welfare_groups),
               "event_types": list(filters.event_types), "status": "active", "consecutive_failures": 0,
               "created_at": _now(), "updated_at": _now(), "next_attempt_at": _now(), "delivered_total": 0,
               "attempts_total": 0, "failed_attempts_total": 0, "last_attempt_at": None, "signature": "ed25519",
               "format": "webhook", "dci_sender": None, "lease_owner": None}
        self.subscriptions[sub_id] = row
        return row

    async def live_subscriptions(self) -> list[LiveSubscription]:
        self.calls.append("live_subscriptions")
        return [LiveSubscription(s["id"], Filters(tuple(s["programmes"]), tuple(s["area_prefixes"]),
                                                  tuple(s["welfare_groups"]), tuple(s["event_types"])),
                                 tuple(s["scope_programmes"]))
                for s in self.subscriptions.values() if s["status"] != "deleted"]

    async def create_subscription(self, *, sub_id: UUID, owner: str, callback_url: str, secret: str | None,
                                  signature: str, scope: tuple[str, ...], filters: Filters,
                                  limit_problem: Callable[[dict[str, int]], str | None], fmt: str = "webhook",
                                  dci_sender: str | None = None) -> tuple[dict | None, str | None]:
        counts: dict[str, int] = {}
        for s in self.subscriptions.values():
            for p in s["scope_programmes"]:
                if s["status"] != "deleted" and p in scope:
                    counts[p] = counts.get(p, 0) + 1
        if problem := limit_problem(counts):
            return None, problem
        row = self._add(sub_id, scope=scope, filters=filters, owner=owner)
        row.update(callback_url=callback_url, secret=secret, signature=signature, format=fmt, dci_sender=dci_sender)
        return dict(row), None

    async def subscription(self, sub_id: UUID) -> dict | None:
        s = self.subscriptions.get(sub_id)
        return dict(s) if s is not None and s["status"] != "deleted" else None

    async def subscriptions_of(self, owner: str, *, every_owner: bool) -> list[dict]:
        return [dict(s) for s in self.subscriptions.values()
                if s["status"] != "deleted" and (every_owner or s["owner"] == owner)]

    async def set_status(self, sub_id: UUID, status: str) -> dict | None:
        s = self.subscriptions.get(sub_id)
        if s is None:
            return None
        s.update(status=status, consecutive_failures=0, updated_at=_now())
        if status == "active":
            s["next_attempt_at"] = _now()
        return dict(s)

    async def record_audit(self, entry: audit.Entry) -> None:
        self.audit.append(entry)

    # ---------------------------------------------------------------- queue and figures

    def _of(self, sub_id: object, status: str | None = None) -> list[dict]:
        return [d for d in self.deliveries if d["subscription_id"] == sub_id and status in (None, d["status"])]

    async def lag(self, sub_id: UUID | None = None) -> list[dict]:
        out = []
        for s in self.subscriptions.values():
            if s["status"] == "deleted" or sub_id not in (None, s["id"]):
                continue
            pending = self._of(s["id"], "pending")
            out.append({"id": s["id"], "status": s["status"], "pending": len(pending),
                        "oldest_pending_at": min((d["created_at"] for d in pending), default=None),
                        "dead": len(self._of(s["id"], "dead")), "now_s": _now().timestamp()})
        return out

    async def last_attempt(self, sub_id: UUID) -> dict | None:
        mine = [a for a in self.attempts if a["subscription_id"] == sub_id]
        return {k: mine[-1][k] for k in ("status_code", "latency_ms", "error", "outcome", "at")} if mine else None

    async def recent_latency(self, sub_id: UUID) -> dict:
        latencies = sorted(a["latency_ms"] for a in self.attempts if a["subscription_id"] == sub_id)[-100:]
        mid = latencies[len(latencies) // 2] if latencies else None
        return {"n": len(latencies), "p50": mid, "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None}

    async def deliveries_of(self, sub_id: UUID, status: str, limit: int) -> list[dict]:
        return [dict(d) for d in self._of(sub_id, status)][:limit]

    async def attempts_of(self, sub_id: UUID, limit: int) -> list[dict]:
        return list(reversed([a for a in self.attempts if a["subscription_id"] == sub_id]))[:limit]

    async def pending_count(self, sub_id: UUID) -> int:
        return len(self._of(sub_id, "pending"))

    async def requeue(self, sub_id: UUID, *, dead_letters: bool, since: datetime | None) -> int:
        n = 0
        for d in self._of(sub_id):
            replay = since is not None and d["status"] != "pending" and (
                d["created_at"] >= since or (d["delivered_at"] is not None and d["delivered_at"] >= since))
            if ((d["status"] == "dead" and dead_letters) or replay) and d["payload"] is not None:
                d.update(status="pending", attempts=0)
                n += 1
        if n:
            self.subscriptions[sub_id]["next_attempt_at"] = _now()
        return n

    async def queue_test_event(self, sub_id: UUID, event_id: str, event_type: str, payload: dict) -> bool:
        s = self.subscriptions.get(sub_id)
        if s is None or s["status"] == "deleted" or s["format"] != "webhook":
            return False
        self.deliveries.append({
            "id": next(self._ids), "subscription_id": sub_id, "event_id": event_id, "event_type": event_type,
            "family_id": "", "payload": payload, "traceparent": None, "status": "pending", "attempts": 0,
            "last_status": None, "last_error": None, "created_at": _now(), "delivered_at": None})
        s["next_attempt_at"] = min(s["next_attempt_at"], _now())
        return True

    # ---------------------------------------------------------------- decisions in

    async def family_state(self, family_ids: Sequence[str]) -> FamilyState:
        self.calls.append("family_state")
        ids = set(family_ids)
        erased = ids & set(self.erased)
        seen = {f: seq for f, (seq, _) in self.family_decisions.items() if f in ids - erased}
        informed: dict[str, set] = {}
        for sub_id, f in self.informed:
            if f in ids - erased:
                informed.setdefault(f, set()).add(sub_id)
        return FamilyState(erased, seen, informed)

    async def save_plan(self, plan: DeliveryPlan) -> None:
        self.calls.append("save_plan")
        for f, (seq, event_id) in plan.newest.items():
            if f not in self.family_decisions or self.family_decisions[f][0] <= seq:  # never backwards
                self.family_decisions[f] = (seq, event_id)
        self.registry.update(plan.registry)
        self.informed.update(plan.newly_informed)
        queued = {(d["subscription_id"], d["event_id"]) for d in self.deliveries}
        for d in plan.deliveries:
            if (d.subscription_id, d.event_id) not in queued:
                queued.add((d.subscription_id, d.event_id))
                self.deliveries.append({
                    "id": next(self._ids), "subscription_id": d.subscription_id, "event_id": d.event_id,
                    "event_type": d.event_type, "family_id": d.family_id, "payload": d.payload,
                    "traceparent": d.traceparent, "status": "pending", "attempts": 0, "last_status": None,
                    "last_error": None, "created_at": _now(), "delivered_at": None})

    async def erase_family(self, e) -> dict[str, int]:
        pending = emptied = 0
        for d in self.deliveries:
            if d["family_id"] != e.family_id or d["event_type"] == "family-erased":
                continue
            if d["status"] == "pending":
                d["status"] = "erased"
                pending += 1
            if d["payload"] is not None:
                d["payload"] = None
                emptied += 1
        self.erased.setdefault(e.family_id, {"sls_id": e.sls_id, "erasure_id": e.erasure_id,
                                             "reason": e.reason.value, "erased_at": e.erased_at})
        self.registry.pop(e.family_id, None)
        gone = [k for k in self.identities if k[0] == e.family_id]
        for k in gone:
            del self.identities[k]
        return {"pending_deliveries": pending, "payloads": emptied, "identity_lists": len(gone)}

    # ---------------------------------------------------------------- the identity feed

    async def save_member_identities(self, lists: Sequence[SealedIdentities]) -> None:
        for x in lists:
            if x.family_id not in self.erased:
                self.identities.setdefault((x.family_id, x.submission_id), x)

    async def member_identities(self, keys: Sequence[tuple[str, UUID]]) -> dict[tuple[str, UUID], bytes]:
        return {k: self.identities[k].sealed for k in keys if k in self.identities}

    async def reseal_identity_batch(self, ring: Keyring, limit: int) -> int:
        stale = [x for x in self.identities.values() if x.kid != ring.current_kid][:limit]
        for x in stale:
            sealed = ring.reseal(x.sealed, identity_aad(x.family_id, x.submission_id))
            self.identities[(x.family_id, x.submission_id)] = dataclasses.replace(x, sealed=sealed, kid=ring.current_kid)
        return len(stale)

    async def count_identities_not_under(self, kid: str) -> int:
        return sum(1 for x in self.identities.values() if x.kid != kid)

    async def expire_superseded_identities(self, before: datetime, limit: int) -> int:
        return 0  # no receipt times kept in memory: the rule is proven on the real store

    async def queue_erasure_notices(self, family_id: str, event_id: str, event_type: str, payload: dict) -> int:
        n = 0
        for sub_id, fid in sorted(self.informed, key=lambda p: (str(p[0]), p[1])):
            s = self.subscriptions.get(sub_id)
            if fid != family_id or s is None or s["status"] == "deleted" or s.get("format", "webhook") != "webhook":
                continue
            if any(d["subscription_id"] == sub_id and d["event_id"] == event_id for d in self.deliveries):
                continue
            self.deliveries.append({"id": next(self._ids), "subscription_id": sub_id, "event_id": event_id,
                                    "event_type": event_type, "family_id": family_id, "payload": payload,
                                    "traceparent": None, "status": "pending", "attempts": 0,
                                    "created_at": _now(), "delivered_at": None, "last_status": None,
                                    "last_error": None})
            n += 1
        return n

    # ---------------------------------------------------------------- the delivery worker

    async def due_subscriptions(self, limit: int) -> list[UUID]:
        due = [s for s in self.subscriptions.values() if s["status"] == "active" and s["lease_owner"] is None
               and s["next_attempt_at"] <= _now() and self._of(s["id"], "pending")]
        return [s["id"] for s in sorted(due, key=lambda s: s["next_attempt_at"])][:limit]

    async def claim(self, sub_id: UUID, worker: UUID, lease: timedelta) -> dict | None:
        s = self.subscriptions.get(sub_id)
        if s is None or s["status"] != "active" or s["next_attempt_at"] > _now() or s["lease_owner"] not in (None, worker):
            return None
        s["lease_owner"] = worker
        return dict(s)

    async def release(self, sub_id: UUID, worker: UUID) -> None:
        s = self.subscriptions.get(sub_id)
        if s is not None and s["lease_owner"] == worker:
            s["lease_owner"] = None

    async def pending_batch(self, sub_id: UUID, limit: int) -> list[dict]:
        return [{k: d[k] for k in ("id", "event_id", "event_type", "payload", "traceparent", "attempts", "created_at")}
                for d in self._of(sub_id, "pending")][:limit]

    async def attempt_state(self, sub_id: UUID, ids: list[int]) -> AttemptState:
        s = self.subscriptions[sub_id]
        pending = frozenset(d["id"] for d in self.deliveries if d["id"] in ids and d["status"] == "pending")
        return AttemptState(s["status"], s["owner"], s["consecutive_failures"], pending)

    async def save_attempt(self, sub_id: UUID, worker: UUID, message_id: str, events: int, latency_ms: float,
                           attempt: Attempt, record: AttemptRecord) -> None:
        self.attempts.append({"subscription_id": sub_id, "message_id": message_id, "events": events,
                              "status_code": attempt.status, "latency_ms": latency_ms,
                              "error": attempt.error[:1000] if attempt.error else None,
                              "outcome": attempt.outcome.value, "at": _now()})
        delivered = record.deliveries == "delivered"
        n = 0
        for d in self.deliveries:
            if d["id"] in record.ids and d["status"] == "pending":
                d.update(status=record.deliveries, attempts=d["attempts"] + 1, last_status=attempt.status,
                         last_error=None if delivered else attempt.error)
                if delivered:
                    d["delivered_at"] = _now()
                n += 1
        s = self.subscriptions[sub_id]
        s.update(consecutive_failures=record.failures, delivered_total=s["delivered_total"] + (n if delivered else 0),
                 attempts_total=s["attempts_total"] + 1,
                 failed_attempts_total=s["failed_attempts_total"] + int(record.failed), last_attempt_at=_now())
        if record.retry_in is not None:
            s["next_attempt_at"] = _now() + record.retry_in
        if record.suspend and s["status"] == "active":
            s.update(status="suspended", updated_at=_now())
        if s["lease_owner"] == worker:
            s["lease_owner"] = None

    async def retry_after(self, sub_id: UUID, wait: timedelta) -> None:
        self.subscriptions[sub_id]["next_attempt_at"] = _now() + wait

    async def hold_off(self, sub_id: UUID, worker: UUID, wait: timedelta) -> None:
        s = self.subscriptions.get(sub_id)
        if s is not None and s["lease_owner"] in (None, worker):
            s.update(next_attempt_at=max(s["next_attempt_at"], _now() + wait), lease_owner=None)

    async def expire_delivered_payloads(self, before: datetime, limit: int) -> int:
        old = sorted((d for d in self.deliveries if d["status"] == "delivered" and d["payload"] is not None
                      and d["delivered_at"] < before), key=lambda d: d["delivered_at"])[:limit]
        for d in old:
            d["payload"] = None
        return len(old)

    # ---------------------------------------------------------------- DCI

    async def search_registry(self, conditions, areas: tuple[str, ...], sort, limit: int,
                              offset: int) -> tuple[list[dict], int]:
        rows = [d for _, _, d in self.registry.values() if any(d["sls_id"].startswith(a) for a in areas)]
        for t in conditions:
            rows = [d for d in rows if holds(t, lambda c, d=d: _meets(
                d, c.attribute, c.op, list(c.value) if isinstance(c.value, tuple) else [c.value]))]
        for attribute, order in reversed(sort):
            rows.sort(key=lambda d, a=attribute: d[a], reverse=order == "desc")
        return rows[offset:offset + limit], len(rows)

    async def save_dci_transaction(self, *, correlation_id: str, requester: str, kind: str, transaction_id: str,
                                   reference_ids: list[str], status: str, detail: dict) -> None:
        earlier = self.dci_transactions.get(correlation_id)
        self.dci_transactions[correlation_id] = {
            "correlation_id": correlation_id, "requester": requester, "kind": kind, "transaction_id": transaction_id,
            "reference_ids": list(reference_ids), "status": status, "detail": detail,
            "created_at": earlier["created_at"] if earlier else _now(), "updated_at": _now(),
            **({k: earlier[k] for k in ("requester", "kind", "transaction_id", "reference_ids")} if earlier else {})}

    async def find_dci_transactions(self, requester: str, kind: str, attribute: str, value) -> list[dict]:
        def found(t: dict) -> bool:
            if attribute == "reference_id_list":
                return bool(set(t["reference_ids"]) & set(value))
            return t[attribute] == value

        rows = [t for t in self.dci_transactions.values() if t["requester"] == requester and t["kind"] == kind
                and found(t)]
        return sorted(rows, key=lambda t: t["created_at"], reverse=True)[:20]

    async def delete_dci_subscriptions(self, owner: str, codes: list[str]) -> dict[str, str]:
        out = {}
        for code in codes:
            try:
                s = self.subscriptions.get(UUID(code))
            except ValueError:
                s = None
            if s is None or s["owner"] != owner or s["format"] != "dci":
                out[code] = "unknown"
            elif s["status"] == "deleted":
                out[code] = "already"
            else:
                s.update(status="deleted", updated_at=_now())
                out[code] = "unsubscribe"
        return out

    async def enqueue_dci_callback(self, *, correlation_id: str, requester: str, url: str, action: str, header: dict,
                                   message: dict) -> int:
        cb_id = next(self._ids)
        self.dci_callbacks.append({
            "id": cb_id, "correlation_id": correlation_id, "requester": requester, "url": url, "action": action,
            "header": header, "message": message, "status": "pending", "attempts": 0, "next_attempt_at": _now(),
            "lease_until": None, "last_status": None, "last_error": None, "created_at": _now(), "finished_at": None})
        return cb_id

    async def claim_dci_callbacks(self, limit: int, lease: timedelta) -> list[dict]:
        now = _now()
        due = [c for c in self.dci_callbacks if c["status"] == "pending" and c["next_attempt_at"] <= now
               and (c["lease_until"] is None or c["lease_until"] < now)][:limit]
        for c in due:
            c["lease_until"] = now + lease
        return [{k: c[k] for k in ("id", "correlation_id", "requester", "url", "action", "header", "message",
                                   "attempts")} for c in due]

    async def finish_dci_callback(self, cb_id: int, *, outcome: str, status: int | None, error: str | None,
                                  wait: timedelta | None = None) -> None:
        (c,) = [c for c in self.dci_callbacks if c["id"] == cb_id]
        c.update(attempts=c["attempts"] + 1, last_status=status, last_error=error[:1000] if error else None,
                 lease_until=None)
        if outcome == "retry":
            c["next_attempt_at"] = _now() + (wait or timedelta(0))
        else:
            c.update(status=outcome, message=None, finished_at=_now())

    async def dci_callbacks_of(self, requester: str, correlation_id: str) -> list[dict]:
        return [{k: c[k] for k in ("id", "action", "status", "attempts", "last_status", "last_error", "created_at",
                                   "finished_at")}
                for c in self.dci_callbacks if c["requester"] == requester and c["correlation_id"] == correlation_id]

    async def settle_dci_transaction(self, correlation_id: str, *, error: str | None) -> None:
        t = self.dci_transactions.get(correlation_id)
        if t is None:
            return
        if t["status"] == "pdng":
            t["status"] = "succ" if error is None else "rjct"
        if error is not None:
            t["detail"] = {**t["detail"], "callback_error": error}
        t["updated_at"] = _now()

    async def erased_among(self, family_ids: list[str]) -> set[str]:
        return {f for f in family_ids if f in self.erased}

    async def expire_dci_bookkeeping(self, before: datetime, limit: int) -> int:
        old_cbs = sorted((c for c in self.dci_callbacks if c["status"] != "pending" and c["finished_at"] < before),
                         key=lambda c: c["finished_at"])[:limit]
        old_txns = sorted((t for t in self.dci_transactions.values() if t["status"] != "pdng"
                           and t["updated_at"] < before), key=lambda t: t["updated_at"])[:limit]
        self.dci_callbacks = [c for c in self.dci_callbacks if c not in old_cbs]
        for t in old_txns:
            del self.dci_transactions[t["correlation_id"]]
        return len(old_cbs) + len(old_txns)

    async def remember_dci_message(self, sender_id: str, message_id: str, window: timedelta) -> bool:
        now = _now()
        self.dci_messages = {k: t for k, t in self.dci_messages.items() if t >= now - window}
        if (sender_id, message_id) in self.dci_messages:
            return False
        self.dci_messages[(sender_id, message_id)] = now
        return True


def _meets(d: dict, attribute: str, op: str, values: list) -> bool:
    if attribute == "area_code":
        return any(d["sls_id"].startswith(v) for v in values)
    if attribute == "eligible_programme":
        return any(x.get("eligible") and x["programme"] in values for x in d.get("decisions", []))
    v, first = d[attribute], values[0]
    if op == "in":
        return v in values
    return {"eq": lambda: v == first, "lt": lambda: v < first, "le": lambda: v <= first,
            "gt": lambda: v > first, "ge": lambda: v >= first}[op]()
