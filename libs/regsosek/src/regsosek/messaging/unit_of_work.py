"""The unit of work: one database transaction with the outbox its events go to.

A consumer hands one to each handler (`EventConsumer`); a command or background task opens
its own with `unit_of_work`. It lives apart from the consumer so that what only writes
(an operator command's workers, a store) does not import the Kafka client.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry import trace

from regsosek.envelope import source_of
from regsosek.messaging.outbox import Outbox

if TYPE_CHECKING:
    from regsosek.messaging.consumer import Incoming

_tracer = trace.get_tracer("regsosek.consumer")


@dataclass(slots=True)
class _Deferred:
    work: Callable[[], Awaitable[None]]
    context: otel_context.Context  # of the latest event that asked for the work
    causes: list[trace.SpanContext]  # every event that asked for it, in order


@dataclass(slots=True)
class UnitOfWork:
    """What a handler may touch: the transaction's connection and the outbox, plus a
    scratch `cache` that lives as long as the transaction (e.g. an SLS roster read by
    several events of one batch) and work `defer`red to just before commit, once per key
    (e.g. one recount per SLS instead of one per event).

    Deferred work runs in the trace of the event that last asked for it, with links to
    every other event that asked for it, so what it publishes (e.g. `sls-completed`)
    carries the trace of the events that caused it rather than none.

    `batch`: every event this transaction applies, in order (one partition's share of a
    fetched batch; empty outside the consumer), so that a handler can load the state of
    all of them in one statement instead of one per event.

    `isolated`: the events are applied each in a savepoint of its own (a batch that failed,
    redone to find the failing event): a handler then does no other event's work, so that
    what fails is the event that owns it."""

    conn: asyncpg.Connection
    outbox: Outbox
    cache: dict = field(default_factory=dict)
    deferred: dict[Hashable, _Deferred] = field(default_factory=dict)
    batch: tuple[Incoming, ...] = ()
    isolated: bool = False

    def defer(self, key: Hashable, work: Callable[[], Awaitable[None]]) -> None:
        cause = trace.get_current_span().get_span_context()
        earlier = self.deferred.pop(key, None)
        causes = (earlier.causes if earlier else []) + ([cause] if cause.is_valid else [])
        self.deferred[key] = _Deferred(work, otel_context.get_current(), causes)

    async def run_deferred(self) -> None:
        while self.deferred:
            key = next(iter(self.deferred))
            d = self.deferred.pop(key)
            links = [trace.Link(c) for c in d.causes[:-1][-_MAX_LINKS:]]
            with _tracer.start_as_current_span("deferred work", context=d.context, links=links):
                await d.work()


_MAX_LINKS = 32  # a batch may hold hundreds of an SLS's families; the trace needs a sample, not all


@contextlib.asynccontextmanager
async def unit_of_work(pool: asyncpg.Pool, service: str,
                       on_commit: Callable[[], None] | None = None) -> AsyncIterator[UnitOfWork]:
    """One transaction on a connection of `pool`; the events published through the unit of work's
    outbox (CloudEvents source of `service`) are written to the outbox table in it, after its
    deferred work. `on_commit` runs once it has committed (not after a rollback)."""
    outbox = Outbox(source_of(service))
    async with pool.acquire() as conn, conn.transaction():
        uow = UnitOfWork(conn, outbox)
        yield uow
        await uow.run_deferred()
        await outbox.flush(conn)
    if on_commit is not None:
        on_commit()
