"""Retention of each service's own rows: one background task every service runs.

A pass applies every rule: each rule has a retention in days, a pure function
(`cutoff`) turns it into the moment before which rows go, and the rule's SQL deletes
(or empties of personal data) at most `REGSOSEK_RETENTION_BATCH_ROWS` rows per
statement, again and again until a statement finds fewer: each statement is its own
short transaction, so no lock is held for long and the service's traffic goes on.

Every service has the shared rules (this module holds their SQL: the tables come from
the shared migrations): inbox ids, `outbox_rejected` rows and `audit_log` rows older
than their retention. A service adds its own rules through
`ServiceDefinition.retention` (their SQL lives in the service's store.py). What each
rule covers, and why so long: docs/RETENTION.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from regsosek import db, metrics
from regsosek.background import periodic

if TYPE_CHECKING:
    from regsosek.service import Runtime
    from regsosek.settings import ServiceSettings

log = logging.getLogger("regsosek.retention")

# (connection, cut-off, at most this many rows) -> rows deleted or expired by one statement
PruneStatement = Callable[[asyncpg.Connection, datetime, int], Awaitable[int]]


@dataclass(frozen=True)
class Rule:
    """Rows older than `days` (by the rule's own timestamp column) are pruned by `prune`."""

    name: str
    days: float
    prune: PruneStatement


def cutoff(now: datetime, days: float) -> datetime:
    """The moment before which a rule's rows go: `days` before `now` (the database's clock).
    A retention must be positive and `now` timezone-aware (timestamptz columns)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if not days > 0:
        raise ValueError(f"a retention must be positive, got {days!r} days")
    return now - timedelta(days=days)


# ------------------------------------------------------------------ shared tables

async def prune_inbox(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Inbox ids received before `before` (oldest first, by the received_at index)."""
    return _count(await conn.execute(
        "delete from inbox where event_id in (select event_id from inbox where received_at < $1 "
        "order by received_at limit $2)", before, limit))


async def prune_outbox_rejected(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Rows the broker refused for good, set aside before `before` and never re-queued."""
    return _count(await conn.execute(
        "delete from outbox_rejected where id in (select id from outbox_rejected where rejected_at < $1 "
        "order by rejected_at limit $2)", before, limit))


async def prune_audit_log(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    return _count(await conn.execute(
        "delete from audit_log where id in (select id from audit_log where at < $1 order by at limit $2)",
        before, limit))


def _count(status: str) -> int:
    """Rows affected, from a command status such as 'DELETE 12' or 'UPDATE 3'."""
    return int(status.rsplit(" ", 1)[-1])


def shared_rules(settings: ServiceSettings) -> list[Rule]:
    return [Rule("inbox", settings.inbox_retention_days, prune_inbox),
            Rule("outbox_rejected", settings.outbox_rejected_retention_days, prune_outbox_rejected),
            Rule("audit_log", settings.audit_retention_days, prune_audit_log)]


# ------------------------------------------------------------------ the task

async def prune_once(pool: asyncpg.Pool, rules: Sequence[Rule], batch_rows: int, *,
                     service: str = "regsosek") -> dict[str, int]:
    """One pass of every rule; rows affected per rule."""
    async with pool.acquire() as conn:
        now = await conn.fetchval("select now()")
    done: dict[str, int] = {}
    for rule in rules:
        before = cutoff(now, rule.days)
        total = 0
        while True:
            async with pool.acquire() as conn:
                n = await rule.prune(conn, before, batch_rows)
            total += n
            metrics.RETENTION_PRUNED.labels(service, rule.name).inc(n)
            if n < batch_rows:
                break
            await asyncio.sleep(0)  # let the service's own work in between statements
        done[rule.name] = total
    return done


async def prune_forever(runtime: Runtime) -> None:
    """The background task: a pass now, then one every REGSOSEK_RETENTION_INTERVAL_S."""
    s = runtime.settings
    rules = [*shared_rules(s), *runtime.definition.retention]

    async def attempt() -> None:
        done = await prune_once(runtime.pool, rules, s.retention_batch_rows, service=s.service_name)
        metrics.RETENTION_LAST_RUN.labels(s.service_name).set_to_current_time()
        if any(done.values()):
            log.info("retention pass", extra={"fields": {"pruned": done}})

    await periodic("retention", s.retention_interval_s, attempt,
                   backoff=db.Backoff(s.retry_initial_s, max(s.retry_max_s, 60.0)), expected=db.is_transient,
                   logger=log, service=s.service_name)
