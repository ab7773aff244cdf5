"""Verify's database: rosters (with history), interviews and their state, NIK claims,
the history of published outcomes, and per-SLS progress.

No direct identifier is stored in clear (issue 11; docs/DATA_INVENTORY.md): interviews and
rosters are kept as intake publishes them (v2: NIK and KK numbers as keyed hashes, no names,
address or GPS), and an erased family keeps only ids and outcomes (`erase_family`)."""

from __future__ import annotations

import asyncpg

from regsosek.contracts import FamilyErased, RosterStatus
from regsosek.contracts import InterviewSubmitted as FamilyInterview
from regsosek.contracts import RosterSubmitted as SlsRoster
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
           values ($1, 1, $2, $3, null, $4)
           on conflict (sls_id) do update set revision = rosters.revision + 1, submission_id = excluded.submission_id,
             officer_id = excluded.officer_id, confirmed_by = null,
             confirmed_at = excluded.confirmed_at, received_at = now()
           returning revision""",
        r.sls_id, r.submission_id, r.officer_id, r.confirmed_at,
    )
    await conn.execute("insert into roster_history (sls_id, revision, submission_id, body) values ($1, $2, $3, $4)",
                       r.sls_id, revision, r.submission_id, r.model_dump(mode="json"))
    await conn.execute("delete from roster_families where sls_id = $1", r.sls_id)
    await conn.executemany(
        "insert into roster_families (sls_id, building_no, family_no, kk_hash, member_count, status) "
        "values ($1, $2, $3, $4, $5, $6)",
        [(r.sls_id, f.building_no, f.family_no, f.kk_hash, f.member_count, f.status.value) for f in r.families],
    )
    return revision


async def roster(conn: asyncpg.Connection, sls_id: str) -> Roster | None:
    head = await conn.fetchrow("select revision, submission_id from rosters where sls_id = $1", sls_id)
    if head is None:
        return None
    rows = await conn.fetch(
        "select building_no, family_no, kk_hash, member_count, status from roster_families where sls_id = $1 "
        "order by building_no, family_no", sls_id
    )
    entries = [RosterEntry(r["building_no"], r["family_no"], r["kk_hash"], r["member_count"], RosterStatus(r["status"]))
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
        "and body is not null order by state <> 'held', held_since, decided_at, family_id for update",
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
        "select body, traceparent from interviews where family_id = $1 and state = 'held' and body is not null "
        "and held_since < now() - make_interval(secs => $2) for update", family_id, seconds,
    )


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
        family_id, sorted(hashes),  # one lock order for every family: no deadlock between SLS sharing NIKs
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


# ---------------------------------------------------------------- erasure


async def erased_in(conn: asyncpg.Connection, sls_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("select family_id from erased_families where sls_id = $1", sls_id)


async def is_erased(conn: asyncpg.Connection, family_id: str) -> bool:
    return bool(await conn.fetchval("select exists (select 1 from erased_families where family_id = $1)", family_id))


async def erase_family(conn: asyncpg.Connection, e: FamilyErased) -> dict[str, int]:
    """Erases what verify holds of the family (docs/DATA_INVENTORY.md): its NIK claims, its
    interview body (a decided family keeps its row without a body: state, outcome and roster
    match, so SLS progress figures stay; a held one is deleted), the KK hash of its roster entry in
    the current roster and every revision kept, and the free-text reasons of its supervisor
    resolutions. Remembers the family as erased, so a later record of it (a retained or re-driven
    interview) is ignored. Rows affected per table (counts only)."""
    building, family = int(e.family_id[15:19]), int(e.family_id[20:23])
    claims = await conn.execute("delete from nik_claims where family_id = $1", e.family_id)
    held = await conn.execute("delete from interviews where family_id = $1 and state = 'held'", e.family_id)
    bodies = await conn.execute("update interviews set body = null, erased_at = now(), traceparent = null "
                                "where family_id = $1 and body is not null", e.family_id)
    entries = await conn.execute(
        "update roster_families set kk_hash = null, kk_number = null where sls_id = $1 and building_no = $2 "
        "and family_no = $3 and (kk_hash is not null or kk_number is not null)", e.sls_id, building, family)
    # every kept revision: the family's entry keeps serials, member count and status, loses its KK
    # (hash, or number and head name in a body stored before migration 004)
    history = await conn.execute(
        """update roster_history h set body = jsonb_set(h.body, '{families}', (
             select jsonb_agg(case when (f->>'building_no')::int = $2 and (f->>'family_no')::int = $3
                                   then f - 'kk_hash' - 'kk_number' - 'head_name' else f end order by n)
             from jsonb_array_elements(h.body->'families') with ordinality as t(f, n)))
           where h.sls_id = $1 and exists (select 1 from jsonb_array_elements(h.body->'families') f
             where (f->>'building_no')::int = $2 and (f->>'family_no')::int = $3
               and (f ? 'kk_hash' or f ? 'kk_number' or f ? 'head_name'))""", e.sls_id, building, family)
    reasons = await conn.execute("update resolutions set reason = '' where family_id = $1 and reason <> ''",
                                 e.family_id)
    await conn.execute(
        "insert into erased_families (family_id, sls_id, erasure_id, reason, erased_at) values ($1, $2, $3, $4, $5) "
        "on conflict (family_id) do nothing", e.family_id, e.sls_id, e.erasure_id, e.reason.value, e.erased_at)
    return {name: int(status.rsplit(" ", 1)[-1]) for name, status in (
        ("nik_claims", claims), ("held", held), ("bodies", bodies), ("roster_entries", entries),
        ("roster_revisions", history), ("resolutions", reasons))}


# ---------------------------------------------------------------- rows stored before pseudonymised events


async def legacy_rows(conn: asyncpg.Connection, limit: int) -> dict[str, list[asyncpg.Record]]:
    """Rows still holding identifiers in clear (stored before migration 004), at most `limit` per table,
    locked (skip locked: several converters or instances never wait on each other)."""
    return {
        "interviews": await conn.fetch(
            "select family_id, body from interviews where body is not null and (body->'location' ? 'kk_number' "
            "or body->'location' ? 'address' or body->'members'->0 ? 'name') "
            "order by family_id limit $1 for update skip locked", limit),
        "roster_history": await conn.fetch(
            "select sls_id, revision, body from roster_history where body ? 'confirmed_by' "
            "order by sls_id, revision limit $1 for update skip locked", limit),
        "roster_families": await conn.fetch(
            "select sls_id, building_no, family_no, kk_number from roster_families where kk_number is not null "
            "order by sls_id, building_no, family_no limit $1 for update skip locked", limit),
        "rosters": await conn.fetch(
            "select sls_id from rosters where confirmed_by is not null order by sls_id limit $1 "
            "for update skip locked", limit),
    }


async def replace_legacy(conn: asyncpg.Connection, interviews: list[tuple[str, dict]],
                         revisions: list[tuple[str, int, dict]], entries: list[tuple[str, int, int, str]],
                         rosters: list[str]) -> None:
    """Writes the pseudonymised forms of legacy rows (see verify.pseudonymise)."""
    if interviews:
        await conn.executemany("update interviews set body = $2 where family_id = $1", interviews)
    if revisions:
        await conn.executemany("update roster_history set body = $3 where sls_id = $1 and revision = $2", revisions)
    if entries:
        await conn.executemany("update roster_families set kk_hash = $4, kk_number = null "
                               "where sls_id = $1 and building_no = $2 and family_no = $3", entries)
    if rosters:
        await conn.execute("update rosters set confirmed_by = null where sls_id = any($1::text[])", rosters)
