"""One unit of work through the services' connection pool, with and without asyncpg's reset at
release (BENCHMARKS.md, "Round 7: the pool's reset").

    . .local/stack.env && python -m regsosek_tools.pool_bench --units 250 --blocks 40

A database of its own on the stack's PostgreSQL, and two pools of one connection each: asyncpg's
own reset at every release (unlock every advisory lock, CLOSE ALL, UNLISTEN *, RESET ALL: what the
services' pools did), and `regsosek.db.connect_pool` (reset only a connection that took session
state). Each unit of work is what a service's handler does at the least: acquire, begin, one
insert, commit, release. The pools take turns, `--units` units of work at a time, `--blocks` times
each, so that a busy moment of a shared machine falls on both; reported per unit of work: this
process's CPU (the client: asyncpg, the event loop), the PostgreSQL backend's CPU (its process,
from /proc: the server must run on this machine) and the wall time, and the second pool's figures
as ratios to the first's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from regsosek import db
from regsosek_tools.measure.proc import proc_cpu_s
from regsosek_tools.world import create_databases, drop_databases

PoolFactory = Callable[[str], Awaitable[asyncpg.Pool]]


async def asyncpg_reset_pool(dsn: str) -> asyncpg.Pool:
    """The pool as the services had it: asyncpg's reset query at every release."""
    return await asyncpg.create_pool(dsn, min_size=1, max_size=1, init=db.init_connection, command_timeout=60)


async def project_pool(dsn: str) -> asyncpg.Pool:
    return await db.connect_pool(dsn, max_size=1, wait_s=10)


POOLS: dict[str, PoolFactory] = {"asyncpg's reset at every release": asyncpg_reset_pool,
                                 "reset only after session state (regsosek.db)": project_pool}


class Subject:
    """One pool of one connection, and what its units of work have cost so far."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.units, self.client_s, self.server_s, self.wall_s = 0, 0.0, 0.0, 0.0

    async def backend(self) -> int:
        """The pool's connection's server process now (asyncpg replaces a connection after
        `max_queries` statements, so it is read again for every block)."""
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval("select pg_backend_pid()"))

    async def work(self, units: int) -> None:
        for i in range(units):
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("insert into units (n) values ($1)", i)

    async def block(self, units: int) -> None:
        backend = await self.backend()
        client0, server0, t0 = proc_cpu_s(os.getpid()), proc_cpu_s(backend), time.perf_counter()
        await self.work(units)
        wall = time.perf_counter() - t0
        client1, server1 = proc_cpu_s(os.getpid()), proc_cpu_s(backend)
        if client0 is None or client1 is None or server0 is None or server1 is None:
            raise RuntimeError("the PostgreSQL backend is not a process of this machine (run on the stack's host)")
        self.units += units
        self.client_s += client1 - client0
        self.server_s += server1 - server0
        self.wall_s += wall

    def figures(self) -> dict:
        per = 1e6 / max(self.units, 1)
        return {"units": self.units, "client_us": round(self.client_s * per, 1),
                "server_us": round(self.server_s * per, 1), "wall_us": round(self.wall_s * per, 1)}


async def subject(factory: PoolFactory, dsn: str) -> Subject:
    s = Subject(await factory(dsn))
    await s.work(200)  # warm: statements prepared, the backend's caches filled
    return s


async def main_async(a: argparse.Namespace) -> dict:
    base = os.environ.get("REGSOSEK_PG_URL_BASE", "postgresql://regsosek@127.0.0.1:15432").rstrip("/")
    name = f"poolbench{uuid.uuid4().hex[:8]}"
    await create_databases(base, [name])
    dsn = f"{base}/{name}"
    subjects: dict[str, Subject] = {}
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("create table units (id bigserial primary key, n int not null)")
        finally:
            await conn.close()
        for label, factory in POOLS.items():
            subjects[label] = await subject(factory, dsn)
        load0 = os.getloadavg()[0]
        for b in range(a.blocks):  # in turn, block by block: a busy moment falls on both
            turn = list(subjects.values())
            for s in turn if b % 2 == 0 else reversed(turn):  # each goes first every other turn
                await s.block(a.units)
        result = {"load_avg": [load0, os.getloadavg()[0]], "units_per_block": a.units, "blocks": a.blocks,
                  "pools": {label: s.figures() for label, s in subjects.items()}}
    finally:
        for s in subjects.values():
            await s.pool.close()
        await drop_databases(base, [name], timeout_s=30)
    first, second = (s.figures() for s in subjects.values())
    result["ratio"] = {k: round(second[k] / first[k], 3) if first[k] else None
                       for k in ("client_us", "server_us", "wall_us")}
    print(json.dumps(result, indent=2), flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.pool_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=250, help="units of work per block (default 250)")
    p.add_argument("--blocks", type=int, default=40, help="blocks per pool, taken in turn (default 40)")
    p.add_argument("--json", help="write the result here too")
    a = p.parse_args(argv)
    result = asyncio.run(main_async(a))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
