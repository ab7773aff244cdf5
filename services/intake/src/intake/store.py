"""Intake's database: submissions as received, and their journey downstream."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

import asyncpg
import orjson

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


@dataclass(frozen=True)
class Submission:
    """A validated submission ready to be stored and published."""

    kind: str
    submission_id: UUID
    sls_id: str
    family_id: str | None
    version: int | None
    content_hash: bytes
    document: dict
    data: Contract
    topic: Topic
    subject: str
    submitted_by: str
    warnings: list[dict]


# jsonb values travel as text (asyncpg would read a list of lists as a 2-D array)
_INSERT_MANY = """
insert into submissions (submission_id, kind, sls_id, family_id, version, content_hash, body, warnings,
                         event_id, trace_id, submitted_by)
select id, kind, sls, fam, ver, hash, body::jsonb, warn::jsonb, ev, tr, sub
from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bytea[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[]) as t(id, kind, sls, fam, ver, hash, body, warn, ev, tr, sub)
on conflict (submission_id) do nothing
returning submission_id, event_id, received_at
"""


def _json(value) -> str:
    return orjson.dumps(value).decode()


async def accept(uow: UnitOfWork, submission: Submission) -> Receipt:
    """Store and publish a submission once; the same id again returns the first receipt."""
    (result,) = await accept_many(uow, [submission])
    if isinstance(result, ContentConflict):
        raise result
    return result


async def accept_many(uow: UnitOfWork, subs: list[Submission]) -> list[Receipt | ContentConflict]:
    """Store and publish many submissions in one round trip each way; for each, in order,
    its receipt (the first one again for a repeat) or a ContentConflict."""
    if not subs:
        return []
    trace_id = trace_id_of(current_trace_headers().get("traceparent"))
    event_ids = [str(uuid4()) for _ in subs]
    inserted = {
        r["submission_id"]: r for r in await uow.conn.fetch(
            _INSERT_MANY, [s.submission_id for s in subs], [s.kind for s in subs], [s.sls_id for s in subs],
            [s.family_id for s in subs], [s.version for s in subs], [s.content_hash for s in subs],
            [_json(s.document) for s in subs], [_json(s.warnings) for s in subs], event_ids, [trace_id] * len(subs),
            [s.submitted_by for s in subs],
        )
    }
    earlier = {}
    missing = [s.submission_id for s in subs if s.submission_id not in inserted]
    if missing:
        earlier = {r["submission_id"]: r for r in await uow.conn.fetch(
            "select submission_id, kind, sls_id, family_id, version, content_hash, event_id, received_at, warnings "
            "from submissions where submission_id = any($1::uuid[])", missing)}
    out: list[Receipt | ContentConflict] = []
    first_in_batch: dict[UUID, Submission] = {}
    for s in subs:
        row = inserted.get(s.submission_id)
        if row is None:
            first = earlier[s.submission_id]
        elif s.submission_id not in first_in_batch:
            first_in_batch[s.submission_id] = s
            uow.outbox.publish(s.topic, s.sls_id, s.data, subject=s.subject, event_id=row["event_id"])
            out.append(Receipt(s.submission_id, s.kind, s.sls_id, s.family_id, s.version, row["event_id"],
                               row["received_at"], s.warnings, False))
            continue
        else:  # the same id twice in one batch: compare with the one stored
            f = first_in_batch[s.submission_id]
            first = {"kind": f.kind, "sls_id": f.sls_id, "family_id": f.family_id, "version": f.version,
                     "content_hash": f.content_hash, "event_id": row["event_id"],
                     "received_at": row["received_at"], "warnings": f.warnings}
        if first["content_hash"] != s.content_hash or first["kind"] != s.kind:
            out.append(ContentConflict(str(s.submission_id)))
        else:
            out.append(Receipt(s.submission_id, first["kind"], first["sls_id"], first["family_id"], first["version"],
                               first["event_id"], first["received_at"], first["warnings"], True))
    return out


def record_step(uow: UnitOfWork, submission_id: UUID, step: str, detail: dict, event_id: str,
                decision_seq: int = 0) -> None:
    """A step of a submission's journey; the batch's steps are written together at commit."""
    steps = uow.cache.setdefault("journey", [])
    steps.append((submission_id, step, _json(detail), event_id, decision_seq))
    uow.defer("journey", lambda: _write_steps(uow.conn, steps))


async def _write_steps(conn: asyncpg.Connection, steps: list[tuple]) -> None:
    # clock_timestamp() in order of arrival keeps the journey's order within one batch
    await conn.execute(
        "insert into journey (submission_id, step, detail, event_id, decision_seq, at) "
        "select s, st, d::jsonb, e, q, clock_timestamp() "
        "from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[]) "
        "with ordinality as t(s, st, d, e, q, n) order by n on conflict do nothing",
        [x[0] for x in steps], [x[1] for x in steps], [x[2] for x in steps], [x[3] for x in steps],
        [x[4] for x in steps],
    )
    steps.clear()


async def journey(conn: asyncpg.Connection, submission_id: UUID) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    sub = await conn.fetchrow(
        "select submission_id, kind, sls_id, family_id, version, event_id, trace_id, received_at, warnings "
        "from submissions where submission_id = $1", submission_id,
    )
    steps = await conn.fetch(
        "select step, detail, decision_seq, at from journey where submission_id = $1 order by at, step", submission_id
    )
    return sub, steps
