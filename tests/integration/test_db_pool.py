"""The services' connection pool on the real PostgreSQL: a connection that took no session state
goes back to the pool without asyncpg's reset query (one round trip fewer per unit of work), and
one that took a session-level advisory lock is reset, so a lock its holder failed to release does
not stay with the pool's connection. An open transaction is rolled back on release either way."""

from __future__ import annotations

import uuid

import pytest

from regsosek import db

from itkit import PG_BASE, create_databases, drop_databases

pytestmark = pytest.mark.integration

LOCK = 7316099  # a key no service uses


@pytest.fixture
async def dsn(stack):
    name = f"it{uuid.uuid4().hex[:8]}_pool"
    await create_databases([name])
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        await drop_databases([name])


@pytest.fixture
async def pool(dsn):
    p = await db.connect_pool(dsn, max_size=1, wait_s=10)  # one connection: each acquire gets it again
    try:
        yield p
    finally:
        await p.close()


async def statements_of(pool, sent: list[str]) -> None:
    """Records every statement the pool's one connection sends from now on (asyncpg's query
    logger on the connection itself, not its proxy: the pool keeps it across releases)."""
    async with pool.acquire() as conn:
        conn._con.add_query_logger(lambda record: sent.append(record.query))


async def test_a_unit_of_work_without_session_state_goes_back_without_the_reset_query(pool):
    sent: list[str] = []
    await statements_of(pool, sent)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("set local work_mem = '8MB'")
        await conn.fetchval("select pg_advisory_xact_lock($1)", LOCK)
    assert not any("RESET ALL" in q or "pg_advisory_unlock_all" in q for q in sent), sent
    async with pool.acquire() as conn:
        assert await conn.fetchval("show work_mem") != "8MB"  # transaction-scoped: gone with the commit
        assert await conn.fetchval("select count(*) from pg_locks where locktype = 'advisory' "
                                   "and pid = pg_backend_pid()") == 0


async def test_a_session_lock_left_held_is_released_when_the_connection_goes_back(pool):
    sent: list[str] = []
    await statements_of(pool, sent)
    async with pool.acquire() as conn:
        assert await db.advisory_lock(conn, LOCK, wait=False)
        holder = await conn.fetchval("select pg_backend_pid()")
        # its holder fails before advisory_unlock: the connection goes back holding the lock
    assert any("pg_advisory_unlock_all" in q for q in sent), sent
    async with pool.acquire() as conn:
        assert await conn.fetchval("select pg_backend_pid()") == holder  # the same session, reset
        assert await conn.fetchval("select count(*) from pg_locks where locktype = 'advisory' and objid = $1", LOCK) == 0
    sent.clear()
    async with pool.acquire() as conn:  # reset once: the next unit of work is plain again
        await conn.fetchval("select 1")
    assert not any("pg_advisory_unlock_all" in q for q in sent), sent


async def test_an_open_transaction_is_rolled_back_on_release(pool):
    async with pool.acquire() as conn:
        await conn.execute("create table t (x int)")
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("insert into t values (1)")
        # released without commit or rollback (a cancelled unit of work)
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("select count(*) from t") == 0


async def test_another_session_gets_the_lock_once_its_holder_releases_it(pool, dsn):
    async with pool.acquire() as conn:
        assert await db.advisory_lock(conn, LOCK)
        other = await db.connect_pool(dsn, max_size=1, wait_s=10)
        try:
            async with other.acquire() as c2:
                assert not await db.advisory_lock(c2, LOCK, wait=False)
                await db.advisory_unlock(conn, LOCK)
                assert await db.advisory_lock(c2, LOCK, wait=False)
                await db.advisory_unlock(c2, LOCK)
        finally:
            await other.close()
