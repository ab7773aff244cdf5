"""Verify's database: rosters (with history), interviews and their state, NIK claims,
the history of published outcomes, and per-SLS progress."""

from __future__ import annotations

import hashlib
import hmac

import asyncpg

from regsosek.contracts import FamilyInterview, RosterStatus, SlsRoster
from regsosek.messaging import UnitOfWork

from verify.domain import Decision, Key, Progress, Roster, RosterEntry

SLS_LOCK = 7316003  # advisory lock namespace: one SLS's rosters, interviews and resolutions apply one at a time


async def lock_sls_once(uow: UnitOfWork, sls_id: str) -> None:
    """lock_sls, skipped when this transaction already holds the SLS's lock (held to commit)."""
    key = ("sls_lock", sls_id)
    if key not in uow.cache:
        await lock_sls(uow.conn, sls_id)
        uow.cache[key] = True


async def lock_sls(conn: asyncpg.Connection, sls_id: str) -> None:
    """Serialises work on one SLS until the transaction ends. Without it, two instances could
    take a roster and an interview of the same SLS at once (they are on different topics, so
    possibly different consumers): the interview sees no roster, the roster sees no held
    interview, and the interview would wait for the hold timeout."""
    await conn.execute("select pg_advisory_xact_lock($1, hashtext($2))", SLS_LOCK, sls_id)


async def save_roster(conn: asyncpg.Connection, r: SlsRoster) -> int:
    revision = await conn.fetchval(
        """insert into rosters (sls_id, revision, submission_id, officer_id, confirmed_by, confirmed_at)
           values ($1, 1, $2, $3, $4, $5)
           on conflict (sls_id) do update set revision = rosters.revision + 1, submission_id = excluded.submission_id,
             officer_id = excluded.officer_id, confirmed_by = excluded.confirmed_by,
             confirmed_at = excluded.confirmed_at, received_at = now()
           returning revision""",
        r.sls_id, r.submission_id, r.officer_id, r.confirmed_by, r.confirmed_at,
    )
    await conn.execute("insert into roster_history (sls_id, revision, submission_id, body) values ($1, $2, $3, $4)",
                       r.sls_id, revision, r.submission_id, r.model_dump(mode="json"))
    await conn.execute("delete from roster_families where sls_id = $1", r.sls_id)
    await conn.executemany(
        "insert into roster_families (sls_id, building_no, family_no, kk_number, member_count, status) "
        "values ($1, $2, $3, $4, $5, $6)",
        [(r.sls_id, f.building_no, f.family_no, f.kk_number, f.member_count, f.status.value) for f in r.families],
    )
    return revision


async def roster(conn: asyncpg.Connection, sls_id: str) -> Roster | None:
    head = await conn.fetchrow("select revision, submission_id from rosters where sls_id = $1", sls_id)
    if head is None:
        return None
    rows = await conn.fetch(
        "select building_no, family_no, kk_number, member_count, status from roster_families where sls_id = $1 "
        "order by building_no, family_no", sls_id
    )
    entries = [RosterEntry(r["building_no"], r["family_no"], r["kk_number"], r["member_count"], RosterStatus(r["status"]))
               for r in rows]
    return Roster(sls_id, head["revision"], head["submission_id"], entries)


async def current(conn: asyncpg.Connection, family_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select submission_id, version, state, body, decision_seq from interviews where family_id = $1 for update",
        family_id,
    )


async def save_held(conn: asyncpg.Connection, iv: FamilyInterview, traceparent: str | None) -> None:
    await conn.execute(
        """insert into interviews (family_id, sls_id, submission_id, version, body, state, held_since, traceparent)
           values ($1, $2, $3, $4, $5, 'held', now(), $6)
           on conflict (family_id) do update set submission_id = excluded.submission_id, version = excluded.version,
             body = excluded.body, state = 'held', outcome = null, detail = null, held_since = now(),
             decided_at = null, updated_at = now(), traceparent = excluded.traceparent,
             roster_building_no = null, roster_family_no = null, roster_revision = null""",
        iv.family_id, iv.location.sls_id, iv.submission_id, iv.version, iv.model_dump(mode="json"), traceparent,
    )


async def set_state(conn: asyncpg.Connection, iv: FamilyInterview, d: Decision, *, cause: str,
                    matched: Key | None, roster_revision: int | None) -> int:
    """The family's new outcome under its next decision sequence, and a line in its history (one
    statement); returns that sequence. The family's row is locked (see `current`), so numbers
    never repeat or go back."""
    building, family = matched or (None, None)
    return await conn.fetchval(
        """with upd as (
             update interviews set state = $2, outcome = $3, detail = $4, held_since = null, decided_at = now(),
               updated_at = now(), roster_building_no = $5, roster_family_no = $6, roster_revision = $7,
               decision_seq = decision_seq + 1
             where family_id = $1 returning decision_seq),
           hist as (
             insert into verification_history (family_id, sls_id, submission_id, version, state, outcome, detail,
                                               cause, roster_revision, decision_seq)
             select $1, $8, $9, $10, $2, $3, $4, $11, $7, upd.decision_seq from upd)
           select decision_seq from upd""",
        iv.family_id, d.state, d.code, d.detail, building, family, roster_revision,
        iv.location.sls_id, iv.submission_id, iv.version, cause,
    )


async def add_history(conn: asyncpg.Connection, iv: FamilyInterview, d: Decision, *, cause: str,
                      roster_revision: int | None, decision_seq: int) -> None:
    await conn.execute(
        "insert into verification_history (family_id, sls_id, submission_id, version, state, outcome, detail, cause, "
        "roster_revision, decision_seq) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        iv.family_id, iv.location.sls_id, iv.submission_id, iv.version, d.state, d.code, d.detail, cause,
        roster_revision, decision_seq,
    )


async def set_match(conn: asyncpg.Connection, family_id: str, matched: Key | None, roster_revision: int) -> None:
    """A later roster revision, same outcome: only which entry the family accounts for is refreshed."""
    building, family = matched or (None, None)
    await conn.execute(
        "update interviews set roster_building_no = $2, roster_family_no = $3, roster_revision = $4 "
        "where family_id = $1", family_id, building, family, roster_revision,
    )


async def interviews_in(conn: asyncpg.Connection, sls_id: str) -> list[asyncpg.Record]:
    """Every interview of the SLS, held ones first in arrival order, then the decided ones."""
    return await conn.fetch(
        "select family_id, state, outcome, detail, body, traceparent from interviews where sls_id = $1 "
        "order by state <> 'held', held_since, decided_at, family_id for update",
        sls_id,
    )


async def expired_holds(conn: asyncpg.Connection, seconds: float, limit: int = 500) -> list[asyncpg.Record]:
    return await conn.fetch(
        "select family_id, sls_id from interviews where state = 'held' and held_since < now() - make_interval(secs => $1) "
        "order by held_since limit $2", seconds, limit,
    )


async def expired_hold(conn: asyncpg.Connection, family_id: str, seconds: float) -> asyncpg.Record | None:
    """The family's interview, locked, if it is still held and has been for longer than `seconds`."""
    return await conn.fetchrow(
        "select body, traceparent from interviews where family_id = $1 and state = 'held' "
        "and held_since < now() - make_interval(secs => $2) for update", family_id, seconds,
    )


def nik_hashes(key: str, iv: FamilyInterview) -> dict[bytes, int]:
    k = key.encode()
    return {hmac.new(k, m.nik.encode(), hashlib.sha256).digest(): m.line_no for m in iv.members if m.nik}


async def claim_niks(conn: asyncpg.Connection, family_id: str, hashes: dict[bytes, int]) -> list[int]:
    """Claim each NIK for this family; returns member lines whose NIK another family holds.

    The primary key makes this nation-wide and race-free: of two families claiming a NIK
    at the same moment, the second insert waits for the first commit and loses.
    """
    row = await conn.fetchrow(
        """with mine as (select nik_hash from nik_claims where family_id = $1),
                dropped as (delete from nik_claims where family_id = $1 and not (nik_hash = any($2::bytea[]))),
                claimed as (insert into nik_claims (nik_hash, family_id) select unnest($2::bytea[]), $1
                            on conflict do nothing returning nik_hash)
           select array(select nik_hash from mine) as mine, array(select nik_hash from claimed) as claimed""",
        family_id, list(hashes),
    )
    # Not claimed now and not ours before: another family holds it (or just took it: the
    # insert waited for that transaction and found the row).
    held = set(row["mine"]) | set(row["claimed"])
    return sorted(line for h, line in hashes.items() if h not in held)


async def save_resolution(conn: asyncpg.Connection, r, version: int) -> None:
    await conn.execute(
        "insert into resolutions (submission_id, family_id, decision, supervisor_id, reason, decided_at, version) "
        "values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing",
        r.submission_id, r.family_id, r.decision.value, r.supervisor_id, r.reason, r.decided_at, version,
    )


# ---------------------------------------------------------------- progress


async def decided_in(conn: asyncpg.Connection, sls_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "select state, roster_building_no, roster_family_no from interviews where sls_id = $1 and state <> 'held'",
        sls_id,
    )


async def save_progress(conn: asyncpg.Connection, sls_id: str, revision: int, p: Progress) -> None:
    await conn.execute(
        """insert into sls_progress (sls_id, roster_revision, expected, interviewed, verified, flagged, absent,
                                     outstanding, complete)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           on conflict (sls_id) do update set roster_revision = excluded.roster_revision, expected = excluded.expected,
             interviewed = excluded.interviewed, verified = excluded.verified, flagged = excluded.flagged,
             absent = excluded.absent, outstanding = excluded.outstanding, complete = excluded.complete,
             updated_at = now()""",
        sls_id, revision, p.expected, p.interviewed, p.verified, p.flagged, p.absent, p.outstanding, p.complete,
    )


async def record_completion(conn: asyncpg.Connection, sls_id: str, revision: int, p: Progress) -> bool:
    """True the first time this SLS is complete under this roster revision."""
    return bool(await conn.fetchval(
        "insert into sls_completions (sls_id, roster_revision, expected, interviewed, verified, flagged, absent) "
        "values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing returning true",
        sls_id, revision, p.expected, p.interviewed, p.verified, p.flagged, p.absent,
    ))


async def progress_by_prefix(conn: asyncpg.Connection, prefix: str, length: int) -> list[asyncpg.Record]:
    """Per group (the first `length` digits of the SLS id): rostered and complete SLS, summed counts and held
    interviews (of SLS whose roster has not come)."""
    return await conn.fetch(
        """with p as (
             select left(sls_id, $2) as grp, count(*) as sls, count(*) filter (where complete) as sls_complete,
                    sum(expected) as expected, sum(interviewed) as interviewed, sum(verified) as verified,
                    sum(flagged) as flagged, sum(absent) as absent, sum(outstanding) as outstanding
             from sls_progress where sls_id like $1 || '%' group by 1),
           h as (
             select left(sls_id, $2) as grp, count(*) as held
             from interviews where state = 'held' and sls_id like $1 || '%' group by 1)
           select coalesce(p.grp, h.grp) as grp, coalesce(p.sls, 0) as sls, coalesce(p.sls_complete, 0) as sls_complete,
                  coalesce(p.expected, 0) as expected, coalesce(p.interviewed, 0) as interviewed,
                  coalesce(p.verified, 0) as verified, coalesce(p.flagged, 0) as flagged,
                  coalesce(p.absent, 0) as absent, coalesce(p.outstanding, 0) as outstanding,
                  coalesce(h.held, 0) as held
           from p full join h on p.grp = h.grp order by 1""",
        prefix, length,
    )
