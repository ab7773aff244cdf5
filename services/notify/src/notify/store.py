"""Notify's database: subscriptions, deliveries and the delivery log."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from notify.domain import Filters

SUB_COLUMNS = ("id, owner, callback_url, secret, scope_programmes, programmes, area_prefixes, welfare_groups, "
               "event_types, status, "
               "consecutive_failures, created_at, updated_at, next_attempt_at, delivered_total, attempts_total, "
               "failed_attempts_total, last_attempt_at, signature")


def filters_of(row: asyncpg.Record) -> Filters:
    return Filters(tuple(row["programmes"]), tuple(row["area_prefixes"]), tuple(row["welfare_groups"]),
                   tuple(row["event_types"]))


async def live_subscriptions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    # paused and suspended subscriptions keep receiving into their queue; nothing is dropped
    return await conn.fetch("select id, scope_programmes, programmes, area_prefixes, welfare_groups, event_types "
                            "from subscriptions where status <> 'deleted'")


async def create_subscription(conn: asyncpg.Connection, *, sub_id: UUID, owner: str, callback_url: str,
                              secret: str | None, signature: str, scope: tuple[str, ...], filters: Filters,
                              limit_problem) -> tuple[asyncpg.Record | None, str | None]:
    """Inserts a subscription unless `limit_problem(live subscriptions per programme of its scope)`
    refuses it (too many already); (row, None) or (None, reason). Subscriptions are made
    one at a time (transaction-scoped advisory lock), so two at once cannot both take the last place."""
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(hashtext('notify.subscriptions.create'))")
        rows = await conn.fetch(
            "select p, count(*) n from subscriptions, unnest(scope_programmes) p "
            "where status <> 'deleted' and p = any($1::text[]) group by p", list(scope))
        if problem := limit_problem({r["p"]: r["n"] for r in rows}):
            return None, problem
        row = await conn.fetchrow(
            f"insert into subscriptions (id, owner, callback_url, secret, scope_programmes, programmes, area_prefixes, "
            f"welfare_groups, event_types, signature) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            f"returning {SUB_COLUMNS}",
            sub_id, owner, callback_url, secret, list(scope), list(filters.programmes), list(filters.area_prefixes),
            list(filters.welfare_groups), list(filters.event_types), signature)
        return row, None


async def enqueue(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    await conn.executemany(
        "insert into deliveries (subscription_id, event_id, event_type, family_id, payload, traceparent) "
        "values ($1, $2, $3, $4, $5, $6) on conflict (subscription_id, event_id) do nothing", rows,
    )


async def family_decisions(conn: asyncpg.Connection, family_ids: list[str]) -> dict[str, int]:
    """The highest decision sequence queued for each of these families that has one, rows locked."""
    rows = await conn.fetch("select family_id, decision_seq from family_decisions where family_id = any($1::text[]) "
                            "order by family_id for update", family_ids)
    return {r["family_id"]: r["decision_seq"] for r in rows}


async def informed_subscriptions(conn: asyncpg.Connection, family_ids: list[str]) -> dict[str, set]:
    """family id -> the subscriptions already given a decision about it."""
    rows = await conn.fetch("select family_id, subscription_id from subscription_families "
                            "where family_id = any($1::text[])", family_ids)
    out: dict[str, set] = {}
    for r in rows:
        out.setdefault(r["family_id"], set()).add(r["subscription_id"])
    return out


async def remember_informed(conn: asyncpg.Connection, pairs: list[tuple]) -> None:
    """(subscription id, family id) pairs: this subscription has now been given a decision about it."""
    if pairs:
        await conn.execute(
            "insert into subscription_families (subscription_id, family_id) "
            "select * from unnest($1::uuid[], $2::text[]) on conflict do nothing",
            [p[0] for p in pairs], [p[1] for p in pairs])


async def save_family_decisions(conn: asyncpg.Connection, newest: dict[str, tuple[int, str]]) -> None:
    """family id -> (decision sequence, event id) of the newest decision now queued for it."""
    await conn.executemany(
        "insert into family_decisions (family_id, decision_seq, event_id) values ($1, $2, $3) "
        "on conflict (family_id) do update set decision_seq = excluded.decision_seq, event_id = excluded.event_id, "
        "updated_at = now() where family_decisions.decision_seq <= excluded.decision_seq",  # never backwards
        [(f, seq, ev) for f, (seq, ev) in sorted(newest.items())])


async def due_subscriptions(conn: asyncpg.Connection, limit: int) -> list[UUID]:
    """Active subscriptions with something queued whose retry wait is over and that no
    instance is delivering right now."""
    rows = await conn.fetch(
        """select s.id from subscriptions s
           where s.status = 'active' and s.next_attempt_at <= now()
             and (s.lease_until is null or s.lease_until < now())
             and exists (select 1 from deliveries d where d.subscription_id = s.id and d.status = 'pending')
           order by s.next_attempt_at limit $1""", limit)
    return [r["id"] for r in rows]


async def claim(conn: asyncpg.Connection, sub_id: UUID, worker: UUID, lease: timedelta) -> asyncpg.Record | None:
    """Take the subscription's delivery lease; None when it is not active, not due, or
    another instance holds it."""
    return await conn.fetchrow(
        f"""update subscriptions set lease_owner = $2, lease_until = now() + $3::interval
            where id = $1 and status = 'active' and next_attempt_at <= now()
              and (lease_until is null or lease_until < now() or lease_owner = $2)
            returning {SUB_COLUMNS}""", sub_id, worker, lease)


async def release(conn: asyncpg.Connection, sub_id: UUID, worker: UUID) -> None:
    await conn.execute("update subscriptions set lease_owner = null, lease_until = null "
                       "where id = $1 and lease_owner = $2", sub_id, worker)


async def get(conn: asyncpg.Connection, sub_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"select {SUB_COLUMNS} from subscriptions where id = $1 and status <> 'deleted'", sub_id)


LAG_SQL = """
select s.id, s.status,
       (select count(*) from deliveries d where d.subscription_id = s.id and d.status = 'pending') as pending,
       (select min(d.created_at) from deliveries d where d.subscription_id = s.id and d.status = 'pending')
           as oldest_pending_at,
       (select count(*) from deliveries d where d.subscription_id = s.id and d.status = 'dead') as dead,
       extract(epoch from now())::float8 as now_s
from subscriptions s where s.status <> 'deleted' {where}
"""


async def lag(conn: asyncpg.Connection, sub_id: UUID | None = None) -> list[asyncpg.Record]:
    """Per live subscription: queued (pending) and dead deliveries, and when the oldest
    queued one arrived. Counts come from the partial indexes on pending and dead rows."""
    if sub_id is None:
        return await conn.fetch(LAG_SQL.format(where=""))
    return await conn.fetch(LAG_SQL.format(where="and s.id = $1"), sub_id)


async def expire_delivered_payloads(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Retention: empties the payload of at most `limit` deliveries delivered before `before`
    (oldest first). The row stays (ids, status, attempts, times: the delivery figures); a replay
    does not re-send it (nothing left to send)."""
    status = await conn.execute(
        "update deliveries set payload = null, payload_expired_at = now() where id in ("
        "select id from deliveries where status = 'delivered' and payload is not null and delivered_at < $1 "
        "order by delivered_at limit $2)", before, limit)
    return int(status.rsplit(" ", 1)[-1])


# ---------------------------------------------------------------- erasure


async def erased_among(conn: asyncpg.Connection, family_ids: list[str]) -> set[str]:
    return {r["family_id"] for r in await conn.fetch(
        "select family_id from erased_families where family_id = any($1::text[])", family_ids)}


async def erase_family(conn: asyncpg.Connection, e) -> dict[str, int]:
    """Empties the payload of every delivery of the family; those not sent yet are not sent any more
    (status 'erased'); rows and attempts stay (delivery figures). Remembers the family erased."""
    pending = await conn.execute(
        "update deliveries set status = 'erased', payload = null, payload_expired_at = now() "
        "where family_id = $1 and status = 'pending'", e.family_id)
    emptied = await conn.execute(
        "update deliveries set payload = null, payload_expired_at = now() where family_id = $1 "
        "and payload is not null", e.family_id)
    await conn.execute(
        "insert into erased_families (family_id, sls_id, erasure_id, reason, erased_at) values ($1, $2, $3, $4, $5) "
        "on conflict (family_id) do nothing", e.family_id, e.sls_id, e.erasure_id, e.reason.value, e.erased_at)
    return {"pending_deliveries": int(pending.rsplit(" ", 1)[-1]), "payloads": int(emptied.rsplit(" ", 1)[-1])}


# ---------------------------------------------------------------- DCI Social Registry API (notify.dci)

# attribute -> SQL column of registry_families (notify.dci_domain.ATTRIBUTES / SORTABLE name them)
_DCI_COLUMNS = {"family_id": "family_id", "sls_id": "sls_id", "welfare_group": "welfare_group", "decile": "decile",
                "decided_at": "decided_at"}
_DCI_OPS = {"eq": "=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


async def save_registry(conn: asyncpg.Connection, decisions: dict[str, tuple[int, str, dict]]) -> None:
    """family id -> (decision sequence, event id, decision JSON) of its newest decision: the read model
    of the DCI search (only ever a newer decision replaces a family's row; the caller weighed it)."""
    rows = []
    for fid, (seq, event_id, d) in sorted(decisions.items()):
        eligible = [x["programme"] for x in d.get("decisions", []) if x.get("eligible")]
        rows.append((fid, d["sls_id"], int(d["welfare_group"]), int(d["decile"]), seq, event_id,
                     datetime.fromisoformat(d["decided_at"]), eligible, d))
    await conn.executemany(
        "insert into registry_families (family_id, sls_id, welfare_group, decile, decision_seq, event_id, decided_at, "
        "eligible, decision) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict (family_id) do update set "
        "sls_id = excluded.sls_id, welfare_group = excluded.welfare_group, decile = excluded.decile, "
        "decision_seq = excluded.decision_seq, event_id = excluded.event_id, decided_at = excluded.decided_at, "
        "eligible = excluded.eligible, decision = excluded.decision, updated_at = now()", rows)


async def forget_registry_family(conn: asyncpg.Connection, family_id: str) -> int:
    """Erasure: the family leaves the DCI read model."""
    status = await conn.execute("delete from registry_families where family_id = $1", family_id)
    return int(status.rsplit(" ", 1)[-1])


async def search_registry(conn: asyncpg.Connection, conditions, areas: tuple[str, ...], sort, limit: int,
                          offset: int) -> tuple[list[dict], int]:
    """(decisions of one page, total matching) of the families in `areas` (SLS id prefixes) meeting every
    condition (notify.dci_domain.Condition, checked there), in `sort` order."""
    args: list = [[a + "%" for a in areas]]
    where = ["sls_id like any($1::text[])"]
    for c in conditions:
        values = list(c.value) if isinstance(c.value, tuple) else [c.value]
        if c.attribute == "area_code":
            args.append([v + "%" for v in values])
            where.append(f"sls_id like any(${len(args)}::text[])")
        elif c.attribute == "eligible_programme":
            args.append(values)
            where.append(f"eligible && ${len(args)}::text[]")
        elif c.op == "in":
            cast = "int[]" if c.attribute in ("welfare_group", "decile") else "text[]"
            args.append(values)
            where.append(f"{_DCI_COLUMNS[c.attribute]} = any(${len(args)}::{cast})")
        else:
            args.append(values[0])
            where.append(f"{_DCI_COLUMNS[c.attribute]} {_DCI_OPS[c.op]} ${len(args)}")
    order = ", ".join(f"{_DCI_COLUMNS[a]} {'desc' if o == 'desc' else 'asc'}" for a, o in sort)
    cond = " and ".join(where)
    total = await conn.fetchval(f"select count(*) from registry_families where {cond}", *args)
    rows = await conn.fetch(f"select decision from registry_families where {cond} order by {order} "
                            f"limit {int(limit)} offset {int(offset)}", *args)
    return [r["decision"] for r in rows], total


async def save_dci_transaction(conn: asyncpg.Connection, *, correlation_id: str, requester: str, kind: str,
                               transaction_id: str, reference_ids: list[str], status: str, detail: dict) -> None:
    await conn.execute(
        "insert into dci_transactions (correlation_id, requester, kind, transaction_id, reference_ids, status, detail) "
        "values ($1, $2, $3, $4, $5, $6, $7) on conflict (correlation_id) do update set status = excluded.status, "
        "detail = excluded.detail, updated_at = now()",
        correlation_id, requester, kind, transaction_id, reference_ids, status, detail)


async def find_dci_transactions(conn: asyncpg.Connection, requester: str, kind: str, attribute: str,
                                value) -> list[asyncpg.Record]:
    """The requester's transactions of `kind` by transaction_id, correlation_id or any of a list of
    reference ids, newest first."""
    column = {"transaction_id": "transaction_id = $3", "correlation_id": "correlation_id = $3",
              "reference_id_list": "reference_ids && $3::text[]"}[attribute]
    return await conn.fetch(
        f"select correlation_id, transaction_id, kind, reference_ids, status, detail, created_at, updated_at "
        f"from dci_transactions where requester = $1 and kind = $2 and {column} order by created_at desc limit 20",
        requester, kind, value)


async def set_subscription_format(conn: asyncpg.Connection, sub_id: UUID, fmt: str, dci_sender: str | None) -> None:
    await conn.execute("update subscriptions set format = $2, dci_sender = $3 where id = $1", sub_id, fmt, dci_sender)


async def subscription_format(conn: asyncpg.Connection, sub_id: UUID) -> tuple[str, str | None]:
    row = await conn.fetchrow("select format, dci_sender from subscriptions where id = $1", sub_id)
    return (row["format"], row["dci_sender"]) if row else ("webhook", None)


async def delete_dci_subscriptions(conn: asyncpg.Connection, owner: str, codes: list[str]) -> dict[str, str]:
    """Unsubscribes the owner's DCI subscriptions among `codes` (subscription ids): code -> 'unsubscribe'
    when it was live and is now deleted, 'already' when it was deleted before, 'unknown' otherwise."""
    out = {}
    for code in codes:
        try:
            sub_id = UUID(code)
        except ValueError:
            out[code] = "unknown"
            continue
        row = await conn.fetchrow("select status from subscriptions where id = $1 and owner = $2 and format = 'dci'",
                                  sub_id, owner)
        if row is None:
            out[code] = "unknown"
        elif row["status"] == "deleted":
            out[code] = "already"
        else:
            await conn.execute("update subscriptions set status = 'deleted', updated_at = now() where id = $1", sub_id)
            out[code] = "unsubscribe"
    return out
