"""A re-rank killed mid-way resumes where its last committed page ended, on the real database:
families bulk-loaded into a classify database of its own (the benchmark's loader: COPY), a
per-regency re-rank run as an operator runs it (python -m classify.rerank), held up by a row
lock on one family of a later page, killed (SIGKILL) once the pages before it committed, then
run again. The expected deciles are worked out independently (ranking.rank_deciles over the
stored rank values per regency); the events are counted in classify's outbox (--outbox-only):
every moved family exactly once across the kill, nothing for the others. The same with families
resting on an earlier re-rank, whose unchanged rows a re-rank confirms without writing them
(migration 011): across the kill, the pages committed read the new ranking, the others still the
old one, and no unchanged row is ever written.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter, defaultdict

import asyncpg
import pytest

from classify.ranking import rank_deciles
from regsosek.topics import Topic

from itkit import World, eventually, loaded_classify

pytestmark = pytest.mark.integration

FAMILIES = 3000
PAGE = 100
HELD = 1550  # the family (by id order) whose row the test holds: pages up to id #1499 commit first


async def _rerank(world: World, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "REGSOSEK_DATABASE_URL": world.dsn("classify"), "REGSOSEK_TOPIC_PREFIX": world.prefix}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "classify.rerank", "--scope", "regency", "--batch-size", str(PAGE), "--outbox-only",
        "--json", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _events(world: World) -> Counter:
    """Family-classified events in the outbox per family."""
    rows = await world.fetch("classify", "select convert_from(value, 'UTF8')::jsonb ->> 'family_id' as family_id "
                                         "from outbox where topic = $1", world.topic(Topic.FAMILY_CLASSIFIED))
    return Counter(r["family_id"] for r in rows)


async def _kill_when_held(world: World, held: str, cursor: str) -> None:
    """Runs a re-rank while a row lock holds family `held`, and SIGKILLs it once the run's cursor is at
    `cursor` (the last family of the page before the held one) and the run waits for the lock."""
    holder = await asyncpg.connect(world.dsn("classify"))
    tx = holder.transaction()
    await tx.start()
    await holder.execute("select 1 from families where family_id = $1 for update", held)
    proc = await _rerank(world)
    try:
        async def stuck_at_the_held_page():
            at = await world.fetchval("classify", "select cursor from rerank_runs where finished_at is null")
            waiting = await world.fetchval(
                "classify", "select count(*) from pg_stat_activity where datname = current_database() "
                            "and wait_event_type = 'Lock'")
            return at == cursor and waiting == 1
        await eventually(stuck_at_the_held_page, timeout=120, what="the pages before the held family committed")
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
    finally:
        await tx.rollback()
        await holder.close()


async def _resumed(world: World, run_id: int) -> dict:
    """The re-rank run again to its end: its report (it must take up run `run_id`)."""
    again = await _rerank(world)
    out, err = await again.communicate()
    assert again.returncode == 0, err.decode()[-2000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["run_id"] == run_id and report["resumed"] is True and report["finished"] is True
    return report


async def _placed(world: World) -> dict[str, asyncpg.Record]:
    """Every family's row version, decile and placement as read (migration 011's placed())."""
    return {r["family_id"]: r for r in await world.fetch(
        "classify", "select f.family_id, f.xmin::text as xmin, f.ctid::text as ctid, f.decile, p.ranking_id, "
                    "p.decile_basis from families f "
                    "cross join lateral placed(f.family_id, f.sls_id, f.decile_basis, f.ranking_id) p")}


def _expected_deciles(rows: list[asyncpg.Record]) -> tuple[dict[str, int], int]:
    """Each family's decile in a per-regency ranking of the stored rank values, and how many regencies."""
    by_regency: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in rows:
        by_regency[r["sls_id"][:4]].append((r["family_id"], r["rank_value"]))
    return {fid: d for values in by_regency.values() for fid, d in rank_deciles(values).items()}, len(by_regency)


@pytest.fixture
async def world(stack):
    async with loaded_classify(FAMILIES, 0.2) as w:
        yield w


@pytest.fixture
async def ranked_world(stack):
    async with loaded_classify(FAMILIES, 0.2, ranked=True) as w:
        yield w


async def test_a_killed_rerank_resumes_after_its_last_committed_page(world):
    rows = await world.fetch("classify", "select family_id, sls_id, rank_value, decile from families order by 1")
    ids = [r["family_id"] for r in rows]
    expected, regencies = _expected_deciles(rows)
    moved = {r["family_id"] for r in rows if r["decile"] != expected[r["family_id"]]}
    assert regencies > 1 and moved

    await _kill_when_held(world, ids[HELD], ids[HELD // PAGE * PAGE - 1])

    run = (await world.fetch("classify", "select * from rerank_runs"))[0]
    assert run["finished_at"] is None and run["examined"] == HELD // PAGE * PAGE and run["ranked"] == FAMILIES
    half = await _events(world)
    assert set(half) == {f for f in moved if f <= run["cursor"]} and set(half.values()) == {1}
    applied = {r["family_id"]: r["decile"] for r in await world.fetch("classify", "select family_id, decile "
                                                                                   "from families")}
    assert all(applied[f] == expected[f] for f in ids[:HELD // PAGE * PAGE])

    report = await _resumed(world, run["id"])
    assert report["examined"] == FAMILIES - run["examined"]  # only the pages not committed before the kill

    final = {r["family_id"]: (r["decile"], r["decile_basis"]) for r in
             await world.fetch("classify", "select f.family_id, f.decile, p.decile_basis "
                                           "from families f cross join lateral "
                                           "placed(f.family_id, f.sls_id, f.decile_basis, f.ranking_id) p")}
    assert {f: d for f, (d, _) in final.items()} == expected
    assert all(b.startswith(f"ranked: regency {f[:4]} at ") for f, (_, b) in final.items())
    events = await _events(world)
    assert set(events) == moved and set(events.values()) == {1}  # each moved family once, across the kill
    assert await world.fetchval("classify", "select count(*) from rankings") == regencies  # ranked once
    assert await world.fetchval("classify", "select count(*) from rerank_members") == 0
    assert await world.fetchval("classify", "select outcome from rerank_runs where id = $1", run["id"]) == "finished"


async def test_a_killed_rerank_confirms_without_writing_only_the_pages_it_committed(ranked_world):
    world = ranked_world
    rows = await world.fetch("classify", "select family_id, sls_id, rank_value, decile from families order by 1")
    ids = [r["family_id"] for r in rows]
    expected, _ = _expected_deciles(rows)
    moved = {r["family_id"] for r in rows if r["decile"] != expected[r["family_id"]]}
    before = await _placed(world)
    assert moved and all(b["decile_basis"].startswith("ranked: ") for b in before.values())  # on a finished re-rank

    # held: a moved family of a later page (the run locks the families it moves, not the others)
    held = next(i for i, f in enumerate(ids) if i >= FAMILIES // 2 and f in moved)
    await _kill_when_held(world, ids[held], ids[held // PAGE * PAGE - 1])
    run = (await world.fetch("classify", "select * from rerank_runs where finished_at is null"))[0]
    rankings = {r["partition"]: (r["id"], r["basis"]) for r in await world.fetch(
        "classify", "select partition, id, basis from rankings where run_id = $1", run["id"])}
    after_kill = await _placed(world)
    unchanged = [f for f in ids if f not in moved]
    assert any(f <= run["cursor"] for f in unchanged) and any(f > run["cursor"] for f in unchanged)
    assert all(before[f]["ranking_id"] not in {i for i, _ in rankings.values()} for f in ids)  # an older ranking
    for f in ids:
        now, was = after_kill[f], before[f]
        if f <= run["cursor"]:  # its page committed: it reads the new ranking, its decile the ranked one
            assert (now["ranking_id"], now["decile_basis"]) == rankings[f[:4]] and now["decile"] == expected[f], f
        else:  # not yet: as before the run
            assert (now["ranking_id"], now["decile_basis"], now["decile"]) == \
                (was["ranking_id"], was["decile_basis"], was["decile"]), f
        if f not in moved:  # confirmed or not, never written
            assert (now["xmin"], now["ctid"]) == (was["xmin"], was["ctid"]), f
    assert set(await _events(world)) == {f for f in moved if f <= run["cursor"]}

    await _resumed(world, run["id"])
    final = await _placed(world)
    for f in ids:
        assert (final[f]["ranking_id"], final[f]["decile_basis"]) == rankings[f[:4]] and \
            final[f]["decile"] == expected[f], f
        if f not in moved:
            assert (final[f]["xmin"], final[f]["ctid"]) == (before[f]["xmin"], before[f]["ctid"]), f
    events = await _events(world)
    assert set(events) == moved and set(events.values()) == {1}  # each moved family once, across the kill


async def test_the_service_reranks_on_its_schedule_at_its_scope(world):
    rows = await world.fetch("classify", "select family_id, sls_id, rank_value from families")
    by_regency: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in rows:
        by_regency[r["sls_id"][:4]].append((r["family_id"], r["rank_value"]))
    expected = {fid: d for values in by_regency.values() for fid, d in rank_deciles(values).items()}

    # a quarterly schedule that never asked is due at once; the service ranks per regency/city
    (proc,) = await world.start("classify", REGSOSEK_RERANK_SCHEDULE="quarterly", REGSOSEK_DECILE_SCOPE="regency",
                                REGSOSEK_AREA_RERANK_POLL_S="0.2")
    try:
        async def scheduled_run():
            return await world.fetchval(
                "classify", "select q.run_id from rerank_requests q join rerank_runs r on r.id = q.run_id "
                            "where q.reason = 'schedule' and q.done_at is not null and r.outcome = 'finished'")
        run_id = await eventually(scheduled_run, timeout=300, what="the scheduled re-rank done")
    finally:
        await proc.stop()
    run = (await world.fetch("classify", "select * from rerank_runs where id = $1", run_id))[0]
    assert run["scope"] == "regency" and run["reason"] == "schedule" and run["examined"] == FAMILIES
    deciles = {r["family_id"]: r["decile"] for r in await world.fetch("classify", "select family_id, decile "
                                                                               "from families")}
    assert deciles == expected
    assert await world.fetchval("classify", "select count(*) from rerank_requests where reason = 'schedule'") == 1
