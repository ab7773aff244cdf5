"""Notify's database, all of its SQL: subscriptions, the delivery queue and its log, the order of each
family's decisions, erasure, and the DCI read model and transactions (notify.dci).

`NotifyStore` works on one connection (the caller's transaction when there is one) and returns
domain values or plain dicts, never asyncpg records; `open_store` gives one over a pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from notify.dci_domain import MEMBER_NIK, AnyOf, Condition, Negation, Term
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
from regsosek.messaging import UnitOfWork
from regsosek.service import runtime_of
from regsosek.topics import Topic

SUB_COLUMNS = ("id, owner, callback_url, secret, scope_programmes, programmes, area_prefixes, welfare_groups, "
               "event_types, status, "
               "consecutive_failures, created_at, updated_at, next_attempt_at, delivered_total, attempts_total, "
               "failed_attempts_total, last_attempt_at, signature")

_LAG_SQL = """
select s.id, s.status,
       (select count(*) from deliveries d where d.subscription_id = s.id and d.status = 'pending') as pending,
       (select min(d.created_at) from deliveries d where d.subscription_id = s.id and d.status = 'pending')
           as oldest_pending_at,
       (select count(*) from deliveries d where d.subscription_id = s.id and d.status = 'dead') as dead,
       extract(epoch from now())::float8 as now_s
from subscriptions s where s.status <> 'deleted' {where}
"""

# attribute -> SQL column of registry_families (notify.dci_domain.ATTRIBUTES / SORTABLE name them)
_DCI_COLUMNS = {"family_id": "family_id", "sls_id": "sls_id", "welfare_group": "welfare_group", "decile": "decile",
                "decided_at": "decided_at"}
_DCI_OPS = {"eq": "=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _dci_term(term: Term, args: list) -> str:
    """The SQL of one search term over registry_families, its values appended to `args` as parameters
    (attributes and operators come from notify.dci_domain's fixed lists, never from the request)."""
    if isinstance(term, Negation):
        return f"not ({_dci_term(term.part, args)})"
    if not isinstance(term, Condition):  # AnyOf, AllOf
        joiner = " or " if isinstance(term, AnyOf) else " and "
        return "(" + joiner.join(f"({_dci_term(p, args)})" for p in term.parts) + ")"
    values = list(term.value) if isinstance(term.value, tuple) else [term.value]
    if term.attribute == "area_code":
        args.append([v + "%" for v in values])
        return f"sls_id like any(${len(args)}::text[])"
    if term.attribute == MEMBER_NIK:  # a member of the family's current decision has this NIK (keyed hash)
        args.append(bytes.fromhex(values[0]))
        return (f"exists (select 1 from member_index mi where mi.nik_hash = ${len(args)} "
                "and mi.family_id = registry_families.family_id "
                "and mi.submission_id = (registry_families.decision->>'submission_id')::uuid)")
    if term.attribute == "eligible_programme":
        args.append(values)
        return f"eligible && ${len(args)}::text[]"
    if term.op == "in":
        cast = "int[]" if term.attribute in ("welfare_group", "decile") else "text[]"
        args.append(values)
        return f"{_DCI_COLUMNS[term.attribute]} = any(${len(args)}::{cast})"
    args.append(values[0])
    return f"{_DCI_COLUMNS[term.attribute]} {_DCI_OPS[term.op]} ${len(args)}"

ERASURE_NOTICE = Topic.FAMILY_ERASED.value  # deliveries.event_type of an erasure notice


def _count(status: str) -> int:
    """The row count of a command status ("UPDATE 3")."""
    return int(status.rsplit(" ", 1)[-1])


def _dict(row: asyncpg.Record | None) -> dict | None:
    return dict(row) if row is not None else None


def filters_of(row) -> Filters:
    return Filters(tuple(row["programmes"]), tuple(row["area_prefixes"]), tuple(row["welfare_groups"]),
                   tuple(row["event_types"]))


class NotifyStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # ---------------------------------------------------------------- subscriptions

    async def live_subscriptions(self) -> list[LiveSubscription]:
        # paused and suspended subscriptions keep receiving into their queue; nothing is dropped
        rows = await self.conn.fetch("select id, scope_programmes, programmes, area_prefixes, welfare_groups, "
                                     "event_types from subscriptions where status <> 'deleted'")
        return [LiveSubscription(r["id"], filters_of(r), tuple(r["scope_programmes"])) for r in rows]

    async def create_subscription(self, *, sub_id: UUID, owner: str, callback_url: str, secret: str | None,
                                  signature: str, scope: tuple[str, ...], filters: Filters,
                                  limit_problem: Callable[[dict[str, int]], str | None], fmt: str = "webhook",
                                  dci_sender: str | None = None) -> tuple[dict | None, str | None]:
        """Inserts a subscription unless `limit_problem(live subscriptions per programme of its scope)`
        refuses it (too many already); (row, None) or (None, reason). Subscriptions are made
        one at a time (transaction-scoped advisory lock), so two at once cannot both take the last place."""
        async with self.conn.transaction():
            await self.conn.execute("select pg_advisory_xact_lock(hashtext('notify.subscriptions.create'))")
            rows = await self.conn.fetch(
                "select p, count(*) n from subscriptions, unnest(scope_programmes) p "
                "where status <> 'deleted' and p = any($1::text[]) group by p", list(scope))
            if problem := limit_problem({r["p"]: r["n"] for r in rows}):
                return None, problem
            row = await self.conn.fetchrow(
                f"insert into subscriptions (id, owner, callback_url, secret, scope_programmes, programmes, "
                f"area_prefixes, welfare_groups, event_types, signature, format, dci_sender) "
                f"values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) returning {SUB_COLUMNS}",
                sub_id, owner, callback_url, secret, list(scope), list(filters.programmes),
                list(filters.area_prefixes), list(filters.welfare_groups), list(filters.event_types), signature,
                fmt, dci_sender)
            return _dict(row), None

    async def subscription(self, sub_id: UUID) -> dict | None:
        """A live (not deleted) subscription."""
        return _dict(await self.conn.fetchrow(
            f"select {SUB_COLUMNS} from subscriptions where id = $1 and status <> 'deleted'", sub_id))

    async def subscriptions_of(self, owner: str, *, every_owner: bool) -> list[dict]:
        """The owner's live subscriptions (every owner's for an administrator), oldest first."""
        rows = await self.conn.fetch(f"select {SUB_COLUMNS} from subscriptions where status <> 'deleted' "
                                     "and (owner = $1 or $2) order by created_at", owner, every_owner)
        return [dict(r) for r in rows]

    async def set_status(self, sub_id: UUID, status: str) -> dict | None:
        """Pause, resume (due at once) or delete; the run of failures starts again."""
        return _dict(await self.conn.fetchrow(
            f"update subscriptions set status = $2, consecutive_failures = 0, updated_at = now(), "
            f"next_attempt_at = case when $2 = 'active' then now() else next_attempt_at end where id = $1 "
            f"returning {SUB_COLUMNS}", sub_id, status))

    async def record_audit(self, entry: audit.Entry) -> None:
        """An audit entry, in this store's transaction."""
        await audit.record(self.conn, entry)

    # ---------------------------------------------------------------- queue and figures

    async def lag(self, sub_id: UUID | None = None) -> list[dict]:
        """Per live subscription: queued (pending) and dead deliveries, and when the oldest
        queued one arrived. Counts come from the partial indexes on pending and dead rows."""
        if sub_id is None:
            return [dict(r) for r in await self.conn.fetch(_LAG_SQL.format(where=""))]
        return [dict(r) for r in await self.conn.fetch(_LAG_SQL.format(where="and s.id = $1"), sub_id)]

    async def last_attempt(self, sub_id: UUID) -> dict | None:
        return _dict(await self.conn.fetchrow(
            "select status_code, latency_ms, error, outcome, at from delivery_attempts "
            "where subscription_id = $1 order by id desc limit 1", sub_id))

    async def recent_latency(self, sub_id: UUID) -> dict:
        """Attempts among the last 100 (n) and their median and 95th percentile latency (p50, p95)."""
        return dict(await self.conn.fetchrow(
            "select count(*) n, percentile_cont(0.5) within group (order by latency_ms) p50, "
            "percentile_cont(0.95) within group (order by latency_ms) p95 from (select latency_ms "
            "from delivery_attempts where subscription_id = $1 order by id desc limit 100) a", sub_id))

    async def deliveries_of(self, sub_id: UUID, status: str, limit: int) -> list[dict]:
        rows = await self.conn.fetch(
            "select event_id, family_id, status, attempts, last_status, last_error, created_at, delivered_at "
            "from deliveries where subscription_id = $1 and status = $2 order by id limit $3", sub_id, status, limit)
        return [dict(r) for r in rows]

    async def attempts_of(self, sub_id: UUID, limit: int) -> list[dict]:
        rows = await self.conn.fetch("select message_id, events, status_code, latency_ms, error, outcome, at "
                                     "from delivery_attempts where subscription_id = $1 order by id desc limit $2",
                                     sub_id, limit)
        return [dict(r) for r in rows]

    async def pending_count(self, sub_id: UUID) -> int:
        return await self.conn.fetchval("select count(*) from deliveries where subscription_id = $1 and "
                                        "status = 'pending'", sub_id)

    async def requeue(self, sub_id: UUID, *, dead_letters: bool, since: datetime | None) -> int:
        """Re-send the dead deliveries (dead_letters), or replay what arrived, or was delivered, at or after
        `since`: all a subscriber may have lost from that moment on. Re-sent rows keep their place (id order),
        so each family's events go out again in their original order; the subscription is due at once. A
        delivery whose payload retention emptied (docs/RETENTION.md) has nothing left to re-send."""
        n = await self.conn.fetchval(
            "with u as (update deliveries set status = 'pending', attempts = 0 "
            "where subscription_id = $1 and ((status = 'dead' and $2) or ($3::timestamptz is not null and "
            "status <> 'pending' and (created_at >= $3 or delivered_at >= $3))) and payload is not null "
            "returning 1) select count(*) from u",
            sub_id, dead_letters, since)
        if n:
            await self.conn.execute("update subscriptions set next_attempt_at = now() where id = $1", sub_id)
        return n

    async def queue_test_event(self, sub_id: UUID, event_id: str, event_type: str, payload: dict) -> bool:
        """Queues a test delivery behind the subscription's queue (the normal delivery path), due at once;
        False when the subscription is not a live webhook one (a DCI subscriber's envelope holds records)."""
        queued = await self.conn.fetchval(
            "with s as (select id from subscriptions where id = $1 and status <> 'deleted' and format = 'webhook'), "
            "d as (insert into deliveries (subscription_id, event_id, event_type, family_id, payload) "
            "select id, $2, $3, '', $4 from s returning 1) select count(*) from d", sub_id, event_id, event_type, payload)
        if queued:
            await self.conn.execute("update subscriptions set next_attempt_at = least(next_attempt_at, now()) "
                                    "where id = $1", sub_id)
        return bool(queued)

    # ---------------------------------------------------------------- decisions in

    async def family_state(self, family_ids: Sequence[str]) -> FamilyState:
        """The batch's families: which are erased, and of the others the highest decision sequence
        queued (rows locked) and the subscriptions already told about them."""
        ids = sorted(set(family_ids))
        erased = {r["family_id"] for r in await self.conn.fetch(
            "select family_id from erased_families where family_id = any($1::text[])", ids)}
        ids = [f for f in ids if f not in erased]
        rows = await self.conn.fetch("select family_id, decision_seq from family_decisions "
                                     "where family_id = any($1::text[]) order by family_id for update", ids)
        seen = {r["family_id"]: r["decision_seq"] for r in rows}
        informed: dict[str, set] = {}
        for r in await self.conn.fetch("select family_id, subscription_id from subscription_families "
                                       "where family_id = any($1::text[])", ids):
            informed.setdefault(r["family_id"], set()).add(r["subscription_id"])
        return FamilyState(erased, seen, informed)

    async def save_plan(self, plan: DeliveryPlan) -> None:
        """The newest decision per family (never backwards), the DCI read model, who was told about
        which family, and the deliveries (once per subscription and event)."""
        await self.conn.executemany(
            "insert into family_decisions (family_id, decision_seq, event_id) values ($1, $2, $3) "
            "on conflict (family_id) do update set decision_seq = excluded.decision_seq, "
            "event_id = excluded.event_id, updated_at = now() "
            "where family_decisions.decision_seq <= excluded.decision_seq",  # never backwards
            [(f, seq, ev) for f, (seq, ev) in sorted(plan.newest.items())])
        await self._save_registry(plan.registry)
        if plan.newly_informed:
            await self.conn.execute(
                "insert into subscription_families (subscription_id, family_id) "
                "select * from unnest($1::uuid[], $2::text[]) on conflict do nothing",
                [p[0] for p in plan.newly_informed], [p[1] for p in plan.newly_informed])
        if plan.deliveries:
            await self.conn.executemany(
                "insert into deliveries (subscription_id, event_id, event_type, family_id, payload, traceparent) "
                "values ($1, $2, $3, $4, $5, $6) on conflict (subscription_id, event_id) do nothing",
                [(d.subscription_id, d.event_id, d.event_type, d.family_id, d.payload, d.traceparent)
                 for d in plan.deliveries])

    async def _save_registry(self, decisions: dict[str, tuple[int, str, dict]]) -> None:
        """family id -> (decision sequence, event id, decision JSON) of its newest decision: the read model
        of the DCI search (only ever a newer decision replaces a family's row; the caller weighed it)."""
        rows = []
        for fid, (seq, event_id, d) in sorted(decisions.items()):
            eligible = [x["programme"] for x in d.get("decisions", []) if x.get("eligible")]
            rows.append((fid, d["sls_id"], int(d["welfare_group"]), int(d["decile"]), seq, event_id,
                         datetime.fromisoformat(d["decided_at"]), eligible, d))
        await self.conn.executemany(
            "insert into registry_families (family_id, sls_id, welfare_group, decile, decision_seq, event_id, "
            "decided_at, eligible, decision) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict (family_id) "
            "do update set sls_id = excluded.sls_id, welfare_group = excluded.welfare_group, "
            "decile = excluded.decile, decision_seq = excluded.decision_seq, event_id = excluded.event_id, "
            "decided_at = excluded.decided_at, eligible = excluded.eligible, decision = excluded.decision, "
            "updated_at = now()", rows)

    async def erase_family(self, e) -> dict[str, int]:
        """Erasure (e: regsosek.contracts.FamilyErased): the family's ordering row is locked; the payload of
        every delivery of the family is emptied and those not sent yet are not sent any more (status
        'erased'); rows and attempts stay (delivery figures); the family is remembered erased and leaves
        the DCI read model. Its erasure notices (queue_erasure_notices) are left to be sent, also when the
        erasure is applied again. The counts, for the audit entry."""
        await self.conn.fetch("select family_id from family_decisions where family_id = $1 for update", e.family_id)
        pending = await self.conn.execute(
            "update deliveries set status = 'erased', payload = null, payload_expired_at = now() "
            "where family_id = $1 and status = 'pending' and event_type <> $2", e.family_id, ERASURE_NOTICE)
        emptied = await self.conn.execute(
            "update deliveries set payload = null, payload_expired_at = now() where family_id = $1 "
            "and payload is not null and event_type <> $2", e.family_id, ERASURE_NOTICE)
        await self.conn.execute(
            "insert into erased_families (family_id, sls_id, erasure_id, reason, erased_at) "
            "values ($1, $2, $3, $4, $5) on conflict (family_id) do nothing",
            e.family_id, e.sls_id, e.erasure_id, e.reason.value, e.erased_at)
        await self.conn.execute("delete from registry_families where family_id = $1", e.family_id)
        identities = await self.conn.execute("delete from member_identities where family_id = $1", e.family_id)
        return {"pending_deliveries": _count(pending), "payloads": _count(emptied),
                "identity_lists": _count(identities)}

    # ---------------------------------------------------------------- the identity feed

    async def save_member_identities(self, lists: Sequence[SealedIdentities]) -> None:
        """The sealed identity lists of a batch, as received (kept once per family and submission);
        none for a family already erased (a list arriving after its family's erasure is not kept).
        Two statements for the whole batch (the lists, then their member index), whatever its size."""
        if not lists:
            return
        await self.conn.execute(
            "insert into member_identities (family_id, submission_id, sealed, kid, members) "
            "select * from unnest($1::text[], $2::uuid[], $3::bytea[], $4::text[], $5::int[]) "
            "as l(family_id, submission_id, sealed, kid, members) "
            "where not exists (select 1 from erased_families e where e.family_id = l.family_id) "
            "on conflict (family_id, submission_id) do nothing",
            [x.family_id for x in lists], [x.submission_id for x in lists], [x.sealed for x in lists],
            [x.kid for x in lists], [x.members for x in lists])
        index = [(h, x.family_id, x.submission_id, line) for x in lists for line, h in x.nik_hashes]
        if index:  # the member index goes with its list (not kept for an erased family)
            await self.conn.execute(
                "insert into member_index (nik_hash, family_id, submission_id, line_no) "
                "select * from unnest($1::bytea[], $2::text[], $3::uuid[], $4::int[]) "
                "as i(nik_hash, family_id, submission_id, line_no) "
                "where exists (select 1 from member_identities m where m.family_id = i.family_id "
                "and m.submission_id = i.submission_id) on conflict do nothing",
                [r[0] for r in index], [r[1] for r in index], [r[2] for r in index], [r[3] for r in index])

    async def member_identities(self, keys: Sequence[tuple[str, UUID]]) -> dict[tuple[str, UUID], bytes]:
        """The sealed identity lists of these (family, submission) pairs that have arrived."""
        if not keys:
            return {}
        rows = await self.conn.fetch(
            "select m.family_id, m.submission_id, m.sealed from member_identities m "
            "join unnest($1::text[], $2::uuid[]) k(family_id, submission_id) using (family_id, submission_id)",
            [k[0] for k in keys], [k[1] for k in keys])
        return {(r["family_id"], r["submission_id"]): bytes(r["sealed"]) for r in rows}

    async def reseal_identity_batch(self, ring: Keyring, limit: int) -> int:
        """Re-seals at most `limit` identity lists sealed under another key than the ring's current one,
        in one transaction; rows another copy is working on are skipped. Lists done."""
        async with self.conn.transaction():
            rows = await self.conn.fetch(
                "select family_id, submission_id, sealed from member_identities where kid <> $1 "
                "order by family_id, submission_id limit $2 for update skip locked", ring.current_kid, limit)
            await self.conn.executemany(
                "update member_identities set sealed = $3, kid = $4 where family_id = $1 and submission_id = $2",
                [(r["family_id"], r["submission_id"],
                  ring.reseal(bytes(r["sealed"]), identity_aad(r["family_id"], r["submission_id"])), ring.current_kid)
                 for r in rows])
            return len(rows)

    async def count_identities_not_under(self, kid: str) -> int:
        return int(await self.conn.fetchval("select count(*) from member_identities where kid <> $1", kid))

    async def expire_superseded_identities(self, before: datetime, limit: int) -> int:
        """Retention: deletes at most `limit` identity lists received before `before` for which a
        newer list of the same family exists (a family's latest list stays while it is registered:
        re-ranks decide again on it years later); oldest first."""
        return _count(await self.conn.execute(
            "delete from member_identities where (family_id, submission_id) in ("
            "select m.family_id, m.submission_id from member_identities m where m.received_at < $1 and exists ("
            "select 1 from member_identities n where n.family_id = m.family_id and n.received_at > m.received_at) "
            "order by m.received_at limit $2)", before, limit))

    async def queue_erasure_notices(self, family_id: str, event_id: str, event_type: str, payload: dict) -> int:
        """The erasure notice (domain.erasure_notice) queued for every webhook subscription told about the
        family that is not deleted (once per subscription and erasure event); how many. A DCI subscription
        gets none here: its notify envelope has a shape of its own (notify.dci)."""
        status = await self.conn.execute(
            "insert into deliveries (subscription_id, event_id, event_type, family_id, payload) "
            "select sf.subscription_id, $2::text, $3::text, $1::text, $4::jsonb from subscription_families sf "
            "join subscriptions s on s.id = sf.subscription_id "
            "where sf.family_id = $1 and s.status <> 'deleted' and s.format = 'webhook' "
            "on conflict (subscription_id, event_id) do nothing", family_id, event_id, event_type, payload)
        return _count(status)

    # ---------------------------------------------------------------- the delivery worker

    async def due_subscriptions(self, limit: int) -> list[UUID]:
        """Active subscriptions with something queued whose retry wait is over and that no
        instance is delivering right now."""
        rows = await self.conn.fetch(
            """select s.id from subscriptions s
               where s.status = 'active' and s.next_attempt_at <= now()
                 and (s.lease_until is null or s.lease_until < now())
                 and exists (select 1 from deliveries d where d.subscription_id = s.id and d.status = 'pending')
               order by s.next_attempt_at limit $1""", limit)
        return [r["id"] for r in rows]

    async def claim(self, sub_id: UUID, worker: UUID, lease: timedelta) -> dict | None:
        """Take the subscription's delivery lease; None when it is not active, not due, or
        another instance holds it. With its format and DCI sender (notify.dci)."""
        return _dict(await self.conn.fetchrow(
            f"""update subscriptions set lease_owner = $2, lease_until = now() + $3::interval
                where id = $1 and status = 'active' and next_attempt_at <= now()
                  and (lease_until is null or lease_until < now() or lease_owner = $2)
                returning {SUB_COLUMNS}, format, dci_sender""", sub_id, worker, lease))

    async def release(self, sub_id: UUID, worker: UUID) -> None:
        await self.conn.execute("update subscriptions set lease_owner = null, lease_until = null "
                                "where id = $1 and lease_owner = $2", sub_id, worker)

    async def pending_batch(self, sub_id: UUID, limit: int) -> list[dict]:
        """The subscription's oldest queued deliveries (id, event_id, event_type, payload, traceparent, attempts,
        created_at)."""
        rows = await self.conn.fetch(
            "select id, event_id, event_type, payload, traceparent, attempts, created_at from deliveries "
            "where subscription_id = $1 and status = 'pending' order by id limit $2", sub_id, limit)
        return [dict(r) for r in rows]

    async def attempt_state(self, sub_id: UUID, ids: list[int]) -> AttemptState:
        """All that recording an attempt needs (domain.after_attempt), read once in the recording
        transaction, the rows locked until it ends: which of these deliveries are still queued, and
        the subscription's status, owner and run of failures."""
        pending = await self.conn.fetch("select id from deliveries where id = any($1::bigint[]) "
                                        "and status = 'pending' order by id for update", ids)
        sub = await self.conn.fetchrow("select status, owner, consecutive_failures from subscriptions "
                                       "where id = $1 for update", sub_id)
        return AttemptState(sub["status"], sub["owner"], sub["consecutive_failures"],
                            frozenset(r["id"] for r in pending))

    async def save_attempt(self, sub_id: UUID, worker: UUID, message_id: str, events: int, latency_ms: float,
                           attempt: Attempt, record: AttemptRecord) -> None:
        """An attempt and what it came to (domain.after_attempt): its log row, its deliveries' new state,
        the subscription's run of failures, retry wait, suspension and figures; the lease is given
        back if this worker still holds it."""
        error = attempt.error[:1000] if attempt.error else None
        await self.conn.execute(
            "insert into delivery_attempts (subscription_id, message_id, events, status_code, latency_ms, error, "
            "outcome) values ($1, $2, $3, $4, $5, $6, $7)", sub_id, message_id, events, attempt.status, latency_ms,
            error, attempt.outcome.value)
        if record.ids:
            await self.conn.execute(
                "update deliveries set status = $2, attempts = attempts + 1, last_status = $3, last_error = $4, "
                "delivered_at = case when $2 = 'delivered' then now() else delivered_at end "
                "where id = any($1::bigint[]) and status = 'pending'",
                list(record.ids), record.deliveries, attempt.status,
                None if record.deliveries == "delivered" else attempt.error)
        await self.conn.execute(
            "update subscriptions set consecutive_failures = $3, "
            "delivered_total = delivered_total + $4, "
            "next_attempt_at = case when $5::interval is null then next_attempt_at else now() + $5::interval end, "
            "status = case when $6 and status = 'active' then 'suspended' else status end, "
            "updated_at = case when $6 and status = 'active' then now() else updated_at end, "
            "attempts_total = attempts_total + 1, failed_attempts_total = failed_attempts_total + $7, "
            "last_attempt_at = now(), "
            "lease_owner = case when lease_owner = $2 then null else lease_owner end, "
            "lease_until = case when lease_owner = $2 then null else lease_until end where id = $1",
            sub_id, worker, record.failures, len(record.ids) if record.deliveries == "delivered" else 0,
            record.retry_in, record.suspend, int(record.failed))

    async def retry_after(self, sub_id: UUID, wait: timedelta) -> None:
        await self.conn.execute("update subscriptions set next_attempt_at = now() + $2::interval where id = $1",
                                sub_id, wait)

    async def hold_off(self, sub_id: UUID, worker: UUID, wait: timedelta) -> None:
        """After a delivery broke off (not a subscriber's answer: the database, a bug): the subscription is
        not due again for `wait` (or its later retry time), whichever instance looks, and the lease is
        given back. Left alone when another instance holds the lease."""
        await self.conn.execute(
            "update subscriptions set next_attempt_at = greatest(next_attempt_at, now() + $3::interval), "
            "lease_owner = null, lease_until = null "
            "where id = $1 and (lease_owner = $2 or lease_until is null or lease_until < now())",
            sub_id, worker, wait)

    async def expire_delivered_payloads(self, before: datetime, limit: int) -> int:
        """Retention: empties the payload of at most `limit` deliveries delivered before `before`
        (oldest first). The row stays (ids, status, attempts, times: the delivery figures); a replay
        does not re-send it (nothing left to send)."""
        return _count(await self.conn.execute(
            "update deliveries set payload = null, payload_expired_at = now() where id in ("
            "select id from deliveries where status = 'delivered' and payload is not null and delivered_at < $1 "
            "order by delivered_at limit $2)", before, limit))

    # ---------------------------------------------------------------- DCI Social Registry API (notify.dci)

    async def search_registry(self, conditions, areas: tuple[str, ...], sort, limit: int,
                              offset: int) -> tuple[list[dict], int]:
        """(decisions of one page, total matching) of the families in `areas` (SLS id prefixes) meeting every
        term (notify.dci_domain: Condition, AnyOf, AllOf, Negation; checked there), in `sort` order."""
        args: list = [[a + "%" for a in areas]]
        where = ["sls_id like any($1::text[])"] + [_dci_term(t, args) for t in conditions]
        order = ", ".join(f"{_DCI_COLUMNS[a]} {'desc' if o == 'desc' else 'asc'}" for a, o in sort)
        cond = " and ".join(where)
        total = await self.conn.fetchval(f"select count(*) from registry_families where {cond}", *args)
        rows = await self.conn.fetch(f"select decision from registry_families where {cond} order by {order} "
                                     f"limit {int(limit)} offset {int(offset)}", *args)
        return [r["decision"] for r in rows], total

    async def save_dci_transaction(self, *, correlation_id: str, requester: str, kind: str, transaction_id: str,
                                   reference_ids: list[str], status: str, detail: dict) -> None:
        await self.conn.execute(
            "insert into dci_transactions (correlation_id, requester, kind, transaction_id, reference_ids, status, "
            "detail) values ($1, $2, $3, $4, $5, $6, $7) on conflict (correlation_id) do update set "
            "status = excluded.status, detail = excluded.detail, updated_at = now()",
            correlation_id, requester, kind, transaction_id, reference_ids, status, detail)

    async def find_dci_transactions(self, requester: str, kind: str, attribute: str, value) -> list[dict]:
        """The requester's transactions of `kind` by transaction_id, correlation_id or any of a list of
        reference ids, newest first."""
        column = {"transaction_id": "transaction_id = $3", "correlation_id": "correlation_id = $3",
                  "reference_id_list": "reference_ids && $3::text[]"}[attribute]
        rows = await self.conn.fetch(
            f"select correlation_id, transaction_id, kind, reference_ids, status, detail, created_at, updated_at "
            f"from dci_transactions where requester = $1 and kind = $2 and {column} "
            f"order by created_at desc limit 20", requester, kind, value)
        return [dict(r) for r in rows]

    async def delete_dci_subscriptions(self, owner: str, codes: list[str]) -> dict[str, str]:
        """Unsubscribes the owner's DCI subscriptions among `codes` (subscription ids): code -> 'unsubscribe'
        when it was live and is now deleted, 'already' when it was deleted before, 'unknown' otherwise."""
        out = {}
        for code in codes:
            try:
                sub_id = UUID(code)
            except ValueError:
                out[code] = "unknown"
                continue
            row = await self.conn.fetchrow(
                "select status from subscriptions where id = $1 and owner = $2 and format = 'dci'", sub_id, owner)
            if row is None:
                out[code] = "unknown"
            elif row["status"] == "deleted":
                out[code] = "already"
            else:
                await self.conn.execute("update subscriptions set status = 'deleted', updated_at = now() "
                                        "where id = $1", sub_id)
                out[code] = "unsubscribe"
        return out

    async def enqueue_dci_callback(self, *, correlation_id: str, requester: str, url: str, action: str, header: dict,
                                   message: dict) -> int:
        """A callback to send (notify.dci.DciCallbackWorker), in the caller's transaction: its id."""
        return await self.conn.fetchval(
            "insert into dci_callbacks (correlation_id, requester, url, action, header, message) "
            "values ($1, $2, $3, $4, $5, $6) returning id", correlation_id, requester, url, action, header, message)

    async def claim_dci_callbacks(self, limit: int, lease: timedelta) -> list[dict]:
        """At most `limit` due callbacks no instance is sending, oldest first, leased for `lease`."""
        rows = await self.conn.fetch(
            "update dci_callbacks set lease_until = now() + $2::interval where id in ("
            "select id from dci_callbacks where status = 'pending' and next_attempt_at <= now() "
            "and (lease_until is null or lease_until < now()) order by id limit $1 for update skip locked) "
            "returning id, correlation_id, requester, url, action, header, message, attempts", limit, lease)
        return sorted((dict(r) for r in rows), key=lambda r: r["id"])

    async def finish_dci_callback(self, cb_id: int, *, outcome: str, status: int | None, error: str | None,
                                  wait: timedelta | None = None) -> None:
        """One attempt's outcome: 'delivered' or 'dead' (the message emptied), else 'retry' after `wait`."""
        if outcome == "retry":
            await self.conn.execute(
                "update dci_callbacks set attempts = attempts + 1, last_status = $2, last_error = $3, "
                "next_attempt_at = now() + $4::interval, lease_until = null where id = $1",
                cb_id, status, error[:1000] if error else None, wait or timedelta(0))
            return
        await self.conn.execute(
            "update dci_callbacks set status = $2, attempts = attempts + 1, last_status = $3, last_error = $4, "
            "message = null, lease_until = null, finished_at = now() where id = $1",
            cb_id, outcome, status, error[:1000] if error else None)

    async def dci_callbacks_of(self, requester: str, correlation_id: str) -> list[dict]:
        """The requester's callbacks of one transaction (status, attempts, last error), oldest first."""
        rows = await self.conn.fetch(
            "select id, action, status, attempts, last_status, last_error, created_at, finished_at "
            "from dci_callbacks where requester = $1 and correlation_id = $2 order by id", requester, correlation_id)
        return [dict(r) for r in rows]

    async def settle_dci_transaction(self, correlation_id: str, *, error: str | None) -> None:
        """The transaction whose callback was acknowledged (error None) or given up (why): a pending
        search becomes succ, or rjct with the callback's error; other kinds keep their status."""
        await self.conn.execute(
            "update dci_transactions set status = case when status = 'pdng' then "
            "(case when $2::text is null then 'succ' else 'rjct' end) else status end, "
            "detail = case when $2::text is null then detail else detail || jsonb_build_object('callback_error', $2::text) "
            "end, updated_at = now() where correlation_id = $1", correlation_id, error)

    async def erased_among(self, family_ids: list[str]) -> set[str]:
        """Which of these families were erased (a queued on-search callback must not carry them)."""
        rows = await self.conn.fetch("select family_id from erased_families where family_id = any($1::text[])",
                                     family_ids)
        return {r["family_id"] for r in rows}

    async def expire_dci_bookkeeping(self, before: datetime, limit: int) -> int:
        """Retention: at most `limit` finished callbacks (delivered or given up) and `limit` settled
        transactions (not pdng) last changed before `before`, oldest first, deleted; how many."""
        callbacks = await self.conn.execute(
            "delete from dci_callbacks where id in (select id from dci_callbacks where status <> 'pending' "
            "and finished_at < $1 order by finished_at limit $2)", before, limit)
        transactions = await self.conn.execute(
            "delete from dci_transactions where correlation_id in (select correlation_id from dci_transactions "
            "where status <> 'pdng' and updated_at < $1 order by updated_at limit $2)", before, limit)
        return _count(callbacks) + _count(transactions)

    async def remember_dci_message(self, sender_id: str, message_id: str, window: timedelta) -> bool:
        """Takes the sender's message_id; False when it was taken before (a replay). Ids older than
        `window` are forgotten (their message_ts is refused by then)."""
        await self.conn.execute("delete from dci_messages where received_at < now() - $1::interval", window)
        return bool(await self.conn.fetchval(
            "insert into dci_messages (sender_id, message_id) values ($1, $2) on conflict do nothing returning true",
            sender_id, message_id))


def store_in(uow: UnitOfWork) -> NotifyStore:
    """The store of a unit of work: its connection, in its transaction."""
    return NotifyStore(uow.conn)


@contextlib.asynccontextmanager
async def open_store(pool: asyncpg.Pool, *, transaction: bool = False) -> AsyncIterator[NotifyStore]:
    """A store on a connection of the pool, in one transaction when `transaction`."""
    async with pool.acquire() as conn:
        if transaction:
            async with conn.transaction():
                yield NotifyStore(conn)
        else:
            yield NotifyStore(conn)


Stores = Callable[..., contextlib.AbstractAsyncContextManager[NotifyStore]]  # stores(request, transaction=False)


@contextlib.asynccontextmanager
async def pool_stores(request, transaction: bool = False) -> AsyncIterator[NotifyStore]:
    """The store of an HTTP request: on a connection of the service's pool (one transaction when
    `transaction`, whose commit wakes the delivery loops: a re-send, a replay or a DCI request has
    its work found at once). What the routes are given by app.py; tests give them an in-memory one."""
    runtime = runtime_of(request)
    async with open_store(runtime.pool, transaction=transaction) as store:
        yield store
    if transaction:
        runtime.wakeup.notify()


async def expire_delivered_payloads(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """The payload retention rule's statement (regsosek.retention.Rule)."""
    return await NotifyStore(conn).expire_delivered_payloads(before, limit)


async def expire_superseded_identities(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """The identity lists' retention rule's statement (regsosek.retention.Rule)."""
    return await NotifyStore(conn).expire_superseded_identities(before, limit)


async def expire_dci_bookkeeping(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """The DCI bookkeeping retention rule's statement (regsosek.retention.Rule)."""
    return await NotifyStore(conn).expire_dci_bookkeeping(before, limit)
