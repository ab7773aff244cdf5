"""Verify's database: rosters (with history), interviews and their state, NIK claims."""

from __future__ import annotations

import hashlib
import hmac

import asyncpg

from regsosek.contracts import FamilyInterview, RosterStatus, SlsRoster

from verify.domain import RosterEntry


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


async def roster(conn: asyncpg.Connection, sls_id: str) -> list[RosterEntry] | None:
    if not await conn.fetchval("select 1 from rosters where sls_id = $1", sls_id):
        return None
    rows = await conn.fetch(
        "select building_no, family_no, kk_number, member_count, status from roster_families where sls_id = $1", sls_id
    )
    return [RosterEntry(r["building_no"], r["family_no"], r["kk_number"], r["member_count"], RosterStatus(r["status"]))
            for r in rows]


async def current(conn: asyncpg.Connection, family_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select submission_id, version, state, body from interviews where family_id = $1 for update", family_id
    )


async def save_held(conn: asyncpg.Connection, iv: FamilyInterview, traceparent: str | None) -> None:
    await conn.execute(
        """insert into interviews (family_id, sls_id, submission_id, version, body, state, held_since, traceparent)
           values ($1, $2, $3, $4, $5, 'held', now(), $6)
           on conflict (family_id) do update set submission_id = excluded.submission_id, version = excluded.version,
             body = excluded.body, state = 'held', outcome = null, detail = null, held_since = now(),
             decided_at = null, updated_at = now(), traceparent = excluded.traceparent""",
        iv.family_id, iv.location.sls_id, iv.submission_id, iv.version, iv.model_dump(mode="json"), traceparent,
    )


async def set_state(conn: asyncpg.Connection, family_id: str, state: str, outcome: str, detail: str) -> None:
    await conn.execute(
        "update interviews set state = $2, outcome = $3, detail = $4, held_since = null, decided_at = now(), "
        "updated_at = now() where family_id = $1", family_id, state, outcome, detail,
    )


async def held_in(conn: asyncpg.Connection, sls_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "select family_id, body, traceparent from interviews where sls_id = $1 and state = 'held' "
        "order by held_since for update",
        sls_id,
    )


async def held_longer_than(conn: asyncpg.Connection, seconds: float, limit: int = 500) -> list[asyncpg.Record]:
    return await conn.fetch(
        "select family_id, body, traceparent from interviews where state = 'held' and held_since < now() - make_interval(secs => $1) "
        "order by held_since limit $2 for update skip locked", seconds, limit,
    )


def nik_hashes(key: str, iv: FamilyInterview) -> dict[bytes, int]:
    k = key.encode()
    return {hmac.new(k, m.nik.encode(), hashlib.sha256).digest(): m.line_no for m in iv.members if m.nik}


async def claim_niks(conn: asyncpg.Connection, family_id: str, hashes: dict[bytes, int]) -> list[int]:
    """Claim each NIK for this family; returns member lines whose NIK another family holds.

    The primary key makes this nation-wide and race-free: of two families claiming a NIK
    at the same moment, the second insert waits for the first commit and loses.
    """
    await conn.execute(
        "delete from nik_claims where family_id = $1 and not (nik_hash = any($2::bytea[]))", family_id, list(hashes)
    )
    if not hashes:
        return []
    await conn.execute(
        "insert into nik_claims (nik_hash, family_id) select unnest($1::bytea[]), $2 on conflict do nothing",
        list(hashes), family_id,
    )
    rows = await conn.fetch(
        "select nik_hash from nik_claims where nik_hash = any($1::bytea[]) and family_id <> $2", list(hashes), family_id
    )
    return sorted(hashes[r["nik_hash"]] for r in rows)


async def save_resolution(conn: asyncpg.Connection, r) -> None:
    await conn.execute(
        "insert into resolutions (submission_id, family_id, decision, supervisor_id, reason, decided_at) "
        "values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
        r.submission_id, r.family_id, r.decision.value, r.supervisor_id, r.reason, r.decided_at,
    )
