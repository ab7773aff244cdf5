"""Notify's database: subscriptions, deliveries and the delivery log."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from notify.domain import Filters

SUB_COLUMNS = ("id, owner, callback_url, secret, programmes, area_prefixes, welfare_groups, event_types, status, "
               "consecutive_failures, created_at, updated_at")


def filters_of(row: asyncpg.Record) -> Filters:
    return Filters(tuple(row["programmes"]), tuple(row["area_prefixes"]), tuple(row["welfare_groups"]),
                   tuple(row["event_types"]))


async def live_subscriptions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    # paused and suspended subscriptions keep receiving into their queue; nothing is dropped
    return await conn.fetch(f"select {SUB_COLUMNS} from subscriptions where status <> 'deleted'")


async def enqueue(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    await conn.executemany(
        "insert into deliveries (subscription_id, event_id, event_type, family_id, payload, traceparent) "
        "values ($1, $2, $3, $4, $5, $6) on conflict (subscription_id, event_id) do nothing", rows,
    )


async def due_subscriptions(conn: asyncpg.Connection) -> list[UUID]:
    rows = await conn.fetch(
        """select s.id from subscriptions s
           where s.status = 'active' and exists (
             select 1 from deliveries d where d.subscription_id = s.id and d.status = 'pending'
               and d.next_attempt_at <= now())"""
    )
    return [r["id"] for r in rows]


async def get(conn: asyncpg.Connection, sub_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"select {SUB_COLUMNS} from subscriptions where id = $1 and status <> 'deleted'", sub_id)
