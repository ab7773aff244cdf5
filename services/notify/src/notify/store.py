"""Notify's database: subscriptions, deliveries and the delivery log."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import asyncpg

from notify.domain import Filters

SUB_COLUMNS = ("id, owner, callback_url, secret, programmes, area_prefixes, welfare_groups, event_types, status, "
               "consecutive_failures, created_at, updated_at, next_attempt_at, delivered_total, attempts_total, "
               "failed_attempts_total, last_attempt_at")


def filters_of(row: asyncpg.Record) -> Filters:
    return Filters(tuple(row["programmes"]), tuple(row["area_prefixes"]), tuple(row["welfare_groups"]),
                   tuple(row["event_types"]))


async def live_subscriptions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    # paused and suspended subscriptions keep receiving into their queue; nothing is dropped
    return await conn.fetch("select id, programmes, area_prefixes, welfare_groups, event_types from subscriptions "
                            "where status <> 'deleted'")


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
        "updated_at = now()", [(f, seq, ev) for f, (seq, ev) in sorted(newest.items())])


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
