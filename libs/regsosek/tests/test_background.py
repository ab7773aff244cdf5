"""regsosek.background: the loop outlives failures, counts them, and stops cleanly."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from prometheus_client import REGISTRY

from regsosek.background import BackgroundTasks, IdlePoll, periodic, run_forever, wait_woken
from regsosek.db import Backoff
from regsosek.messaging.outbox import RelayWakeup


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


class Script:
    """An attempt that fails with the given errors in turn, then succeeds; stops the loop after `stop_after` calls."""

    def __init__(self, *errors: Exception, stop_after: int) -> None:
        self.errors, self.stop_after, self.calls = list(errors), stop_after, 0
        self.done = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls >= self.stop_after:
            self.done.set()
            await asyncio.Event().wait()  # park: the test cancels
        if self.errors:
            raise self.errors.pop(0)


async def run_until_done(script: Script, coro) -> None:
    task = asyncio.create_task(coro)
    await asyncio.wait_for(script.done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_failures_are_retried_counted_and_recovered_from(caplog):
    name = unique("sweep")
    script = Script(ConnectionError("db away"), ValueError("bug"), stop_after=4)
    recovered: list[str] = []

    async def on_error(e: BaseException) -> None:
        recovered.append(type(e).__name__)

    caplog.set_level(logging.WARNING, logger="regsosek.background")
    await run_until_done(script, run_forever(name, script, backoff=Backoff(0, 0), service="svc",
                                             expected=lambda e: isinstance(e, ConnectionError), on_error=on_error))
    assert script.calls == 4
    assert recovered == ["ConnectionError", "ValueError"]
    assert sample("regsosek_background_attempts_total", service="svc", task=name) == 4
    assert sample("regsosek_background_failures_total", service="svc", task=name, expected="true") == 1
    assert sample("regsosek_background_failures_total", service="svc", task=name, expected="false") == 1
    assert sample("regsosek_background_last_success_timestamp_seconds", service="svc", task=name) > 0
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if name in r.getMessage()]
    assert levels == [("WARNING", f"{name} interrupted, retrying"), ("ERROR", f"{name} failed unexpectedly, retrying")]
    # the messages of errors never reach the log's fields (they may quote data)
    assert all("db away" not in str(getattr(r, "fields", "")) for r in caplog.records)


async def test_a_failing_recovery_does_not_end_the_loop(caplog):
    script = Script(RuntimeError("first"), RuntimeError("second"), stop_after=3)

    async def broken_recovery(e: BaseException) -> None:
        raise OSError("cannot recover")

    await run_until_done(script, run_forever(unique("relay"), script, backoff=Backoff(0, 0), on_error=broken_recovery))
    assert script.calls == 3
    assert sum("recovery after a failure failed" in r.getMessage() for r in caplog.records) == 2


async def test_backoff_grows_on_failures_and_resets_after_a_success():
    backoff = Backoff(0.0, 0.0)
    seen: list[float] = []
    script = Script(OSError(), OSError(), stop_after=4)

    async def attempt() -> None:
        seen.append(backoff.delay)
        await script()

    backoff.initial, backoff.delay = 0.001, 0.001
    backoff.maximum = 0.004
    await run_until_done(script, run_forever(unique("grow"), attempt, backoff=backoff))
    assert seen == [0.001, 0.002, 0.004, 0.001]


async def test_periodic_waits_the_interval_between_attempts(monkeypatch):
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("regsosek.background.asyncio.sleep", recording_sleep)
    script = Script(stop_after=3)
    await run_until_done(script, periodic(unique("poll"), 30.0, script, backoff=Backoff(0, 0), wait_first=True))
    assert script.calls == 3
    assert slept == [30.0, 30.0, 30.0]  # the first wait, then one after each of the two completed attempts


async def test_tasks_label_metrics_with_their_service_and_report_a_dead_task(caplog):
    tasks = BackgroundTasks("notify")
    name = unique("lag")
    script = Script(stop_after=2)
    tasks.start(name, run_forever(name, script, backoff=Backoff(0, 0)))

    async def dies() -> None:
        raise LookupError("gone")

    dead = tasks.start("dies", dies())
    await asyncio.wait_for(script.done.wait(), 5)
    await asyncio.gather(dead, return_exceptions=True)
    assert sample("regsosek_background_attempts_total", service="notify", task=name) == 2
    assert tasks.dead() == ["dies"]
    assert tasks.check() == "background task(s) ended: dies"
    assert any(r.getMessage() == "background task died" and r.exc_info for r in caplog.records)
    assert await tasks.stop() == []
    assert all(t.done() for t in tasks.tasks)
    assert tasks.check() == "background task(s) ended: dies"  # cancelled ones do not count


async def test_stop_names_a_task_that_ignores_cancellation(caplog):
    tasks = BackgroundTasks("classify")
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await release.wait()

    stuck_task = tasks.start("stubborn", stubborn())
    await asyncio.sleep(0)
    assert await tasks.stop(timeout_s=0.05) == ["stubborn"]
    assert any(r.getMessage() == "background tasks did not stop when cancelled" for r in caplog.records)
    release.set()
    await stuck_task
    assert await tasks.stop() == []


def test_idle_poll_backs_off_while_the_outbox_stays_empty_and_returns_at_the_first_row():
    idle = IdlePoll(0.05, 1.0)
    assert [idle.after(0) for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert idle.after(3) == 0.0  # rows sent: ask again at once
    assert idle.after(0) == 0.05  # and from the start of the schedule when it is empty again
    assert IdlePoll(0.5, 0.1).after(0) == 0.5  # a longest below first is first


async def test_wait_woken_returns_when_woken_and_a_wakeup_reaches_every_listener():
    wakeup = RelayWakeup()
    deliveries, callbacks = wakeup.listener(), wakeup.listener()
    waiting = asyncio.create_task(wait_woken(deliveries, 30))
    await asyncio.sleep(0)
    assert not waiting.done()
    wakeup.notify()  # a commit of this process
    await asyncio.wait_for(waiting, 5)  # long before its 30 s
    assert wakeup.event.is_set() and deliveries.is_set() and callbacks.is_set()
    await asyncio.wait_for(wait_woken(asyncio.Event(), 0), 1)  # nothing to wait: returns at once
    await asyncio.wait_for(wait_woken(asyncio.Event(), -0.05), 1)
    await wait_woken(asyncio.Event(), 0.01)  # not woken: returns after its time, without an error
