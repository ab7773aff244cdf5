"""Group commit: concurrent callers' items handled together, one call (one transaction) per group.

A service whose HTTP callers each send one small command (intake's single submissions) pays a
transaction per request: BEGIN, its statements, the outbox write and COMMIT, i.e. ~1.5–2.6 ms of
PostgreSQL's CPU and several round trips each (BENCHMARKS.md, intake round 7), where the same
items uploaded together cost a fraction of that. `Grouped` gives each caller its own answer while
the items that arrived together share one call of `run`:

- **no waiting window**: up to `in_flight` groups run at once; an item that arrives while they all
  run waits for the next group, which takes everything waiting (up to `max_items`). At low rates
  every item runs alone at once, as before; under load the groups grow by themselves;
- each caller gets `run`'s result at its own position, or the exception its group raised;
- **a failed group is not everyone's failure**: when `run` raises for a group of several items
  and `alone(error)` says the error may be one item's doing (not an outage), each item is run
  again alone, so a bad item fails only its own caller. An outage (`alone` false) fails the group
  at once, without a retry per item against a database that is down;
- `run` is called in a task of its own with an empty context: whatever a caller's context holds
  (its trace) is the caller's to put in its item.

Hand-written because what the PyPI batchers offer (a time window to fill a batch, no retry of a
failed group's items one by one) adds latency to every request at low rates and would let one bad
item fail its neighbours; the rule above is ~60 lines.

    grouped = Grouped("intake submissions", accept_all, in_flight=2, max_items=100,
                      alone=lambda e: not db.is_transient(e))
    result = await grouped.submit(item)

Metrics (labelled by the group's name): `regsosek_group_items` (a histogram of the items run
together: how much the groups share), `regsosek_group_failures_total` (`alone` "true" when its items
were then run one by one, "false" for an outage).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram

log = logging.getLogger("regsosek.grouping")

T = TypeVar("T")
R = TypeVar("R")

GROUP_ITEMS = Histogram("regsosek_group_items", "Items run together in one group (group commit)", ["group"],
                        buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500))
GROUP_FAILURES = Counter("regsosek_group_failures_total",
                         "Groups whose run failed (alone: its items were then run one by one)", ["group", "alone"])


class Grouped(Generic[T, R]):
    """`submit(item)` → `run`'s result for that item, `run` called once per group (see the module)."""

    def __init__(self, name: str, run: Callable[[list[T]], Awaitable[Sequence[R]]], *, in_flight: int,
                 max_items: int, alone: Callable[[BaseException], bool]) -> None:
        if in_flight < 1 or max_items < 1:
            raise ValueError("in_flight and max_items must be at least 1")
        self._items = GROUP_ITEMS.labels(name)
        self._failed = {alone: GROUP_FAILURES.labels(name, str(alone).lower()) for alone in (True, False)}
        self._run, self._in_flight, self._max_items, self._alone = run, in_flight, max_items, alone
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, answer))
        if len(self._tasks) < self._in_flight:
            task = loop.create_task(self._drain(), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await answer

    async def _drain(self) -> None:
        me = asyncio.current_task()
        group: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                group = [self._waiting.popleft() for _ in range(min(self._max_items, len(self._waiting)))]
                await self._answer(group)
                group = []
        finally:
            # left in the same step that found nothing waiting: a later submit starts a new task
            self._tasks.discard(me)  # type: ignore[arg-type]
            for _, answer in group:  # cancelled (shutdown): no caller waits for an answer that will not come
                answer.cancel()
            if not self._tasks:
                while self._waiting:
                    self._waiting.popleft()[1].cancel()

    async def _answer(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._items.observe(len(group))
        try:
            results = await self._run([item for item, _ in group])
        except Exception as e:
            alone = len(group) > 1 and self._alone(e)
            self._failed[alone].inc()
            if not alone:
                for _, answer in group:
                    _settle(answer, error=e)
                return
            # the exception's type and stack, never its message (regsosek.telemetry's formatter)
            log.warning("a group failed; each of its items is run again alone", exc_info=True,
                        extra={"fields": {"items": len(group)}})
            for item, answer in group:
                try:
                    (result,) = await self._run([item])
                except Exception as alone_error:
                    _settle(answer, error=alone_error)
                else:
                    _settle(answer, result)
            return
        if len(results) != len(group):
            error = RuntimeError(f"a group of {len(group)} items gave {len(results)} results")
            for _, answer in group:
                _settle(answer, error=error)
            return
        for (_, answer), result in zip(group, results, strict=True):
            _settle(answer, result)


def _settle(answer: asyncio.Future, result: object = None, *, error: BaseException | None = None) -> None:
    if answer.done():  # its caller went away (cancelled)
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)
