"""Submitting families to intake: batches from devices one after another (a throughput load), and
single submissions at fixed offered rates regardless of answers (an open-loop latency load). Each
records what it sent and what intake answered; `figures` then combines that with when each family's
eligibility event reached the receiver."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson

from regsosek_tools.load.families import Family
from regsosek_tools.load.http import Intake
from regsosek_tools.load.pacing import due
from regsosek_tools.measure.stats import distribution, percentile

Post = Callable[[bytes], Awaitable[tuple[int, bytes, float]]]
_RETRIED = (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


async def post_with_retry(intake: Intake, raw: bytes, attempts: int = 6) -> tuple[int, bytes, float]:
    """A submission (idempotent by its id), repeated through 5xx, 429 and connection errors; returns
    (last status, last body, when it was first sent)."""
    delay, first_sent = 0.2, None
    for i in range(attempts):
        try:
            status, body, sent = await intake.request(raw)
            first_sent = first_sent or sent
            if status < 500 and status != 429:
                return status, body, first_sent
        except _RETRIED as e:
            status, body = 0, f"{type(e).__name__}".encode()
            first_sent = first_sent or time.time()
        if i == attempts - 1:
            return status, body, first_sent
        await asyncio.sleep(delay)
        delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")


class BatchUpload:
    """`devices` devices upload the families in batches (POST /v1/interviews:batch), each device one
    batch after another. `expected` (the families to be decided) loses those intake does not take."""

    def __init__(self, intake: Intake, post: Post, token: Callable[[int], str], fams: list[Family], *,
                 batch_size: int, devices: int) -> None:
        self.intake, self.post, self.token = intake, post, token
        self.fams, self.batch_size, self.devices = fams, batch_size, devices
        self.batches = [fams[i:i + batch_size] for i in range(0, len(fams), batch_size)]
        self.expected = {f.family_id for f in fams if f.decided}
        self.counts = {"accepted": 0, "duplicate": 0, "refused": 0, "failed_requests": 0}
        self.first_sent: list[float] = []
        self.last_answer = 0.0
        self.problems: list[str] = []

    async def run(self, done: asyncio.Event) -> None:
        """Every batch sent; `done` set at the end, also on failure or cancellation."""
        queue: asyncio.Queue[list[Family]] = asyncio.Queue()
        for b in self.batches:
            queue.put_nowait(b)
        try:
            await asyncio.gather(*(self._device(k, queue) for k in range(self.devices)))
        finally:
            done.set()

    async def _device(self, k: int, queue: asyncio.Queue[list[Family]]) -> None:
        token = self.token(k)
        while not queue.empty():
            batch = queue.get_nowait()
            body = b'{"interviews":[' + b",".join(f.body for f in batch) + b"]}"
            status, text, sent = await self.post(self.intake.build("POST", "/v1/interviews:batch", body, token))
            self.first_sent.append(sent)
            self.last_answer = time.time()
            self._answered(batch, status, text)

    def _answered(self, batch: list[Family], status: int, text: bytes) -> None:
        if status != 200:
            self.counts["failed_requests"] += 1
            self.expected.difference_update(f.family_id for f in batch)
            if len(self.problems) < 5:
                self.problems.append(f"batch: HTTP {status} {text[:200]!r}")
            return
        for item in orjson.loads(text)["results"]:
            st = item.get("status")
            if st == 202:
                self.counts["accepted"] += 1
            elif st == 200:
                self.counts["duplicate"] += 1
            else:
                self.counts["refused"] += 1
                self.expected.discard(batch[item["index"]].family_id)
                if len(self.problems) < 5:
                    self.problems.append(f"item: {json.dumps(item)[:200]}")

    def figures(self, got: dict[str, float], ended: str, *, cpu0: float, bench_now: float) -> dict:
        """Throughput from the first request to the last expected event at the receiver (`got`: family
        id -> receive time), intake's acceptance rate, and what was not taken."""
        fams, counts = self.fams, self.counts
        start = min(self.first_sent) if self.first_sent else None
        end = max(got.values()) if got else None
        span = (end - start) if start and end else None
        accept_span = (self.last_answer - start) if start else None
        missing = len(self.expected) - len(got)
        if not counts["accepted"] and not counts["duplicate"]:
            ended = "nothing accepted"
        res = {
            "families": len(fams), "decided_expected": len(self.expected), "decided_delivered": len(got),
            "undelivered": missing, "ended": ended, "batch_size": self.batch_size, "devices": self.devices,
            **counts,
            "span_s": span, "families_per_s": (len(fams) / span) if span and not missing else None,
            "decided_per_s": (len(got) / span) if span else None,
            "accept_span_s": accept_span,
            "accepted_per_s": (counts["accepted"] / accept_span) if accept_span else None,
            "generator_cpu_s": round(time.process_time() - cpu0, 2),
            "problems": self.problems,
            "t_start": round(start - time.time() + bench_now, 2) if start else None,
        }
        if missing or self.not_taken():
            res["families_per_s_partial"] = (len(fams) / span) if span else None
        if self.not_taken():
            res["families_per_s"] = None
        return res

    def not_taken(self) -> int:
        return self.counts["refused"] + self.batch_size * self.counts["failed_requests"]


class OpenLoop:
    """Single submissions (POST /v1/interviews) sent at the offsets of `schedule`, each when it is due
    whatever intake answers to the earlier ones (no coordinated omission)."""

    def __init__(self, intake: Intake, post: Post, fams: list[Family], offsets: Sequence[float],
                 token: Callable[[str], str]) -> None:
        self.intake, self.post, self.offsets = intake, post, offsets
        self.fams = fams[:len(offsets)]
        n = len(self.fams)
        self.reqs = [intake.build("POST", "/v1/interviews", f.body, token(f.officer)) for f in self.fams]
        self.sent_at: list[float | None] = [None] * n
        self.due_at: list[float] = [0.0] * n  # wall time each request was due by the schedule
        self.lateness: list[float] = []
        self.status: list[int] = [0] * n
        self.answered: list[float] = []
        self.expected = {f.family_id for f in self.fams if f.decided}  # less those intake does not accept
        self.tasks: set[asyncio.Task] = set()
        self.window_end = 0.0
        self.window_busy = 0
        self.wall0 = self.mono0 = 0.0

    async def run(self, done: asyncio.Event, *, answers_timeout: float,
                  at_window_end: Callable[[], None] = lambda: None) -> None:
        """Sends on schedule, notes the window's end (`at_window_end` too), waits for the answers
        (bounded), then sets `done`."""
        loop = asyncio.get_running_loop()
        self.intake.busy_max = 0
        self.mono0 = loop.time() + 0.2
        self.wall0 = time.time() + 0.2
        i, n = 0, len(self.fams)
        while i < n:
            j = due(self.offsets, i, loop.time() - self.mono0)
            for k in range(i, j):
                t = asyncio.create_task(self._send(k, self.mono0 + self.offsets[k]))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)
            i = j
            if i < n:
                await asyncio.sleep(max(0.0, self.mono0 + self.offsets[i] - loop.time()))
        self.window_end = time.time()
        self.window_busy = self.intake.busy_max
        at_window_end()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=answers_timeout)
        done.set()

    async def _send(self, i: int, scheduled: float) -> None:
        st, _, sent = await self.post(self.reqs[i])
        self.sent_at[i], self.status[i] = sent, st
        self.due_at[i] = self.wall0 + (scheduled - self.mono0)
        if st != 202:
            self.expected.discard(self.fams[i].family_id)
        self.lateness.append(max(0.0, (sent - self.wall0) - (scheduled - self.mono0)))
        self.answered.append(time.time())

    def cancel(self) -> None:
        for t in self.tasks:
            if not t.done():
                t.cancel()

    def figures(self, got: dict[str, float], ended: str, rate: int, duration: float) -> dict:
        """Rates sent and accepted, latency (send -> event at the receiver, and from when the schedule
        said to send), its trend over the window, and the backlog when the window closed."""
        fams, sent_at, status, n = self.fams, self.sent_at, self.status, len(self.fams)
        accepted = [i for i in range(n) if status[i] == 202]
        want = [i for i in accepted if fams[i].decided]
        arrived = [i for i in want if fams[i].family_id in got and sent_at[i]]
        lat = [got[fams[i].family_id] - (sent_at[i] or 0.0) for i in arrived]
        lat_sched = [got[fams[i].family_id] - self.due_at[i] for i in arrived]
        sent_times = sorted(t for t in sent_at if t)
        in_window = sum(1 for t in sent_times if t <= self.wall0 + duration + 0.05)
        first = sent_times[0] if sent_times else None
        backlog = sum(1 for i in want if sent_at[i] and (sent_at[i] or 0.0) <= self.window_end
                      and got.get(fams[i].family_id, math.inf) > self.window_end)
        # Latency trend: the first and last quarter of the window by send time.
        by_send = sorted(((sent_at[i] or 0.0), got[fams[i].family_id] - (sent_at[i] or 0.0)) for i in arrived)
        q = max(1, len(by_send) // 4)
        accept_span = (max(self.answered) - first) if self.answered and first else None
        return {
            "rate": rate, "duration_s": duration, "offered": n,
            "sent_in_window": in_window, "sent_rate": in_window / duration,
            "accepted": len(accepted), "not_accepted": n - len(accepted),
            "statuses": {str(k): status.count(k) for k in sorted(set(status))},
            "accepted_rate": (len(accepted) / accept_span) if accept_span else None,
            "decided_expected": len(want), "delivered": len(lat), "undelivered": len(want) - len(lat), "ended": ended,
            "latency_s": distribution(lat),
            # From when the schedule said to send: includes waiting for a free connection when intake
            # answers too slowly (what an open-loop client would see without coordinated omission).
            "latency_from_schedule_s": distribution(lat_sched),
            "p50_first_quarter_s": percentile([x for _, x in by_send[:q]], 50),
            "p50_last_quarter_s": percentile([x for _, x in by_send[-q:]], 50),
            "send_lateness_s": distribution(self.lateness),
            "backlog_at_window_end": backlog,
            "connections_busy_max": self.window_busy,
        }
