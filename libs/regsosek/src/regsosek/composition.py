"""The composition root a service's command-line jobs share with the service.

A running service gets its database pool, migrations, units of work and outbox relay
from `regsosek.service` (`build_app`, `Runtime`). A command (`python -m classify.rerank`,
a replay, ...) needs the same parts for one piece of work and then exits: open a pool,
apply the service's migrations, build the service's dependencies (through the service's
own composition functions in its app.py), run units of work, publish what they wrote to
the outbox through the relay (`OutboxRelay.drain`), close. `open_command` and
`CommandRoot` are that, so no command builds a relay's producer or an outbox by hand.

    async with open_command(settings, MIGRATIONS) as root:
        async with root.unit_of_work() as uow:
            ...                      # the service's store over uow.conn, its publisher into uow.outbox
        await root.drain()           # everything committed, sent (or left to the running service's relay)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from regsosek import db, messaging
from regsosek.messaging.outbox import RelayWakeup
from regsosek.messaging.unit_of_work import UnitOfWork, unit_of_work

if TYPE_CHECKING:
    from regsosek.settings import ServiceSettings

T = TypeVar("T")


class CommandRoot:
    """What a command's work gets: the service's settings, a pool with the service's schema,
    units of work, and `drain` to publish what they committed."""

    def __init__(self, settings: ServiceSettings, pool: asyncpg.Pool,
                 producer_factory: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.wakeup = RelayWakeup()
        self._producer_factory = producer_factory

    def unit_of_work(self, on_commit: Callable[[], None] | None = None) -> contextlib.AbstractAsyncContextManager[UnitOfWork]:
        return unit_of_work(self.pool, self.settings.service_name, on_commit)

    async def drain(self, timeout: float = 120.0) -> int:
        """Publishes the outbox rows committed so far through a relay of this process (or waits for
        the running service's relay to), then stops it: see `OutboxRelay.drain`."""
        # the relay (with the Kafka client) is imported here, at the first drain: a command run with
        # --outbox-only never loads it (regsosek.messaging)
        relay = messaging.OutboxRelay(self.settings, lambda: self.pool, self.wakeup, self._producer_factory)
        try:
            return await relay.drain(timeout)
        finally:
            await relay.stop()


@contextlib.asynccontextmanager
async def open_command(settings: ServiceSettings, migrations: Path, *, pool_size: int = 4,
                       connect_wait_s: float = 30.0) -> AsyncIterator[CommandRoot]:
    """A pool on the service's database (waiting up to `connect_wait_s` for it), the messaging and
    service migrations applied, closed on exit."""
    pool = await db.connect_pool(settings.dsn(), max_size=pool_size, wait_s=connect_wait_s)
    try:
        await db.migrate(pool, migrations)
        yield CommandRoot(settings, pool)
    finally:
        await pool.close()


async def run_command(settings: ServiceSettings, migrations: Path, work: Callable[[CommandRoot], Awaitable[T]], *,
                      drain: bool = True, drain_timeout: float = 120.0) -> T:
    """Opens the command's root, runs `work(root)`, then (with `drain`) publishes what it committed."""
    async with open_command(settings, migrations) as root:
        result = await work(root)
        if drain:
            await root.drain(drain_timeout)
        return result
