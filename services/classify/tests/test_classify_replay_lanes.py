"""How the processes of a replay share its slices (classify.replay.take_slices), with fake lanes."""

from __future__ import annotations

import asyncio

from classify.reclassify import ReplayReport
from classify.replay import take_slices
from classify.store import ReplaySlice

VERSIONS = ("m", "l", "r")


def slices(n: int) -> list[ReplaySlice]:
    return [ReplaySlice(1, i, f"{i:04d}", None, False) for i in range(n)]


def lane(name: str, took: dict[int, str], batches: int, delay: float):
    async def go_through(s: ReplaySlice, most: int | None) -> ReplayReport:
        took[s.slice] = name
        await asyncio.sleep(delay)
        done = batches if most is None else min(batches, most)
        return ReplayReport(run_id=1, resumed=False, versions=VERSIONS, batches=done)
    return go_through


async def share(todo: list[ReplaySlice], lanes, max_batches: int | None = None):
    return await asyncio.gather(*(take_slices(go, todo, max_batches) for go in lanes))


def test_every_slice_is_taken_once_and_the_ready_lane_takes_more():
    took: dict[int, str] = {}
    todo = slices(8)
    parts = asyncio.run(share(todo, [lane("here", took, 3, 0.001), lane("elsewhere", took, 3, 0.05)]))
    assert todo == [] and sorted(took) == list(range(8))
    assert sum(len(p) for p in parts) == 8
    assert list(took.values()).count("elsewhere") == 1  # still starting while this process did the rest
    assert [took[i] for i in range(2)] == ["here", "elsewhere"]  # in slice order, as they were free


def test_max_batches_is_a_budget_per_process_across_its_slices():
    took: dict[int, str] = {}
    todo = slices(8)
    parts = asyncio.run(share(todo, [lane("here", took, 3, 0.0)], max_batches=7))
    assert [p.batches for p in parts[0]] == [3, 3, 1]  # stopped after 7 batches, the third slice unfinished
    assert len(todo) == 5  # left for the next invocation
