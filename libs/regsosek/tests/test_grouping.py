"""Group commit (regsosek.grouping): groups form only while earlier groups run, each caller gets
its own result, and a failed group fails only the item that caused it (unless it is an outage)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from regsosek.grouping import GROUP_FAILURES, GROUP_ITEMS, Grouped


class Outage(Exception):
    pass


class BadItem(Exception):
    pass


class Runner:
    """A fake `run` that records its groups, can be held, and fails for items named 'bad'."""

    def __init__(self, *, outage: bool = False) -> None:
        self.groups: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()  # set when the first group runs
        self.outage = outage

    async def __call__(self, items: list[str]) -> list[str]:
        self.groups.append(list(items))
        self.started.set()
        await self.release.wait()
        if self.outage:
            raise Outage()
        if "bad" in items:
            raise BadItem()
        return [f"done {i}" for i in items]


async def first_group_running(g: Grouped[str, str], run: Runner) -> asyncio.Task:
    """Holds `run`, submits "a" and returns once its group runs: items submitted now wait for the next group."""
    run.release.clear()
    first = asyncio.create_task(g.submit("a"))
    await run.started.wait()
    return first


def grouped(run: Runner, *, in_flight: int = 1, max_items: int = 100) -> Grouped[str, str]:
    return Grouped("test", run, in_flight=in_flight, max_items=max_items, alone=lambda e: not isinstance(e, Outage))


async def test_an_item_alone_runs_at_once_and_gets_its_result():
    run = Runner()
    g = grouped(run)
    assert await g.submit("a") == "done a"
    assert await g.submit("b") == "done b"
    assert run.groups == [["a"], ["b"]]


async def test_items_arriving_while_a_group_runs_form_the_next_group_each_answered_alone():
    run = Runner()
    g = grouped(run)
    first = await first_group_running(g, run)
    rest = [asyncio.create_task(g.submit(x)) for x in "bcde"]
    await asyncio.sleep(0)
    assert g.waiting == 4
    run.release.set()
    assert await first == "done a"
    assert [await t for t in rest] == ["done b", "done c", "done d", "done e"]
    assert run.groups == [["a"], ["b", "c", "d", "e"]]


async def test_groups_hold_at_most_max_items_and_up_to_in_flight_run_at_once():
    run = Runner()
    run.release.clear()
    g = grouped(run, in_flight=2, max_items=2)
    tasks = [asyncio.create_task(g.submit(str(i))) for i in range(5)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert run.groups == [["0", "1"], ["2", "3"]]  # two groups in flight, the fifth item waits
    run.release.set()
    assert [await t for t in tasks] == [f"done {i}" for i in range(5)]
    assert run.groups == [["0", "1"], ["2", "3"], ["4"]]


async def test_a_failed_group_runs_each_item_again_alone_so_only_the_bad_item_fails():
    run = Runner()
    g = grouped(run)
    first = await first_group_running(g, run)
    rest = [asyncio.create_task(g.submit(x)) for x in ("b", "bad", "c")]
    run.release.set()
    assert await first == "done a"
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert results[0] == "done b" and results[2] == "done c"
    assert isinstance(results[1], BadItem)
    assert run.groups == [["a"], ["b", "bad", "c"], ["b"], ["bad"], ["c"]]


async def test_an_outage_fails_the_whole_group_at_once_without_a_retry_per_item():
    run = Runner(outage=True)
    g = grouped(run)
    first = await first_group_running(g, run)
    rest = [asyncio.create_task(g.submit(x)) for x in "bc"]
    run.release.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert all(isinstance(r, Outage) for r in results)
    assert run.groups == [["a"], ["b", "c"]]


async def test_a_caller_that_goes_away_does_not_disturb_the_others_and_a_later_item_is_still_answered():
    run = Runner()
    g = grouped(run)
    first = await first_group_running(g, run)
    gone, stays = asyncio.create_task(g.submit("b")), asyncio.create_task(g.submit("c"))
    await asyncio.sleep(0)
    gone.cancel()
    run.release.set()
    assert await first == "done a" and await stays == "done c"
    assert gone.cancelled()
    assert await g.submit("d") == "done d"


async def test_run_sees_none_of_the_callers_context():
    seen: list[str | None] = []
    var: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller", default=None)

    async def run(items: list[str]) -> list[str]:
        seen.append(var.get())
        return items

    g: Grouped[str, str] = Grouped("test", run, in_flight=1, max_items=10, alone=lambda e: True)
    var.set("request 1")
    assert await g.submit("x") == "x"
    assert seen == [None]


async def test_a_run_that_answers_the_wrong_number_of_results_fails_its_callers():
    async def run(items: list[str]) -> list[str]:
        return []

    g: Grouped[str, str] = Grouped("test", run, in_flight=1, max_items=10, alone=lambda e: True)
    with pytest.raises(RuntimeError, match="gave 0 results"):
        await g.submit("x")


async def test_a_drain_cancelled_at_shutdown_cancels_its_callers_instead_of_leaving_them_waiting():
    run = Runner()
    g = grouped(run)
    first = await first_group_running(g, run)
    waiting = asyncio.create_task(g.submit("b"))
    await asyncio.sleep(0)
    for task in list(g._tasks):
        task.cancel()
    results = await asyncio.gather(first, waiting, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


def test_limits_below_one_are_refused():
    with pytest.raises(ValueError):
        Grouped("test", Runner(), in_flight=0, max_items=1, alone=lambda e: True)


def _sample(metric, name: str, labels: dict) -> float:
    for m in metric.collect():
        for s in m.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_metrics_count_the_items_of_each_group_and_its_failures():
    run = Runner()
    g = Grouped("metrics test", run, in_flight=1, max_items=100, alone=lambda e: not isinstance(e, Outage))
    before = {k: _sample(GROUP_ITEMS, "regsosek_group_items_" + k, {"group": "metrics test"}) for k in ("count", "sum")}
    first = await first_group_running(g, run)
    rest = [asyncio.create_task(g.submit(x)) for x in ("b", "bad")]
    run.release.set()
    await asyncio.gather(first, *rest, return_exceptions=True)
    # groups formed: [a], then [b, bad], which failed and whose items were run again alone
    assert _sample(GROUP_ITEMS, "regsosek_group_items_count", {"group": "metrics test"}) - before["count"] == 2
    assert _sample(GROUP_ITEMS, "regsosek_group_items_sum", {"group": "metrics test"}) - before["sum"] == 3
    assert _sample(GROUP_FAILURES, "regsosek_group_failures_total", {"group": "metrics test", "alone": "true"}) == 1
    assert _sample(GROUP_FAILURES, "regsosek_group_failures_total", {"group": "metrics test", "alone": "false"}) == 0
    outage = Grouped("metrics outage", Runner(outage=True), in_flight=1, max_items=10,
                     alone=lambda e: not isinstance(e, Outage))
    with pytest.raises(Outage):
        await outage.submit("x")
    assert _sample(GROUP_FAILURES, "regsosek_group_failures_total", {"group": "metrics outage", "alone": "false"}) == 1
