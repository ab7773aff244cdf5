"""load.stored on the real database server: verify's and classify's own migrations, a family stored
as those services store it, then rounds of clones written with COPY. What refers to what must still
do so after cloning, across tables and across the two databases; a second load goes on where the
first stopped. (Marked integration: needs the stack's PostgreSQL.)"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg
import pytest

from regsosek.db import migrate
from regsosek_tools.load.stored import Templates, count_families
from regsosek_tools.processes import ROOT
from regsosek_tools.world import Stack, create_databases, drop_databases

pytestmark = pytest.mark.integration

SERVICES = ("verify", "classify")
VILLAGE = "6472020005"
SLS = f"{VILLAGE}0012"


def migrations(service: str) -> Path:
    return ROOT / "services" / service / "migrations"


async def store_verify(conn: asyncpg.Connection, families: list[tuple[str, uuid.UUID, str]]) -> None:
    """An SLS roster and its interviewed families as verify keeps them (pseudonymised bodies, keyed hashes)."""
    await conn.execute("insert into rosters (sls_id, revision, submission_id, officer_id, confirmed_at) "
                       "values ($1, 1, $2, 'PCL-6472020005', now())", SLS, uuid.uuid4())
    for n, (family_id, submission_id, kk) in enumerate(families, start=1):
        await conn.execute("insert into roster_families (sls_id, building_no, family_no, kk_hash, member_count, status) "
                           "values ($1, $2, $2, $3, 3, 'present')", SLS, n, kk)
        body = json.dumps({"family_id": family_id, "location": {"sls_id": SLS, "kk_hash": kk}})
        await conn.execute("insert into interviews (family_id, sls_id, submission_id, version, body, state, outcome, "
                           "decided_at, kk_hash, decision_seq, roster_building_no, roster_family_no, roster_revision) "
                           "values ($1, $2, $3, 1, $4, 'verified', 'verified', now(), $5, 1, $6, $6, 1)",
                           family_id, SLS, submission_id, body, kk, n)
        for m in range(3):
            await conn.execute("insert into nik_claims (nik_hash, family_id) values ($1, $2)",
                               bytes([n, m]) * 16, family_id)
        await conn.execute("insert into verification_history (family_id, sls_id, submission_id, version, state, outcome, "
                           "detail, cause, decision_seq) values ($1, $2, $3, 1, 'verified', 'verified', '', 'interview', 1)",
                           family_id, SLS, submission_id)
        await conn.execute("insert into inbox (event_id, topic) values ($1, 'w.interview-submitted')", str(uuid.uuid4()))


async def store_classify(conn: asyncpg.Connection, families: list[tuple[str, uuid.UUID, str]]) -> None:
    for family_id, submission_id, _ in families:
        profile = json.dumps({"family_id": family_id, "sls_id": SLS, "submission_id": str(submission_id)})
        await conn.execute("insert into families (family_id, sls_id, submission_id, version, predicted, welfare_group, "
                           "decile, model_version, rule_version, eligible, rank_value, profile) "
                           "values ($1, $2, $3, 1, 13.1, 2, 2, 'm1', 'r1', '{pkh}', 13.1, $4)",
                           family_id, SLS, submission_id, profile)
        await conn.execute("insert into family_order (family_id, verify_seq, verified, decision_seq) values ($1, 1, true, 1)",
                           family_id)


async def test_clones_keep_every_reference_across_tables_and_databases():
    stack = Stack.from_env()
    if stack.problems():
        pytest.fail(f"the stack is not up: {stack.problems()}")
    tag = f"it{uuid.uuid4().hex[:8]}"
    dsns = {s: stack.dsn(f"{tag}_{s}") for s in SERVICES}
    await create_databases(stack.pg_base, [f"{tag}_{s}" for s in SERVICES])
    try:
        template = [(f"{SLS}-0001-001", uuid.uuid4(), "aa" * 32), (f"{SLS}-0002-002", uuid.uuid4(), "bb" * 32)]
        for s in SERVICES:
            pool = await asyncpg.create_pool(dsns[s], min_size=1, max_size=1)
            try:
                await migrate(pool, migrations(s))
                async with pool.acquire() as conn:
                    await (store_verify if s == "verify" else store_classify)(conn, template)
            finally:
                await pool.close()

        templates = await Templates.read(dsns)
        assert templates.families_per_round == 2 and templates.template_sls == [SLS]
        first = await templates.load(5)  # whole rounds: 3 of 2 families
        assert first["rounds"] == 3 and first["families"] == 6
        second = await templates.load(2)
        assert second["rounds"] == 1
        assert await count_families(dsns["verify"]) == 2 + 8

        v = await asyncpg.connect(dsns["verify"])
        c = await asyncpg.connect(dsns["classify"])
        try:
            interviews = await v.fetch("select family_id, sls_id, submission_id, kk_hash, body from interviews")
            assert all(r["family_id"][:14] == r["sls_id"] and r["sls_id"][:10] == VILLAGE for r in interviews)
            new_sls = {r["sls_id"] for r in interviews} - {SLS}
            assert len(new_sls) == 4 and all(1000 <= int(s[10:]) <= 9999 for s in new_sls)
            assert all(json.loads(r["body"])["location"]["sls_id"] == r["sls_id"] for r in interviews)
            # the KK hash of each interview is on its SLS's roster, as in the template
            unmatched = await v.fetchval("select count(*) from interviews i where not exists (select 1 from roster_families "
                                         "f where f.sls_id = i.sls_id and f.kk_hash = i.kk_hash)")
            assert unmatched == 0
            assert await v.fetchval("select count(*) from rosters") == 5
            assert await v.fetchval("select count(distinct nik_hash) from nik_claims") == 6 * 5
            assert await v.fetchval("select count(*) from nik_claims n where not exists "
                                    "(select 1 from interviews i where i.family_id = n.family_id)") == 0
            assert await v.fetchval("select count(distinct id) from verification_history") == 10
            assert await v.fetchval("select count(distinct event_id) from inbox") == 10
            # the same family has the same submission in both databases
            verify_side = {(r["family_id"], r["submission_id"]) for r in interviews}
            classify_side = {(r["family_id"], r["submission_id"])
                             for r in await c.fetch("select family_id, submission_id from families")}
            assert verify_side == classify_side and len(classify_side) == 10
            assert await c.fetchval("select count(*) from family_order") == 10
            profiles = await c.fetch("select family_id, profile from families")
            assert all(json.loads(r["profile"])["family_id"] == r["family_id"] for r in profiles)
        finally:
            await v.close()
            await c.close()

        # a world holding more than a round needs: whole SLS up to the limit, the same share of the rest
        part = await Templates.read(dsns, max_families=1)
        assert part.families_per_round == 2 and part.template_sls == [SLS]
        inbox = next(t for d in part.databases if d.service == "verify" for t in d.tables if t.table == "inbox")
        assert len(inbox.rows) == 2  # 2 of the 10 families, 2 of the 10 inbox rows
    finally:
        await drop_databases(stack.pg_base, [f"{tag}_{s}" for s in SERVICES])
