"""What reached the reference receiver (regsosek_tools.receiver): how many distinct events, when each
family's eligibility event arrived, and the wait until every expected family's event is there."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from regsosek.progress import Progress, progress


def stalled(quiet_s: float, flowing: bool, lag: dict[str, int] | None, stall_timeout: float) -> bool:
    """Whether a phase whose sending is done has stopped delivering: nothing new at the receiver for
    `stall_timeout` s, or for 20 s with no consumer group behind once events have started to arrive
    (`flowing`). Before the first event they may still sit in intake's outbox, which no lag shows: a
    busy machine delayed a phase's first events by more than 20 s."""
    if quiet_s > stall_timeout:
        return True
    return quiet_s > 20 and flowing and lag is not None and not any(lag.values())


class Deliveries:
    """The receiver at `receiver_url`, read with `http` (an httpx.AsyncClient). A wait ends
    complete, stalled (nothing new for `stall_timeout` s, or 20 s with no consumer lag left) or
    at `phase_timeout`; `latest_lag` and `log` report progress where no terminal shows a bar."""

    def __init__(self, http: Any, receiver_url: str, *, phase_timeout: float, stall_timeout: float,
                 latest_lag: Callable[[], dict[str, int] | None], log: Callable[[str], None],
                 progress_every: float) -> None:
        self.http, self.receiver_url = http, receiver_url
        self.phase_timeout, self.stall_timeout = phase_timeout, stall_timeout
        self.latest_lag, self.log, self.progress_every = latest_lag, log, progress_every

    async def receiver_unique(self) -> int:
        r = await self.http.get(f"{self.receiver_url}/stats", timeout=10)
        return int(r.json().get("unique", 0))

    async def receiver_families(self) -> dict[str, float]:
        """family id -> when the receiver got its (latest) eligibility event, epoch seconds."""
        r = await self.http.get(f"{self.receiver_url}/families", timeout=60)
        out = {}
        for fid, rec in r.json()["families"].items():
            ts = rec.get("received_at")
            if ts:
                out[fid] = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        return out

    async def wait_delivered(self, expected: set[str], base: int, *, sending_done: asyncio.Event,
                             label: str) -> tuple[dict[str, float], str]:
        """Wait until the receiver holds every `expected` family's event; returns their
        receive times and how the wait ended (complete | stalled | timeout). The caller
        removes from `expected` the families intake refused, as it learns of them."""
        with progress(f"{label}: delivered", len(expected), unit="families",
                      log_every_s=self.progress_every) as bar:
            return await self._wait_delivered(expected, base, sending_done=sending_done, label=label, bar=bar)

    async def _wait_delivered(self, expected: set[str], base: int, *, sending_done: asyncio.Event, label: str,
                              bar: Progress) -> tuple[dict[str, float], str]:
        deadline = time.monotonic() + self.phase_timeout
        last_unique, last_change = base, time.monotonic()
        last_full, last_progress = 0.0, 0.0
        got: dict[str, float] = {}
        while True:
            if bar.total != len(expected):
                bar.set_total(len(expected))  # less the families intake refused
            bar.advance_to(min(last_unique - base, len(expected)))
            with contextlib.suppress(Exception):
                unique = await self.receiver_unique()
                if unique != last_unique:
                    last_unique, last_change = unique, time.monotonic()
                now = time.monotonic()
                if sending_done.is_set() and unique - base >= len(expected) and now - last_full > 3.0:
                    last_full = now
                    fams = await self.receiver_families()
                    got = {f: fams[f] for f in expected if f in fams}
                    if len(got) == len(expected):
                        return got, "complete"
            now = time.monotonic()
            if now - last_progress > self.progress_every:
                last_progress = now
                shown = self.latest_lag() or {}
                lag_text = "lag " + " ".join(f"{k} {v}" for k, v in shown.items())
                if not bar.note(lag_text):  # on a terminal the bar shows count, rate, ETA and the lag
                    self.log(f"{label}: receiver {last_unique - base}/{len(expected)}  {lag_text}")
            quiet = now - last_change
            lag = self.latest_lag()
            if sending_done.is_set() and not expected:
                return {}, "complete"
            if sending_done.is_set() and stalled(quiet, last_unique > base, lag, self.stall_timeout):
                fams = await self.receiver_families()
                return {f: fams[f] for f in expected if f in fams}, "stalled"
            if now > deadline:
                with contextlib.suppress(Exception):
                    fams = await self.receiver_families()
                    got = {f: fams[f] for f in expected if f in fams}
                return got, "timeout"
            await asyncio.sleep(0.5)
