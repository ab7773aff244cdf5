"""Probes, the event-loop watchdog and how readiness composes its checks (regsosek.health, service.Runtime)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from regsosek.health import LoopWatchdog, Probe
from regsosek.service import Runtime, ServiceDefinition
from regsosek.settings import ServiceSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


# ---------------------------------------------------------------- Probe


async def test_probe_reports_the_last_result_and_its_reason():
    clock = FakeClock()
    answers: list[object] = [None, ConnectionRefusedError("secret detail 3271"), "schema behind"]

    async def attempt():
        a = answers.pop(0)
        if isinstance(a, BaseException):
            raise a
        return a

    p = Probe("svc-a", "database", attempt, interval_s=5, timeout_s=1, clock=clock)
    assert p.check() == "not checked yet"
    assert await p.run_once() is None and p.check() is None
    assert sample("regsosek_probe_ok", service="svc-a", check="database") == 1
    assert await p.run_once() == "unreachable (ConnectionRefusedError)"
    assert "3271" not in p.check()  # the error's message never becomes the reason
    assert sample("regsosek_probe_ok", service="svc-a", check="database") == 0
    assert await p.run_once() == "schema behind"


async def test_probe_times_out_and_goes_stale_when_not_running():
    clock = FakeClock()

    async def hangs():
        await asyncio.sleep(10)

    p = Probe("svc-b", "broker", hangs, interval_s=5, timeout_s=0.05, clock=clock)
    assert await p.run_once() == "no answer within 0.05s"

    async def fine():
        return None

    p = Probe("svc-b", "database", fine, interval_s=5, timeout_s=1, clock=clock)
    await p.run_once()
    clock.now += 10  # within 2 intervals + timeout: still trusted
    assert p.check() is None
    clock.now += 2
    assert p.check().startswith("last checked 12s ago")


# ---------------------------------------------------------------- LoopWatchdog


def test_watchdog_lag_and_liveness_from_the_heartbeat_stamp():
    clock = FakeClock()
    w = LoopWatchdog("svc-c", beat_s=0.5, limit_s=10, log_s=2, clock=clock)
    w.last_beat = clock.now
    assert w.lag() == 0.0 and w.problem() is None
    clock.now += 0.5 + 3
    assert w.sample() == pytest.approx(3.0)
    assert sample("regsosek_event_loop_lag_seconds", service="svc-c") == pytest.approx(3.0)
    assert sample("regsosek_event_loop_stalls_total", service="svc-c") == 1
    clock.now += 1
    w.sample()  # the same episode: counted once
    assert sample("regsosek_event_loop_stalls_total", service="svc-c") == 1
    assert w.problem() is None
    clock.now += 7
    assert w.problem() == "event loop 11.0s late (limit 10s)"
    w.last_beat = clock.now  # the loop came round
    w.sample()
    assert w.problem() is None
    assert sample("regsosek_event_loop_lag_seconds", service="svc-c") == 0.0


async def _until(condition, timeout: float = 10.0) -> bool:
    """Polls `condition` on the loop (the machine may be busy: no fixed sleeps as synchronisation)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_watchdog_thread_sees_a_blocked_loop_and_where_it_is_blocked(caplog):
    """The loop is blocked by a synchronous sleep: only a thread can notice, and it does."""
    w = LoopWatchdog("svc-d", beat_s=0.05, limit_s=1.0, log_s=0.2)
    caplog.set_level(logging.WARNING, logger="regsosek.health")
    w.start()
    try:
        assert await _until(lambda: w.problem() is None), "the loop never looked healthy"
        seen: list[float] = []

        def blocking_call_in_a_handler():
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                time.sleep(0.05)
                seen.append(w.lag())  # what the probe would read at this moment

        blocking_call_in_a_handler()
        assert max(seen) > 1.0
        assert sample("regsosek_event_loop_lag_seconds", service="svc-d") > 0.2  # set by the thread meanwhile
        stuck = [r for r in caplog.records if r.getMessage() == "event loop stuck"]
        assert stuck, "the watchdog thread logged nothing while the loop was blocked"
        stacks = [r.fields["loop_stack"] for r in stuck]  # a busy machine may add an earlier, shorter episode
        assert any("blocking_call_in_a_handler" in frame for stack in stacks for frame in stack), stacks
        assert await _until(lambda: w.problem() is None), "the watchdog still reports the loop stuck"
        assert await _until(lambda: any(r.getMessage() == "event loop running again" for r in caplog.records))
    finally:
        await w.stop()


# ---------------------------------------------------------------- readiness composition


def runtime() -> Runtime:
    return Runtime(ServiceDefinition(name="intake", settings=ServiceSettings(service_name="intake"),
                                     migrations=Path("/nonexistent")))


async def test_readiness_is_every_check_and_names_each_failure():
    rt = runtime()
    ok, checks = rt.readiness()
    assert not ok and checks == {"service": "not started"}
    rt.ready = True
    rt.add_check("database", lambda: None)
    rt.add_check("broker", lambda: "no metadata from the brokers")

    def broken():
        raise RuntimeError("boom")

    rt.add_check("relay", broken)
    ok, checks = rt.readiness()
    assert not ok
    assert checks == {"service": "ok", "database": "ok", "broker": "no metadata from the brokers",
                      "relay": "check failed: RuntimeError"}
    rt.add_check("broker", lambda: None)
    rt.add_check("relay", lambda: None)
    assert rt.readiness() == (True, {"service": "ok", "database": "ok", "broker": "ok", "relay": "ok"})


async def test_a_dead_background_task_fails_readiness_and_a_failed_start_fails_liveness():
    rt = runtime()

    async def dies():
        raise ValueError("bug")

    async def runs():
        await asyncio.sleep(3600)

    rt.tasks = [asyncio.create_task(runs(), name="outbox-relay"), asyncio.create_task(dies(), name="area_reranks")]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert rt.tasks_check() == "background task(s) ended: area_reranks"
    rt.tasks[0].cancel()
    await asyncio.gather(*rt.tasks, return_exceptions=True)
    assert rt.liveness() is None
    rt.fatal = "start failed: RuntimeError"
    assert rt.liveness() == "start failed: RuntimeError"
    assert rt.readiness()[1]["service"] == "start failed: RuntimeError"
