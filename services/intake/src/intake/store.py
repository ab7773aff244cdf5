"""Intake's database: submissions as received, their journey downstream, erasures. All of intake's SQL.

What was received is kept sealed (AES-256-GCM, regsosek.crypto; key id in every ciphertext,
`body_kid` beside it for rotation): `body_enc`. The clear `body` column only holds rows stored
before migration 004 until they are sealed (at start-up, or `python -m intake.rotate_keys`).
Bodies are sealed and opened here: what the store hands out and takes in is in clear."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import orjson

from intake.domain import (
    EarlierErasure,
    Erasure,
    ErasureState,
    Expiring,
    IntakeState,
    Journey,
    JourneyEntry,
    JourneyStep,
    Received,
    Step,
    StoredBody,
    Submission,
    SubmissionRecord,
)
from intake.registry_domain import ComplaintRecord, ComplaintView, RecordedOutcome, UpdateRecord
from regsosek import audit
from regsosek.contracts.complaints import Complaint, ComplaintOutcome
from regsosek.contracts.updates import FieldCheck
from regsosek.crypto import Keyring
from regsosek.envelope import new_event_id
from regsosek.telemetry import current_trace_headers, trace_id_of

# jsonb values travel as text (asyncpg would read a list of lists as a 2-D array). A row is not
# stored when an erasure its decision did not know of ($13: the erased families it knew) concerns it
# (its family, or for a roster a family of its SLS): see intake_state.
_INSERT_MANY = """
insert into submissions (submission_id, kind, sls_id, family_id, version, content_hash, body_enc, body_kid, warnings,
                         event_id, trace_id, submitted_by)
select id, kind, sls, fam, ver, hash, body, $12, warn::jsonb, ev, tr, sub
from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bytea[], $7::bytea[],
            $8::text[], $9::text[], $10::text[], $11::text[]) as t(id, kind, sls, fam, ver, hash, body, warn, ev, tr, sub)
where not exists (select 1 from erased_families e where (e.family_id = t.fam or (t.kind = 'roster' and e.sls_id = t.sls))
                  and e.family_id <> all($13::text[]))
on conflict (submission_id) do nothing
returning submission_id, event_id, received_at
"""

# One round trip: the shared erasure locks of the SLS (in one order, so submissions never wait for
# each other), the erased families among the submissions' and their rosters' SLS, and the stored
# submissions with their ids (none: one row of nulls). The locked side is the preserved side of the
# left join, so the locks are taken whether or not anything is stored.
_STATE = """
select l.locks, e.erased, s.submission_id, s.kind, s.sls_id, s.family_id, s.version, s.content_hash, s.event_id,
       s.received_at, s.warnings
from (select count(pg_advisory_xact_lock_shared($1, hashtext(x))) as locks
      from (select distinct x from unnest($2::text[]) x order by x) ordered) l
cross join (select array(select family_id from erased_families where family_id = any($3::text[])
                         or left(family_id, 14) = any($4::text[])) as erased) e
left join submissions s on s.submission_id = any($5::uuid[])
"""

_ERASURE_LOCK = 7316010  # advisory lock class: (this, hashtext(sls_id))


def _json(value) -> str:
    return orjson.dumps(value).decode()


class IntakeStore:
    """Intake's tables on one connection (the unit of work's, inside its transaction)."""

    def __init__(self, conn: asyncpg.Connection, keyring: Keyring) -> None:
        self.conn = conn
        self._ring = keyring

    # ------------------------------------------------------------ sealing

    def _seal(self, submission_id: UUID, document: dict | bytes) -> bytes:
        """The sealed body of a submission (a document, or its JSON); bound to its id (a ciphertext
        moved to another row does not open)."""
        return self._ring.seal(document if isinstance(document, bytes) else orjson.dumps(document),
                               aad=submission_id.bytes)

    def _open(self, submission_id: UUID, sealed: bytes) -> dict:
        return orjson.loads(self._ring.open(sealed, aad=submission_id.bytes))

    # ------------------------------------------------------------ submissions

    async def intake_state(self, subs: Sequence[Submission]) -> IntakeState:
        """What deciding on these submissions needs: the stored ones with their ids and the erased
        families among theirs and their rosters' SLS, in one statement that also takes shared locks
        on their SLS, so that no erasure commits between here and their insert (erasure_state).
        The statement reads with the snapshot it started with, from before an erasure it waited for
        committed: save_submissions does not store what such an erasure concerns, and the handler
        decides on it again (then with the erasure in view)."""
        rows = await self.conn.fetch(
            _STATE, _ERASURE_LOCK, [s.sls_id for s in subs], [s.family_id for s in subs if s.family_id],
            sorted({s.sls_id for s in subs if s.kind == "roster"}), [s.submission_id for s in subs])
        return IntakeState(earlier={r["submission_id"]: _received(r) for r in rows if r["submission_id"] is not None},
                           erased_families=frozenset(rows[0]["erased"]))

    async def save_submissions(self, subs: Sequence[Submission],
                               erased_known: frozenset[str] = frozenset()) -> dict[UUID, Received]:
        """Stores new submissions (body sealed) in one round trip; what was stored, by id. Left out:
        an id already stored (a concurrent request with it committed first), and a submission that
        an erasure concerns which its decision did not know of (`erased_known`: the erased families
        its state held)."""
        if not subs:
            return {}
        current = current_trace_headers()
        trace_ids = [trace_id_of((current if s.trace is None else s.trace).get("traceparent")) for s in subs]
        rows = await self.conn.fetch(
            _INSERT_MANY, [s.submission_id for s in subs], [s.kind for s in subs], [s.sls_id for s in subs],
            [s.family_id for s in subs], [s.version for s in subs], [s.content_hash for s in subs],
            [self._seal(s.submission_id, s.body) for s in subs], [_json(s.warnings) for s in subs],
            [new_event_id() for _ in subs], trace_ids, [s.submitted_by for s in subs],
            self._ring.current_kid, sorted(erased_known))
        by_id = {s.submission_id: s for s in subs}
        return {r["submission_id"]: _received_new(by_id[r["submission_id"]], r["event_id"], r["received_at"])
                for r in rows}

    # ------------------------------------------------------------ journey and status view

    async def save_steps(self, entries: Sequence[JourneyEntry]) -> None:
        """Journey steps, in one insert; a step already recorded (same event) is kept as it was."""
        # clock_timestamp() in order of arrival keeps the journey's order within one batch
        await self.conn.execute(
            "insert into journey (submission_id, step, detail, event_id, decision_seq, at) "
            "select s, st, d::jsonb, e, q, clock_timestamp() "
            "from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[]) "
            "with ordinality as t(s, st, d, e, q, n) order by n on conflict do nothing",
            [x.submission_id for x in entries], [x.step for x in entries], [_json(x.detail) for x in entries],
            [x.event_id for x in entries], [x.decision_seq for x in entries])

    async def journey(self, submission_id: UUID) -> Journey | None:
        sub = await self.conn.fetchrow(
            "select submission_id, kind, sls_id, family_id, version, trace_id, received_at, warnings "
            "from submissions where submission_id = $1", submission_id)
        if sub is None:
            return None
        steps = await self.conn.fetch(
            "select step, detail, decision_seq from journey where submission_id = $1 order by at, step", submission_id)
        return Journey(SubmissionRecord(**dict(sub)), [JourneyStep(**dict(s)) for s in steps])

    async def record_audit(self, entry: audit.Entry) -> None:
        """An audit entry (ids and codes only), in the unit of work's transaction."""
        await audit.record(self.conn, entry)

    # ------------------------------------------------------------ retention

    async def expiring_bodies(self, before: datetime, limit: int) -> list[Expiring]:
        """At most `limit` bodies received before `before` that may be final: rosters, resolutions
        and FKP results, and interviews with an eligibility or flagged step (domain.body_expires decides)."""
        candidates = await self.conn.fetch(
            "select s.submission_id, s.kind, s.received_at from submissions s "
            "where (s.body is not null or s.body_enc is not null) "
            "and s.received_at < $1 and (s.kind <> 'interview' or exists (select 1 from journey j where "
            "j.submission_id = s.submission_id and j.step in ('eligibility', 'flagged'))) "
            "order by s.received_at limit $2", before, limit)
        if not candidates:
            return []
        steps: dict[UUID, list[Step]] = {}
        for r in await self.conn.fetch("select submission_id, step, decision_seq from journey where submission_id = "
                                       "any($1::uuid[]) order by at, step", [c["submission_id"] for c in candidates]):
            steps.setdefault(r["submission_id"], []).append(Step(r["step"], r["decision_seq"]))
        return [Expiring(c["submission_id"], c["kind"], c["received_at"], steps.get(c["submission_id"], []))
                for c in candidates]

    async def empty_bodies(self, submission_ids: Sequence[UUID]) -> int:
        """Empties these bodies (the row, its hash and the journey stay); how many were emptied."""
        if not submission_ids:
            return 0
        status = await self.conn.execute(
            "update submissions set body = null, body_enc = null, body_kid = null, body_expired_at = now() "
            "where submission_id = any($1::uuid[]) and (body is not null or body_enc is not null)",
            list(submission_ids))
        return int(status.rsplit(" ", 1)[-1])

    # ------------------------------------------------------------ key rotation

    async def unsealed_or_stale(self) -> int:
        """Bodies still in clear (stored before migration 004) or sealed under another key than the current one."""
        return await self.conn.fetchval(
            "select (select count(*) from submissions where body is not null) + (select count(*) from submissions "
            "where body_enc is not null and body_kid <> $1)", self._ring.current_kid)

    async def reseal_batch(self, limit: int) -> int:
        """Seals (clear rows) or re-seals (rows under an older key) at most `limit` bodies under the current
        key, in one transaction; rows another instance is working on are skipped. Rows done."""
        ring = self._ring
        async with self.conn.transaction():
            rows = await self.conn.fetch("select submission_id, body, body_enc from submissions where body is not null "
                                         "order by submission_id limit $1 for update skip locked", limit)
            if not rows:
                rows = await self.conn.fetch(
                    "select submission_id, body, body_enc from submissions where body_enc is not null "
                    "and body_kid <> $1 order by submission_id limit $2 for update skip locked",
                    ring.current_kid, limit)
            if not rows:
                return 0
            sealed = [(r["submission_id"],
                       self._seal(r["submission_id"], r["body"]) if r["body"] is not None
                       else ring.reseal(r["body_enc"], aad=r["submission_id"].bytes)) for r in rows]
            await self.conn.executemany("update submissions set body = null, body_enc = $2, body_kid = $3 "
                                        "where submission_id = $1", [(i, b, ring.current_kid) for i, b in sealed])
            return len(rows)

    # ------------------------------------------------------------ erasure

    async def erasure_state(self, family_id: str) -> ErasureState:
        """What erasing the family needs. First takes the SLS's erasure lock: waits for submissions of
        the SLS in flight and holds new ones until the erasure commits (they then see the family
        erased). Then its earlier erasure, else every body that may name it (its interviews,
        resolutions and FKP results, its SLS's rosters), opened and locked for update."""
        sls_id = family_id[:14]
        await self.conn.execute("select pg_advisory_xact_lock($1, hashtext($2))", _ERASURE_LOCK, sls_id)
        earlier = await self.conn.fetchrow(
            "select erasure_id, reason, erased_at from erased_families where family_id = $1", family_id)
        if earlier is not None:
            return ErasureState(EarlierErasure(**dict(earlier)), [])
        rows = await self.conn.fetch(
            "select submission_id, kind, body, body_enc from submissions where (family_id = $1 or "
            "(kind = 'roster' and sls_id = $2)) and (body is not null or body_enc is not null) for update",
            family_id, sls_id)
        return ErasureState(None, [StoredBody(r["submission_id"], r["kind"], r["body"] if r["body"] is not None
                                              else self._open(r["submission_id"], r["body_enc"])) for r in rows])

    async def save_erasure(self, erasure: Erasure, redacted: Sequence[StoredBody]) -> datetime:
        """Marks the family erased (later submissions are refused) and stores the redacted bodies,
        sealed again under the current key. The erasure time."""
        erased_at = await self.conn.fetchval(
            "insert into erased_families (family_id, sls_id, erasure_id, reason, reference, erased_by) "
            "values ($1, $2, $3, $4, $5, $6) returning erased_at", erasure.family_id, erasure.sls_id,
            erasure.erasure_id, erasure.reason, erasure.reference, erasure.erased_by)
        if redacted:
            await self.conn.executemany(
                "update submissions set body = null, body_enc = $2, body_kid = $3, identifiers_erased_at = now() "
                "where submission_id = $1",
                [(b.submission_id, self._seal(b.submission_id, b.document), self._ring.current_kid) for b in redacted])
        return erased_at


    # ------------------------------------------------------------ the living registry (intake.registry_domain)

    async def family_member_niks(self, family_id: str) -> dict[int, str]:
        """The NIKs by form row of the family's latest interview kept with its body (opened): the base of
        the identity list an update of the family gets (intake.domain.update_identities)."""
        row = await self.conn.fetchrow(
            "select submission_id, body, body_enc from submissions where family_id = $1 and kind = 'interview' "
            "and (body is not null or body_enc is not null) order by version desc, received_at desc limit 1", family_id)
        if row is None:
            return {}
        doc = row["body"] if row["body"] is not None else self._open(row["submission_id"], row["body_enc"])
        if isinstance(doc, str):
            doc = orjson.loads(doc)
        return {m["line_no"]: m["nik"] for m in doc.get("members", []) if m.get("nik")}

    async def update_record(self, update_id: UUID) -> UpdateRecord | None:
        """An update (its row locked: two checks of one update are decided one after the other), its body
        opened, and its field check's id if it had one."""
        row = await self.conn.fetchrow(
            "select s.family_id, s.body, s.body_enc, c.check_id from submissions s left join update_checks c "
            "on c.update_id = s.submission_id where s.submission_id = $1 and s.kind = 'update' for update of s",
            update_id)
        if row is None:
            return None
        return UpdateRecord(update_id, row["family_id"], self._body(update_id, row), row["check_id"])

    async def save_field_check(self, check: FieldCheck) -> None:
        await self.conn.execute(
            "insert into update_checks (update_id, check_id, family_id, outcome, checked_on, checked_by) "
            "values ($1, $2, $3, $4, $5, $6)", check.update_id, check.submission_id, check.family_id,
            check.outcome.value, check.checked_on, check.checked_by)

    async def save_complaint(self, c: Complaint) -> None:
        await self.conn.execute(
            "insert into complaints (complaint_id, family_id, sls_id, complainant, subject, programme, status, "
            "filed_at) values ($1, $2, $3, $4, $5, $6, 'filed', $7) on conflict do nothing", c.submission_id,
            c.family_id, c.sls_id, c.complainant.value, c.subject.value, c.programme, c.filed_at)

    async def complaint_record(self, complaint_id: UUID, *, lock: bool = True) -> ComplaintRecord | None:
        """A complaint and its outcomes' ids; locked for the transaction unless only read."""
        row = await self.conn.fetchrow(
            "select complaint_id, family_id, sls_id, complainant, subject, programme, status, filed_at, "
            "array(select o.submission_id from complaint_outcomes o where o.complaint_id = c.complaint_id "
            "order by o.recorded_at) as outcome_ids from complaints c where complaint_id = $1"
            + (" for update" if lock else ""), complaint_id)
        return None if row is None else ComplaintRecord(**{**dict(row), "outcome_ids": tuple(row["outcome_ids"])})

    async def save_complaint_outcome(self, o: ComplaintOutcome, status: str) -> None:
        await self.conn.execute(
            "with o as (insert into complaint_outcomes (submission_id, complaint_id, outcome, decided_on) "
            "values ($1, $2, $3, $4)) update complaints set status = $5, updated_at = now() where complaint_id = $2",
            o.submission_id, o.complaint_id, o.outcome.value, o.decided_on, status)

    async def complaint_view(self, complaint_id: UUID) -> ComplaintView | None:
        """A complaint's status: its record, and each outcome with its reason (from the sealed body) and,
        for a correction, the journey of the change."""
        record = await self.complaint_record(complaint_id, lock=False)
        if record is None:
            return None
        rows = await self.conn.fetch(
            "select o.submission_id, o.outcome, o.decided_on, s.body, s.body_enc from complaint_outcomes o "
            "join submissions s using (submission_id) where o.complaint_id = $1 order by o.recorded_at", complaint_id)
        outcomes = []
        for r in rows:
            journey = await self.journey(r["submission_id"])
            outcomes.append(RecordedOutcome(
                r["submission_id"], r["outcome"], r["decided_on"], (self._body(r["submission_id"], r) or {}).get(
                    "reason", ""), [{"step": s.step, **s.detail} for s in journey.steps] if journey else []))
        return ComplaintView(record, outcomes)

    def _body(self, submission_id: UUID, row: asyncpg.Record) -> dict | None:
        if row["body_enc"] is not None:
            return self._open(submission_id, row["body_enc"])
        return row["body"]


def _received(r: asyncpg.Record) -> Received:
    return Received(r["submission_id"], r["kind"], r["sls_id"], r["family_id"], r["version"], bytes(r["content_hash"]),
                    r["event_id"], r["received_at"], r["warnings"])


def _received_new(s: Submission, event_id: str, received_at: datetime) -> Received:
    return Received(s.submission_id, s.kind, s.sls_id, s.family_id, s.version, s.content_hash, event_id, received_at,
                    s.warnings)
