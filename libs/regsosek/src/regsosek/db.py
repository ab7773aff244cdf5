"""PostgreSQL plumbing: a pool that waits for the database, numbered SQL
migrations (the shared messaging tables first, then the service's own), and the
line between transient failures (retry) and permanent ones (dead-letter).
"""

from __future__ import annotations

import asyncio
import logging
from importlib.resources import files
from pathlib import Path

import asyncpg

log = logging.getLogger("regsosek.db")

MESSAGING_MIGRATIONS = files("regsosek").joinpath("migrations")

# Errors after which the same work may succeed later: the database or the network
# is away, not the data wrong.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.QueryCanceledError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    # SQLSTATE class 08 (connection), 53 (resources), 57 (operator intervention), 58 (system)
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in {"08", "53", "57", "58"}


class Backoff:
    """Exponential backoff with a ceiling, for retry loops that must not give up."""

    def __init__(self, initial: float = 0.2, maximum: float = 10.0) -> None:
        self.initial, self.maximum, self.delay = initial, maximum, initial

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())

    def next_delay(self) -> float:
        """The delay to wait now; the next one is twice as long, up to the ceiling."""
        delay, self.delay = self.delay, min(self.delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.delay = self.initial


async def init_connection(conn: asyncpg.Connection) -> None:
    import orjson

    for t in ("jsonb", "json"):
        await conn.set_type_codec(
            t, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


class PooledConnection(asyncpg.Connection):
    """A pool's connection that knows whether it took session state. asyncpg resets every
    connection going back to its pool with one more round trip (unlock every advisory lock, close
    cursors, UNLISTEN, RESET ALL); the services' units of work take none of that state (their
    locks are transaction-scoped, their settings `set local`), so the pool skips it for them and
    resets only a connection that took a session-level lock (`advisory_lock`). An open
    transaction is rolled back on release either way (asyncpg does that before any reset)."""

    took_session_state = False

    def mark_session_state(self) -> None:
        self.took_session_state = True


async def reset_if_session_state(conn: PooledConnection) -> None:
    """The pool's reset: asyncpg's own reset query, only for a connection that took session state."""
    if conn.took_session_state:
        await conn.execute(conn.get_reset_query())
        conn.took_session_state = False


async def advisory_lock(conn: asyncpg.Connection, key: int, *, wait: bool = True) -> bool:
    """Takes the session-level advisory lock `key` (waiting for it; without `wait`, False at once
    when another session holds it). Release it with `advisory_unlock`; should that not run, the
    pool's reset releases it when the connection goes back. Session-level locks are taken only
    here, so the pool knows which connections to reset (libs/regsosek/tests/test_session_locks.py
    checks the sources; tests/integration/test_db_pool.py the pool)."""
    mark = getattr(conn, "mark_session_state", None)  # a pool's connection (or its proxy)
    if mark is not None:
        mark()  # before the statement: a cancelled lock request may still have been granted
    if wait:
        await conn.execute("select pg_advisory_lock($1)", key)
        return True
    return bool(await conn.fetchval("select pg_try_advisory_lock($1)", key))


async def advisory_unlock(conn: asyncpg.Connection, key: int) -> None:
    """Releases a lock `advisory_lock` took (nothing to do on a closed connection: it went with it)."""
    if not conn.is_closed():
        await conn.execute("select pg_advisory_unlock($1)", key)


async def connect_pool(dsn: str, *, max_size: int = 8, wait_s: float = 120.0) -> asyncpg.Pool:
    backoff = Backoff(0.2, 2.0)
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            return await asyncpg.create_pool(
                dsn, min_size=1, max_size=max_size, init=init_connection, command_timeout=60,
                connection_class=PooledConnection, reset=reset_if_session_state,
            )
        except Exception as e:
            if not is_transient(e) or asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("database not reachable yet, retrying", exc_info=True, extra={"fields": {"error": type(e).__name__}})
            await backoff.wait()


def _migration_files(folder) -> list[tuple[str, str]]:
    items = [(p.name, p.read_text()) for p in folder.iterdir() if p.name.endswith(".sql")]
    return sorted(items)


def expected_migrations(service_migrations: Path) -> list[str]:
    """Every migration this code needs, as recorded in schema_migrations (shared ones first)."""
    return ([f"messaging/{name}" for name, _ in _migration_files(MESSAGING_MIGRATIONS)]
            + [name for name, _ in _migration_files(service_migrations)])


async def pending_migrations(conn: asyncpg.Connection, service_migrations: Path) -> list[str]:
    """The migrations this code needs that the database has not applied yet (all of them
    when schema_migrations does not exist). Migrations applied by newer code are not
    this code's concern: they only add (expand, then contract in a later release)."""
    exists = await conn.fetchval("select to_regclass('schema_migrations') is not null")
    done = {r["name"] for r in await conn.fetch("select name from schema_migrations")} if exists else set()
    return [name for name in expected_migrations(service_migrations) if name not in done]


async def migrate(pool: asyncpg.Pool, service_migrations: Path) -> list[str]:
    """Apply the shared messaging migrations then the service's, each once, in order."""
    applied: list[str] = []
    async with pool.acquire() as conn:
        await advisory_lock(conn, 7316001)  # one instance migrates at a time
        try:
            await conn.execute(
                "create table if not exists schema_migrations "
                "(name text primary key, applied_at timestamptz not null default now())"
            )
            done = {r["name"] for r in await conn.fetch("select name from schema_migrations")}
            batches = [("messaging/", _migration_files(MESSAGING_MIGRATIONS)), ("", _migration_files(service_migrations))]
            for prefix, files_ in batches:
                for name, sql in files_:
                    key = prefix + name
                    if key in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute("insert into schema_migrations(name) values ($1)", key)
                    applied.append(key)
        finally:
            await advisory_unlock(conn, 7316001)
    return applied
