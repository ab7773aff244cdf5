"""Progress of long work (replay, re-rank, calibration, the benchmark, `make run`).

    with progress("replay", total=n_families, unit="families") as p:
        ...
        p.update(len(batch))

On a terminal: a tqdm bar on stderr with count, rate and ETA. Anywhere else (a
Kubernetes Job, CI, a redirected log): one log line every `log_every_s` seconds
(REGSOSEK_PROGRESS_LOG_S, default 10) and one at the end, with done, total, rate and
ETA as fields, so `kubectl logs job/...` shows how far it got. Counts only, never
what is being counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

from tqdm import tqdm

log = logging.getLogger("regsosek.progress")
T = TypeVar("T")


def _default_log_every() -> float:
    try:
        return max(0.1, float(os.environ.get("REGSOSEK_PROGRESS_LOG_S", "10")))
    except ValueError:
        return 10.0


class Progress:
    def __init__(self, what: str, total: int | None = None, *, unit: str = "items", initial: int = 0,
                 stream: IO[str] | None = None, bar: bool | None = None, log_every_s: float | None = None,
                 logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.unit, self.done, self.initial = what, total, unit, initial, initial
        self.stream = stream if stream is not None else sys.stderr
        self.log_every_s = _default_log_every() if log_every_s is None else log_every_s
        self.log = logger or log
        self.clock = clock
        self.started = self.last_logged = clock()
        use_bar = bar if bar is not None else _is_terminal(self.stream)
        self.bar: tqdm | None = (tqdm(total=total, initial=initial, desc=what, unit=f" {unit}", file=self.stream,
                                      dynamic_ncols=True, smoothing=0.1, mininterval=0.5) if use_bar else None)

    def rate(self) -> float:
        elapsed = self.clock() - self.started
        return (self.done - self.initial) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        if self.total is None or rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self, n: int = 1) -> None:
        if self.total is not None:
            n = max(0, min(n, self.total - self.done))  # an estimate never runs past its total
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.clock() - self.last_logged >= self.log_every_s:
            self._log_line("progress")

    def advance_to(self, done: int) -> None:
        """Sets the count (e.g. from a report) instead of adding to it."""
        self.update(done - self.done) if done >= self.done else None

    def note(self, text: str) -> bool:
        """Shows `text` beside the bar (e.g. consumer lag); False when there is no bar (log it yourself)."""
        if self.bar is None:
            return False
        self.bar.set_postfix_str(text, refresh=False)
        return True

    def fields(self) -> dict:
        f: dict = {"task": self.what, "done": self.done, "unit": self.unit, "rate_per_s": round(self.rate(), 1),
                   "elapsed_s": round(self.clock() - self.started, 1)}
        if self.total is not None:
            f["total"] = self.total
            f["percent"] = round(100.0 * self.done / self.total, 1) if self.total else 100.0
            eta = self.eta_s()
            if eta is not None:
                f["eta_s"] = round(eta)
        return f

    def _log_line(self, msg: str) -> None:
        self.last_logged = self.clock()
        f = self.fields()
        total = f"/{f['total']}" if "total" in f else ""
        eta = f", ETA {f['eta_s']}s" if "eta_s" in f else ""
        self.log.info("%s %s: %d%s %s, %.1f/s%s", self.what, msg, self.done, total, self.unit, f["rate_per_s"], eta,
                      extra={"fields": f})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        else:
            self._log_line("done")


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def progress(what: str, total: int | None = None, **kwargs) -> Iterator[Progress]:
    p = Progress(what, total, **kwargs)
    try:
        yield p
    finally:
        p.close()


def iterate(items: Iterable[T], what: str, total: int | None = None, **kwargs) -> Iterator[T]:
    """`items`, counting each one."""
    with progress(what, total, **kwargs) as p:
        for item in items:
            yield item
            p.update(1)
