"""A replay's slices on the real database: families bulk-loaded into a classify database of its
own (the benchmark's loader: COPY), split into slices both ways the store has (the planner's
histogram of family ids, and counting along the primary key); every family falls in exactly one
slice, the slices are about even, a run whose slices exist resumes them as they are, and a run
from before slices is split from its cursor on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from classify.store import RerankStore
from regsosek import db

from itkit import loaded_classify

pytestmark = pytest.mark.integration

FAMILIES = 3000
VERSIONS = ("model-it", "lines-it", "rules-it")


@pytest.fixture
async def world(stack):
    async with loaded_classify(FAMILIES, 0.0) as w:  # analyses
        yield w


@pytest.fixture
async def store(world) -> AsyncIterator[RerankStore]:
    """The loaded world's classify store, on one connection of its own."""
    pool = await db.connect_pool(world.dsn("classify"), max_size=1)
    try:
        async with pool.acquire() as conn:
            yield RerankStore(conn)
    finally:
        await pool.close()


def _parts(ids: list[str], after: str, bounds: list[str]) -> list[list[str]]:
    """The families of each slice (lower, upper], worked out in Python from the sorted ids."""
    lowers, uppers = [after, *bounds], [*bounds, None]
    return [[f for f in ids if f > lo and (up is None or f <= up)] for lo, up in zip(lowers, uppers, strict=True)]


def _exactly_once(ids: list[str], after: str, parts: list[list[str]]) -> None:
    covered = [f for part in parts for f in part]
    assert sorted(covered) == [f for f in ids if f > after]  # every family after the cursor, none twice


@pytest.mark.parametrize("processes", [2, 3, 7])
async def test_both_ways_of_slicing_cover_every_family_once_in_about_even_slices(store, processes):
    conn = store.conn
    ids = sorted(r["family_id"] for r in await conn.fetch("select family_id from families"))
    assert len(ids) == FAMILIES
    for after in ("", ids[999]):
        rest = len([f for f in ids if f > after])
        histogram = await store.histogram_bounds(after, processes)
        counted = await store.counted_bounds(after, processes)
        assert len(histogram) == len(counted) == processes - 1
        for bounds in (histogram, counted):
            assert bounds == sorted(set(bounds)) and bounds[0] > after
            parts = _parts(ids, after, bounds)
            _exactly_once(ids, after, parts)
            assert all(abs(len(p) - rest / processes) <= 0.1 * rest / processes for p in parts), \
                [len(p) for p in parts]
        assert await store.slice_bounds(after, processes) == histogram  # the table is analysed
        # counting: each part the same number of families, the last one taking the remainder
        assert [len(p) for p in _parts(ids, after, counted)][:-1] == [rest // processes] * (processes - 1)


async def test_without_statistics_the_slices_are_counted(store):
    conn = store.conn
    # a table never analysed has no histogram: a copy of the families without statistics
    await conn.execute("create table families_copy as select * from families")
    await conn.execute("alter table families rename to families_analysed")
    await conn.execute("alter table families_copy rename to families")
    await conn.execute("alter table families add primary key (family_id)")
    assert await store.histogram_bounds("", 2) == []
    ids = sorted(r["family_id"] for r in await conn.fetch("select family_id from families"))
    bounds = await store.slice_bounds("", 2)
    assert bounds == [ids[FAMILIES // 2 - 1]]
    _exactly_once(ids, "", _parts(ids, "", bounds))
    # fewer families than slices: as many bounds as there are families to split
    await conn.execute("delete from families where family_id > $1", ids[1])
    assert await store.slice_bounds("", 5) == []  # 2 families, 5 parts: one slice takes both
    assert await store.counted_bounds(ids[0], 2) == []


async def test_a_run_keeps_its_slices_and_a_run_from_before_slices_is_split_from_its_cursor(store):
    conn = store.conn
    ids = sorted(r["family_id"] for r in await conn.fetch("select family_id from families"))
    run = await store.start_replay(VERSIONS)
    assert not run.resumed
    slices = await store.replay_slices(run.id, 3)
    assert [s.slice for s in slices] == [0, 1, 2] and slices[0].cursor == "" and slices[-1].upper is None
    bounds = [s.upper for s in slices[:-1]]
    assert [s.cursor for s in slices[1:]] == bounds
    _exactly_once(ids, "", _parts(ids, "", bounds))
    # part-way through: the first slice advanced; taken up again (with another process count) it is the
    # same run with the same slices, each from its cursor
    await store.advance_replay(run.id, 0, ids[10], 11, 0)
    again = await store.start_replay(VERSIONS)
    assert again.resumed and again.id == run.id and again.examined == 11
    resumed = await store.replay_slices(run.id, 2)
    assert [(s.slice, s.upper) for s in resumed] == [(s.slice, s.upper) for s in slices]
    assert resumed[0].cursor == ids[10] and [s.cursor for s in resumed[1:]] == bounds
    # a run from before slices (its cursor on the run, no slices yet) is split from that cursor on
    await conn.execute("update replay_runs set finished_at = now(), outcome = 'superseded'")
    old = await conn.fetchval("insert into replay_runs (model_version, lines_version, rule_version, cursor) "
                              "values ('m2', 'l2', 'r2', $1) returning id", ids[1499])
    split = await store.replay_slices(old, 2)
    assert split[0].cursor == ids[1499] and len(split) == 2
    _exactly_once(ids, ids[1499], _parts(ids, ids[1499], [split[0].upper]))
