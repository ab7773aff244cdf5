"""Intake's database: submissions as received, and their journey downstream.

What was received is kept sealed (AES-256-GCM, regsosek.crypto; key id in every ciphertext,
`body_kid` beside it for rotation): `body_enc`. The clear `body` column only holds rows stored
before migration 004 until they are sealed (at start-up, or `python -m intake.rotate_keys`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

import asyncpg
import orjson

from regsosek.contracts import Contract
from regsosek.crypto import Keyring
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


class FamilyWasErased(Exception):
    """The submission is about a family whose identifiers were erased (410): not accepted again."""


# Set by intake.app: the keys that seal what is received.
keyring: Keyring | None = None


def _ring() -> Keyring:
    assert keyring is not None, "intake.store.keyring is set by intake.app.definition"
    return keyring


def seal_body(submission_id: UUID, document: dict) -> bytes:
    """The sealed body of a submission; bound to its id (a ciphertext moved to another row does not open)."""
    return _ring().seal(orjson.dumps(document), aad=submission_id.bytes)


def open_body(submission_id: UUID, sealed: bytes) -> dict:
    return orjson.loads(_ring().open(sealed, aad=submission_id.bytes))


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
insert into submissions (submission_id, kind, sls_id, family_id, version, content_hash, body_enc, body_kid, warnings,
                         event_id, trace_id, submitted_by)
select id, kind, sls, fam, ver, hash, body, $12, warn::jsonb, ev, tr, sub
from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bytea[], $7::bytea[],
            $8::text[], $9::text[], $10::text[], $11::text[]) as t(id, kind, sls, fam, ver, hash, body, warn, ev, tr, sub)
on conflict (submission_id) do nothing
returning submission_id, event_id, received_at
"""


def _json(value) -> str:
    return orjson.dumps(value).decode()


async def accept(uow: UnitOfWork, submission: Submission) -> Receipt:
    """Store and publish a submission once; the same id again returns the first receipt."""
    (result,) = await accept_many(uow, [submission])
    if isinstance(result, (ContentConflict, FamilyWasErased)):
        raise result
    return result


async def accept_many(uow: UnitOfWork, subs: list[Submission]) -> list[Receipt | ContentConflict | FamilyWasErased]:
    """Store and publish many submissions in one round trip each way; for each, in order,
    its receipt (the first one again for a repeat), a ContentConflict, or FamilyWasErased (a
    submission about an erased family: refused, nothing stored or published)."""
    if not subs:
        return []
    await lock_sls_against_erasure(uow.conn, [s.sls_id for s in subs])
    erased = await erased_among(uow.conn, [s.family_id for s in subs if s.family_id])
    if erased:
        accepted = await accept_many(uow, [s for s in subs if s.family_id not in erased])
        it = iter(accepted)
        return [FamilyWasErased(s.family_id) if s.family_id in erased else next(it) for s in subs]
    subs = await _without_erased_families(uow.conn, subs)
    trace_id = trace_id_of(current_trace_headers().get("traceparent"))
    event_ids = [str(uuid4()) for _ in subs]
    inserted = {
        r["submission_id"]: r for r in await uow.conn.fetch(
            _INSERT_MANY, [s.submission_id for s in subs], [s.kind for s in subs], [s.sls_id for s in subs],
            [s.family_id for s in subs], [s.version for s in subs], [s.content_hash for s in subs],
            [seal_body(s.submission_id, s.document) for s in subs], [_json(s.warnings) for s in subs], event_ids,
            [trace_id] * len(subs), [s.submitted_by for s in subs], _ring().current_kid,
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


async def expire_bodies(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Retention: empties the body of at most `limit` submissions received before `before` whose
    journey is final (domain.body_expires); the row, its hash and the journey stay."""
    from intake.domain import Step, body_expires

    candidates = await conn.fetch(
        "select s.submission_id, s.kind, s.received_at from submissions s "
        "where (s.body is not null or s.body_enc is not null) "
        "and s.received_at < $1 and (s.kind <> 'interview' or exists (select 1 from journey j where "
        "j.submission_id = s.submission_id and j.step in ('eligibility', 'flagged'))) "
        "order by s.received_at limit $2", before, limit)
    if not candidates:
        return 0
    steps: dict[UUID, list[Step]] = {}
    for r in await conn.fetch("select submission_id, step, decision_seq from journey where submission_id = "
                              "any($1::uuid[]) order by at, step", [c["submission_id"] for c in candidates]):
        steps.setdefault(r["submission_id"], []).append(Step(r["step"], r["decision_seq"]))
    expired = [c["submission_id"] for c in candidates
               if body_expires(c["kind"], steps.get(c["submission_id"], []), c["received_at"], before)]
    if not expired:
        return 0
    status = await conn.execute("update submissions set body = null, body_enc = null, body_kid = null, "
                                "body_expired_at = now() where submission_id = any($1::uuid[]) "
                                "and (body is not null or body_enc is not null)", expired)
    return int(status.rsplit(" ", 1)[-1])


# ---------------------------------------------------------------- sealing and key rotation


async def unsealed_or_stale(conn: asyncpg.Connection) -> int:
    """Bodies still in clear (stored before migration 004) or sealed under another key than the current one."""
    return await conn.fetchval(
        "select (select count(*) from submissions where body is not null) + (select count(*) from submissions "
        "where body_enc is not null and body_kid <> $1)", _ring().current_kid)


async def reseal_batch(conn: asyncpg.Connection, limit: int) -> int:
    """Seals (clear rows) or re-seals (rows under an older key) at most `limit` bodies under the current
    key, in one transaction; rows another instance is working on are skipped. Rows done."""
    ring = _ring()
    async with conn.transaction():
        rows = await conn.fetch("select submission_id, body, body_enc from submissions where body is not null "
                                "order by submission_id limit $1 for update skip locked", limit)
        if not rows:
            rows = await conn.fetch("select submission_id, body, body_enc from submissions where body_enc is not null "
                                    "and body_kid <> $1 order by submission_id limit $2 for update skip locked",
                                    ring.current_kid, limit)
        if not rows:
            return 0
        sealed = [(r["submission_id"],
                   seal_body(r["submission_id"], r["body"]) if r["body"] is not None
                   else ring.reseal(r["body_enc"], aad=r["submission_id"].bytes)) for r in rows]
        await conn.executemany("update submissions set body = null, body_enc = $2, body_kid = $3 "
                               "where submission_id = $1", [(i, b, ring.current_kid) for i, b in sealed])
        return len(rows)


# ---------------------------------------------------------------- erasure


_ERASURE_LOCK = 7316010  # advisory lock class: (this, hashtext(sls_id))


async def lock_sls_for_erasure(conn: asyncpg.Connection, sls_id: str) -> None:
    """An erasure of a family of this SLS: waits for submissions of the SLS in flight, and holds
    new ones until it commits (they then see the family erased)."""
    await conn.execute("select pg_advisory_xact_lock($1, hashtext($2))", _ERASURE_LOCK, sls_id)


async def lock_sls_against_erasure(conn: asyncpg.Connection, sls_ids: list[str]) -> None:
    """Submissions of these SLS: shared locks (submissions never wait for each other), taken in one
    order, so an erasure cannot commit between their erased-family check and their insert."""
    await conn.execute(
        "select count(pg_advisory_xact_lock_shared($1, hashtext(s))) from (select distinct s from unnest($2::text[]) s "
        "order by s) ordered", _ERASURE_LOCK, sls_ids)


async def _without_erased_families(conn: asyncpg.Connection, subs: list[Submission]) -> list[Submission]:
    """A roster received after an erasure that still lists the erased family is stored without that
    family's identifiers (domain.redact_family): an erasure is not undone by the next roster. Its
    content hash stays that of what was received, so a repeat still gets its receipt."""
    from dataclasses import replace

    from intake.domain import redact_family

    rosters = sorted({s.sls_id for s in subs if s.kind == "roster"})
    if not rosters:
        return subs
    erased: dict[str, list[str]] = {}
    for r in await conn.fetch("select family_id from erased_families where left(family_id, 14) = any($1::text[])",
                              rosters):
        erased.setdefault(r["family_id"][:14], []).append(r["family_id"])
    if not erased:
        return subs
    out = []
    for s in subs:
        doc = s.document
        for family_id in erased.get(s.sls_id, []) if s.kind == "roster" else []:
            doc = redact_family("roster", doc, family_id)
        out.append(s if doc is s.document else replace(s, document=doc))
    return out


async def erased_among(conn: asyncpg.Connection, family_ids: list[str]) -> set[str]:
    if not family_ids:
        return set()
    return {r["family_id"] for r in await conn.fetch(
        "select family_id from erased_families where family_id = any($1::text[])", family_ids)}


async def earlier_erasure(conn: asyncpg.Connection, family_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("select erasure_id, reason, erased_at from erased_families where family_id = $1",
                               family_id)


async def erase_family(conn: asyncpg.Connection, family_id: str, sls_id: str, erasure_id: UUID, reason: str,
                       reference: str | None, erased_by: str, redact) -> tuple[datetime, dict[str, int]]:
    """Erases the family's identifiers from every body intake keeps (its interviews, resolutions and
    FKP results, and its entry in its SLS's rosters): each body is opened, `redact(kind, document)`
    (intake.domain.redact_family) removes them, and it is sealed again under the current key. Marks
    the family erased (later submissions are refused). Caller holds the transaction; the family's
    SLS rows are locked. Returns the erasure time and bodies changed per kind (counts only)."""
    erased_at = await conn.fetchval(
        "insert into erased_families (family_id, sls_id, erasure_id, reason, reference, erased_by) "
        "values ($1, $2, $3, $4, $5, $6) returning erased_at", family_id, sls_id, erasure_id, reason, reference,
        erased_by)
    rows = await conn.fetch(
        "select submission_id, kind, body, body_enc from submissions where (family_id = $1 or "
        "(kind = 'roster' and sls_id = $2)) and (body is not null or body_enc is not null) for update",
        family_id, sls_id)
    changed: dict[str, int] = {}
    updates = []
    for r in rows:
        doc = r["body"] if r["body"] is not None else open_body(r["submission_id"], r["body_enc"])
        redacted = redact(r["kind"], doc)
        if redacted == doc:
            continue
        updates.append((r["submission_id"], seal_body(r["submission_id"], redacted), _ring().current_kid))
        changed[r["kind"]] = changed.get(r["kind"], 0) + 1
    if updates:
        await conn.executemany("update submissions set body = null, body_enc = $2, body_kid = $3, "
                               "identifiers_erased_at = now() where submission_id = $1", updates)
    return erased_at, changed
