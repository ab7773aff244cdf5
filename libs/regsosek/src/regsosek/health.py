"""What the probes read: checks that must ask something outside the process (the
database, the broker, the schema) and the event loop's own health.

- `Probe`: a check that queries something runs in a background task every
  `interval_s`, each attempt bounded by `timeout_s`; readiness reads its last result
  (cached, so a probe request never waits on the database and a burst of probes
  costs nothing). A probe whose task stopped running reports that too.
- `LoopWatchdog`: a heartbeat task on the event loop stamps the time every `beat_s`;
  a thread off the loop reads the stamp, exports `regsosek_event_loop_lag_seconds`,
  and, when the loop has not come round for `log_s`, logs where it is stuck (file,
  line and function of the loop thread's frames; never values). `/livez` answers 503
  while the lag exceeds `limit_s` (the heartbeat died or is starved). A loop stuck
  for good cannot answer `/livez` at all: the kubelet's probe timeout restarts it,
  and the watchdog's log line says where it was stuck.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from regsosek import db
from regsosek.metrics import EVENT_LOOP_LAG, EVENT_LOOP_STALLS, PROBE_OK

log = logging.getLogger("regsosek.health")

Clock = Callable[[], float]


class Probe:
    """A readiness check backed by a periodic query (see the module docstring)."""

    def __init__(self, service: str, name: str, attempt: Callable[[], Awaitable[str | None]], *,
                 interval_s: float, timeout_s: float, clock: Clock = time.monotonic) -> None:
        self.service, self.name, self.attempt = service, name, attempt
        self.interval_s, self.timeout_s, self.clock = interval_s, timeout_s, clock
        self.result: str | None = "not checked yet"
        self.checked_at: float | None = None

    async def run_once(self) -> str | None:
        try:
            problem = await asyncio.wait_for(self.attempt(), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            problem = f"no answer within {self.timeout_s:g}s"
        except Exception as e:  # noqa: BLE001 - the reason is the error's type: messages may quote data
            problem = f"unreachable ({type(e).__name__})"
        self.result, self.checked_at = problem, self.clock()
        PROBE_OK.labels(self.service, self.name).set(0 if problem else 1)
        return problem

    async def run(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval_s)

    def check(self) -> str | None:
        """The readiness check: the last result, unless it is too old to trust."""
        if self.checked_at is None:
            return self.result
        age = self.clock() - self.checked_at
        if age > 2 * self.interval_s + self.timeout_s:
            return f"last checked {age:.0f}s ago (the probe is not running)"
        return self.result


class DatabaseProbe:
    """`select 1` on a connection of its own, outside the service's pool: a pool busy
    with long work is not a database outage. Reconnects after any failure."""

    def __init__(self, dsn: str, *, timeout_s: float) -> None:
        self.dsn, self.timeout_s = dsn, timeout_s
        self.conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(self.dsn, timeout=self.timeout_s)
        return self.conn

    async def ping(self) -> str | None:
        try:
            conn = await self._connection()
            await conn.fetchval("select 1", timeout=self.timeout_s)
            return None
        except BaseException:
            await self.close()
            raise

    async def pending(self, migrations: Path, service: str) -> str | None:
        """The schema check: None when every migration this code needs is applied."""
        try:
            missing = await db.pending_migrations(await self._connection(), migrations)
        except BaseException:
            await self.close()
            raise
        if not missing:
            return None
        return (f"schema behind: {len(missing)} migration(s) not applied (first {missing[0]}); "
                f"run python -m regsosek.migrate --service {service}")

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.terminate()


class LoopWatchdog:
    """Event-loop lag, measured from a thread (see the module docstring)."""

    def __init__(self, service: str, *, beat_s: float = 0.5, limit_s: float = 10.0, log_s: float = 2.0,
                 clock: Clock = time.monotonic) -> None:
        self.service, self.beat_s, self.limit_s, self.log_s, self.clock = service, beat_s, limit_s, log_s, clock
        self.last_beat = clock()
        self.loop_thread: int | None = None
        self.peak = 0.0  # the largest lag of the current episode
        self._reported = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task | None = None

    # on the loop
    async def heartbeat(self) -> None:
        self.loop_thread = threading.get_ident()
        while True:
            self.last_beat = self.clock()
            await asyncio.sleep(self.beat_s)

    # anywhere
    def lag(self, now: float | None = None) -> float:
        """How late the loop is: time since the last heartbeat beyond its sleep."""
        now = self.clock() if now is None else now
        return max(0.0, now - self.last_beat - self.beat_s)

    def problem(self) -> str | None:
        """The liveness check."""
        lag = self.lag()
        if lag > self.limit_s:
            return f"event loop {lag:.1f}s late (limit {self.limit_s:g}s)"
        return None

    # on the watchdog thread
    def sample(self, now: float | None = None) -> float:
        lag = self.lag(now)
        EVENT_LOOP_LAG.labels(self.service).set(lag)
        if lag >= self.log_s:
            self.peak = max(self.peak, lag)
            if not self._reported:
                self._reported = True
                EVENT_LOOP_STALLS.labels(self.service).inc()
                log.warning("event loop stuck", extra={"fields": {"lag_s": round(lag, 2), "loop_stack": self.loop_stack()}})
        elif self._reported:
            log.warning("event loop running again", extra={"fields": {"stuck_s": round(self.peak + self.beat_s, 2)}})
            self._reported, self.peak = False, 0.0
        return lag

    def loop_stack(self) -> list[str]:
        """Where the loop thread is now: file:line in function, innermost last (no values)."""
        frame = sys._current_frames().get(self.loop_thread) if self.loop_thread is not None else None
        if frame is None:
            return []
        return [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_stack(frame)][-15:]

    def _watch(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - the watchdog must outlive a failed sample
                log.exception("loop watchdog sample failed")

    def start(self) -> None:
        """Starts the heartbeat on the running loop and the watching thread."""
        self.last_beat = self.clock()
        self.loop_thread = threading.get_ident()  # start() runs on the loop's thread
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self.heartbeat(), name="loop-heartbeat")
        self._thread = threading.Thread(target=self._watch, name=f"loop-watchdog-{self.service}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2 * self.beat_s + 1)
