"""Background loops that must never die: run one attempt after another, forever.

A service's long-running tasks (the outbox relay, the outbox monitor, retention, a
poll loop of its own, ...) all need the same plumbing: retry after a failure with
exponential backoff, reset the backoff after a good attempt, log an unexpected failure
with its stack (and an expected, transient one as a one-line warning, so an outage does
not flood the log), count what happens, and stop promptly and cleanly on shutdown.
Written once here so each loop only says what one attempt is. Log lines carry the
error's type name only for transient errors: their messages may quote data (a database
error's detail can hold a row's values).

    await run_forever("outbox relay", relay.lead, backoff=Backoff(0.2, 10), expected=db.is_transient)
    await periodic("hold sweep", 30.0, sweep_once, backoff=Backoff(0.2, 10), expected=db.is_transient)

    tasks = BackgroundTasks("verify")
    tasks.start("hold sweep", periodic("hold sweep", 30.0, sweep_once, backoff=...))
    ...
    await tasks.stop()   # cancel every task, wait for them (bounded), log the ones that would not stop

Metrics (labelled by service and task): `regsosek_background_attempts_total`,
`regsosek_background_failures_total` (with `expected` "true"/"false"), and
`regsosek_background_last_success_timestamp_seconds`. The service label is the `service`
argument, else the service of the `BackgroundTasks` that started the task, else "regsosek".
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn

from prometheus_client import Counter, Gauge

from regsosek.db import Backoff

log = logging.getLogger("regsosek.background")

ATTEMPTS = Counter("regsosek_background_attempts_total", "Attempts a background task started", ["service", "task"])
FAILURES = Counter(
    "regsosek_background_failures_total",
    "Attempts of a background task that failed (expected: a transient failure such as an outage)",
    ["service", "task", "expected"])
LAST_SUCCESS = Gauge(
    "regsosek_background_last_success_timestamp_seconds",
    "When an attempt of a background task last completed without an error", ["service", "task"])

# The service a task started by `BackgroundTasks.start` belongs to (the metrics' service label).
_service: contextvars.ContextVar[str] = contextvars.ContextVar("regsosek_background_service", default="regsosek")


def _log_failure(lg: logging.Logger, name: str, error: Exception, expected: bool, retry_in_s: float) -> None:
    fields = {"task": name, "error": type(error).__name__, "retry_in_s": retry_in_s}
    if expected:
        lg.warning("%s interrupted, retrying", name, exc_info=True, extra={"fields": fields})
    else:
        lg.exception("%s failed unexpectedly, retrying", name, extra={"fields": fields})


async def _recover(lg: logging.Logger, name: str, on_error: Callable[[BaseException], Awaitable[None]],
                   error: Exception) -> None:
    try:
        await on_error(error)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - recovery failing is logged, never fatal
        lg.exception("%s: recovery after a failure failed", name, extra={"fields": {"task": name}})


async def run_forever(
    name: str,
    attempt: Callable[[], Awaitable[object]],
    *,
    backoff: Backoff,
    expected: Callable[[BaseException], bool] = lambda e: False,
    on_error: Callable[[BaseException], Awaitable[None]] | None = None,
    logger: logging.Logger | None = None,
    service: str | None = None,
) -> NoReturn:
    """Await `attempt()` again and again until cancelled.

    An attempt that returns resets the backoff and the next one starts at once (an
    attempt that has nothing to do should wait inside, e.g. for a wake-up or a poll
    interval; `periodic` does that for a fixed interval). An attempt that raises is
    logged (a warning when `expected(error)`, else with the stack), `on_error(error)`
    runs (e.g. to drop a broken client), and the next attempt waits for the backoff.
    `on_error` failing is logged, never fatal. Cancellation propagates immediately.
    Every attempt, failure and success is counted (module docstring).
    """
    lg = logger or log
    labels = (service or _service.get(), name)
    while True:
        ATTEMPTS.labels(*labels).inc()
        try:
            await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the loop outlives every failure by design
            transient = expected(e)
            FAILURES.labels(*labels, "true" if transient else "false").inc()
            _log_failure(lg, name, e, transient, backoff.delay)
            if on_error is not None:
                await _recover(lg, name, on_error, e)
            await backoff.wait()
        else:
            LAST_SUCCESS.labels(*labels).set(time.time())
            backoff.reset()


async def periodic(
    name: str,
    interval_s: float,
    attempt: Callable[[], Awaitable[object]],
    *,
    backoff: Backoff,
    expected: Callable[[BaseException], bool] = lambda e: False,
    on_error: Callable[[BaseException], Awaitable[None]] | None = None,
    logger: logging.Logger | None = None,
    service: str | None = None,
    wait_first: bool = False,
) -> NoReturn:
    """A poll loop: `attempt()`, then `interval_s` of sleep, forever (`run_forever`'s logging,
    backoff after a failure instead of the interval, metrics and cancellation). With
    `wait_first`, the first attempt comes after one interval rather than at once."""
    if wait_first:
        await asyncio.sleep(interval_s)

    async def attempt_then_wait() -> None:
        await attempt()
        await asyncio.sleep(interval_s)

    await run_forever(name, attempt_then_wait, backoff=backoff, expected=expected, on_error=on_error,
                      logger=logger, service=service)


class IdlePoll:
    """How long a loop that looks for work (rows another process wrote: the relay, notify's
    deliveries) waits before looking again: not at all after it found some, `first` after the first
    empty look, twice as long after each further one, at most `longest`. Work another process adds
    after a quiet spell waits at most `longest`; while work keeps coming the loop looks every
    `first` (its own process's commits wake it sooner: `wait_woken`)."""

    def __init__(self, first: float, longest: float) -> None:
        self._backoff = Backoff(first, max(first, longest))

    def after(self, found: int) -> float:
        if found:
            self._backoff.reset()
            return 0.0
        return self._backoff.next_delay()


async def wait_woken(woken: asyncio.Event, seconds: float) -> None:
    """Waits `seconds`, or until `woken` is set (clear it before looking for work, so that a commit
    while looking is not missed)."""
    if seconds <= 0:
        return
    try:
        await asyncio.wait_for(woken.wait(), seconds)
    except TimeoutError:
        pass


class BackgroundTasks:
    """The background tasks of one running service: started by name, watched (a task that
    ends is a part that stopped: `check()` for readiness, and its error is logged at once),
    and stopped together on shutdown."""

    def __init__(self, service: str, *, logger: logging.Logger | None = None) -> None:
        self.service = service
        self.log = logger or log
        self.tasks: list[asyncio.Task] = []

    def start(self, name: str, work: Coroutine[Any, Any, object]) -> asyncio.Task:
        """Runs `work` as a task named `name`; run_forever/periodic inside it label their metrics
        with this service."""
        context = contextvars.copy_context()
        context.run(_service.set, self.service)
        task = asyncio.get_running_loop().create_task(work, name=name, context=context)
        task.add_done_callback(self._ended)
        self.tasks.append(task)
        return task

    def _ended(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        error = task.exception()
        fields = {"task": task.get_name(), "service": self.service}
        if error is not None:
            self.log.error("background task died", exc_info=error,
                           extra={"fields": {**fields, "error": type(error).__name__}})
        else:
            self.log.error("background task ended (it should run until shutdown)", extra={"fields": fields})

    def dead(self) -> list[str]:
        """Names of tasks that ended other than by cancellation."""
        return [t.get_name() for t in self.tasks if t.done() and not t.cancelled()]

    def check(self) -> str | None:
        """Readiness check: None while every task runs."""
        dead = self.dead()
        return f"background task(s) ended: {', '.join(dead)}" if dead else None

    async def stop(self, timeout_s: float = 10.0) -> list[str]:
        """Cancels every task and waits up to `timeout_s` for them to finish; returns (and logs)
        the names of those still running then. Safe to call twice."""
        for t in self.tasks:
            t.cancel()
        if not self.tasks:
            return []
        _, pending = await asyncio.wait(self.tasks, timeout=timeout_s)
        stuck = [t.get_name() for t in pending]
        if stuck:
            self.log.error("background tasks did not stop when cancelled",
                           extra={"fields": {"tasks": stuck, "service": self.service, "waited_s": timeout_s}})
        return stuck
