"""Intake's database: submissions as received, and their journey downstream."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

import asyncpg

from regsosek.contracts import Contract
from regsosek.messaging import UnitOfWork
from regsosek.telemetry import current_trace_headers, trace_id_of
from regsosek.topics import Topic


@dataclass(frozen=True)
class Receipt:
    submission_id: UUID
    kind: str
    sls_id: str
    family_id: str | None
    version: int | None
    event_id: str
    received_at: datetime
    warnings: list
    replayed: bool

    def as_dict(self) -> dict:
        return {
            "submission_id": str(self.submission_id), "kind": self.kind, "sls_id": self.sls_id,
            "family_id": self.family_id, "version": self.version, "event_id": self.event_id,
            "received_at": self.received_at.isoformat(), "warnings": self.warnings,
            "status": "duplicate_of_earlier_receipt" if self.replayed else "accepted",
        }


class ContentConflict(Exception):
    """The submission id was used before for different content."""


_INSERT = """
insert into submissions (submission_id, kind, sls_id, family_id, version, content_hash, body, warnings,
                         event_id, trace_id, submitted_by)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
on conflict (submission_id) do nothing
returning received_at
"""


async def accept(
    uow: UnitOfWork, *, kind: str, submission_id: UUID, sls_id: str, family_id: str | None, version: int | None,
    content_hash: bytes, document: dict, data: Contract, topic: Topic, subject: str, submitted_by: str,
    warnings: list[dict],
) -> Receipt:
    """Store and publish a submission once; the same id again returns the first receipt."""
    event_id = str(uuid4())
    trace_id = trace_id_of(current_trace_headers().get("traceparent"))
    received_at = await uow.conn.fetchval(
        _INSERT, submission_id, kind, sls_id, family_id, version, content_hash, document, warnings,
        event_id, trace_id, submitted_by,
    )
    if received_at is not None:
        uow.outbox.publish(topic, sls_id, data, subject=subject, event_id=event_id)
        return Receipt(submission_id, kind, sls_id, family_id, version, event_id, received_at, warnings, False)
    row = await uow.conn.fetchrow(
        "select kind, sls_id, family_id, version, content_hash, event_id, received_at, warnings "
        "from submissions where submission_id = $1", submission_id,
    )
    if row["content_hash"] != content_hash or row["kind"] != kind:
        raise ContentConflict(str(submission_id))
    return Receipt(submission_id, row["kind"], row["sls_id"], row["family_id"], row["version"], row["event_id"],
                   row["received_at"], row["warnings"], True)


async def record_step(conn: asyncpg.Connection, submission_id: UUID, step: str, detail: dict, event_id: str) -> None:
    await conn.execute(
        "insert into journey (submission_id, step, detail, event_id) values ($1, $2, $3, $4) "
        "on conflict do nothing", submission_id, step, detail, event_id,
    )


async def journey(conn: asyncpg.Connection, submission_id: UUID) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    sub = await conn.fetchrow(
        "select submission_id, kind, sls_id, family_id, version, event_id, trace_id, received_at, warnings "
        "from submissions where submission_id = $1", submission_id,
    )
    steps = await conn.fetch(
        "select step, detail, at from journey where submission_id = $1 order by at, step", submission_id
    )
    return sub, steps
