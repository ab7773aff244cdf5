"""The audit log: who read personal data or decided something, what, when, from where.

Each service keeps its own `audit_log` table (shared migration 004). An entry holds ids
only: the actor (token subject) and role, the action, the object's id (submission,
family, subscription, dead-letter address), the request id (`x-request-id`, else one
made up) and the trace id; never a NIK, KK number or name (an object id of 16 digits,
the shape of both, is refused). A decision's entry is written in the transaction of the
decision (`record(conn, ...)`); a read gets its own small insert (`record_read`).

Operators query it over HTTP (`GET /v1/audit`, admin only; `regsosek.audit_api.router`) on
services with bearer tokens, or from the database of any service:

  python -m regsosek.audit --service intake --since 2022-11-01 [--actor SUP-1] [--object FAMILY_ID]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from regsosek.telemetry import current_trace_headers, trace_id_of

if TYPE_CHECKING:
    from fastapi import Request

    from regsosek.auth import Principal

TOKEN = re.compile(r"^[A-Za-z0-9_.:@/-]{1,128}$")
_NIK_OR_KK = re.compile(r"^[0-9]{16}$")
MAX_QUERY_ROWS = 1000


class NotAuditable(ValueError):
    """An entry that would put something other than ids into the audit log."""


@dataclass(frozen=True)
class Entry:
    actor: str
    role: str
    action: str
    object_type: str
    object_id: str | None
    outcome: str = "ok"
    request_id: str | None = None
    trace_id: str | None = None
    detail: dict = field(default_factory=dict)


def entry(actor: str, role: str, action: str, object_type: str, object_id: object | None, *,
          outcome: str = "ok", request_id: str | None = None, trace_id: str | None = None,
          detail: dict | None = None) -> Entry:
    """A checked entry: identifiers only. Raises NotAuditable for anything that could carry
    personal values (free text, a 16-digit NIK/KK-shaped id, nested data in `detail`)."""
    oid = None if object_id is None else str(object_id)
    for name, value in (("action", action), ("object_type", object_type), ("outcome", outcome)):
        if not re.fullmatch(r"[a-z_.:-]{1,64}", value or ""):
            raise NotAuditable(f"{name} must be a lower-case name")
    if not actor or len(actor) > 128 or not actor.isprintable():
        raise NotAuditable("actor must be a printable subject of at most 128 characters")
    if oid is not None and (not TOKEN.fullmatch(oid) or _NIK_OR_KK.fullmatch(oid)):
        raise NotAuditable("object_id must be an id (submission, family, subscription, address), never a NIK or KK")
    clean: dict = {}
    for k, v in (detail or {}).items():
        if not re.fullmatch(r"[a-z_]{1,32}", k):
            raise NotAuditable("detail keys must be lower-case names")
        if isinstance(v, str) and (not TOKEN.fullmatch(v) or _NIK_OR_KK.fullmatch(v)):
            raise NotAuditable(f"detail {k} must be an id or a code")
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise NotAuditable(f"detail {k} must be a number, flag or code")
        clean[k] = v
    rid = request_id if request_id and TOKEN.fullmatch(request_id) else None
    return Entry(actor, role, action, object_type, oid, outcome, rid, trace_id, clean)


def request_ids(request: Request | None) -> tuple[str, str | None]:
    """(request id, trace id) of the current request: the caller's `x-request-id` when it is a
    plain token, else a new one; the trace id of the current span (the HTTP server span, regsosek.service.instrument_http)."""
    rid = request.headers.get("x-request-id", "") if request is not None else ""
    if not TOKEN.fullmatch(rid):
        rid = uuid.uuid4().hex
    return rid, trace_id_of(current_trace_headers().get("traceparent"))


def of_request(request: Request | None, principal: Principal, action: str, object_type: str,
               object_id: object | None, *, outcome: str = "ok", detail: dict | None = None) -> Entry:
    rid, tid = request_ids(request)
    return entry(principal.subject, principal.role.value, action, object_type, object_id, outcome=outcome,
                 request_id=rid, trace_id=tid, detail=detail)


# ------------------------------------------------------------------ store (the shared audit_log table)

_INSERT = ("insert into audit_log (actor, role, action, object_type, object_id, outcome, request_id, trace_id, detail) "
           "values ($1, $2, $3, $4, $5, $6, $7, $8, $9)")


async def record(conn: asyncpg.Connection, e: Entry) -> None:
    """Writes the entry on `conn`: inside the caller's transaction when there is one."""
    await conn.execute(_INSERT, e.actor, e.role, e.action, e.object_type, e.object_id, e.outcome, e.request_id,
                       e.trace_id, e.detail)


async def record_read(request: Request, principal: Principal, action: str, object_type: str,
                      object_id: object | None, *, outcome: str = "ok", detail: dict | None = None) -> None:
    """A read of personal data: its own small insert on the service's pool."""
    from regsosek.service import runtime_of

    e = of_request(request, principal, action, object_type, object_id, outcome=outcome, detail=detail)
    async with runtime_of(request).pool.acquire() as conn:
        await record(conn, e)


async def query(conn: asyncpg.Connection, *, since: datetime | None = None, until: datetime | None = None,
                actor: str | None = None, object_id: str | None = None, action: str | None = None,
                limit: int = 100) -> list[dict]:
    rows = await conn.fetch(
        "select id, at, actor, role, action, object_type, object_id, outcome, request_id, trace_id, detail "
        "from audit_log where ($1::timestamptz is null or at >= $1) and ($2::timestamptz is null or at < $2) "
        "and ($3::text is null or actor = $3) and ($4::text is null or object_id = $4) "
        "and ($5::text is null or action = $5) order by at, id limit $6",
        since, until, actor, object_id, action, min(max(limit, 1), MAX_QUERY_ROWS))
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]


# ------------------------------------------------------------------ CLI

def _parse_time(value: str) -> datetime:
    if value.endswith(("d", "h")) and value[:-1].isdigit():  # 7d, 12h: that long ago
        n = int(value[:-1])
        return datetime.now(UTC) - (timedelta(days=n) if value.endswith("d") else timedelta(hours=n))
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


async def _cli(a: argparse.Namespace) -> list[dict]:
    from regsosek.settings import ServiceSettings

    dsn = a.dsn or ServiceSettings(service_name=a.service).dsn()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        from regsosek.db import init_connection

        await init_connection(conn)
        return await query(conn, since=a.since, until=a.until, actor=a.actor, object_id=a.object, action=a.action,
                           limit=a.limit)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regsosek.audit", description="Read a service's audit log")
    p.add_argument("--service", required=True, help="intake | verify | classify | notify (its database)")
    p.add_argument("--dsn", help="database URL (default: REGSOSEK_DATABASE_URL, else the local stack's)")
    p.add_argument("--since", type=_parse_time, help="ISO time, or 7d / 12h ago")
    p.add_argument("--until", type=_parse_time)
    p.add_argument("--actor")
    p.add_argument("--object")
    p.add_argument("--action")
    p.add_argument("--limit", type=int, default=100)
    a = p.parse_args(argv)
    for row in asyncio.run(_cli(a)):
        sys.stdout.write(json.dumps(row, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
