"""Re-sealing what a service keeps under an older key (regsosek.crypto), batch by batch: the loop and
the command line that intake's bodies (python -m intake.rotate_keys) and notify's identity lists
(python -m notify.rotate_identity_keys) share; each service's store says what to count and re-seal.

Put the new key first in the key set (keeping the old ones after it), roll the instances (new data
is sealed under the new key, old data still opens), then run the command. Each batch is one
transaction with its rows locked `for update skip locked`, so it runs beside the service and beside
another copy of itself; interrupted, it resumes where it stopped (it picks rows by key id). When it
reports 0 left, the old key can be removed. Exit codes: 0 done, 2 usage, 3 database unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import asyncpg

Count = Callable[[asyncpg.Connection], Awaitable[int]]
Reseal = Callable[[asyncpg.Connection, int], Awaitable[int]]


class KeyRotation:
    """Re-seals every row under an older key than `current_kid`, batch by batch (each batch its own
    transaction, in `reseal`), reporting progress line by line to `report`."""

    def __init__(self, what: str, count: Count, reseal: Reseal, current_kid: str,
                 report: Callable[[str], None]) -> None:
        self.what = what  # "bodies", "identity lists": for the report
        self.count = count
        self.reseal = reseal
        self.current_kid = current_kid
        self.report = report

    async def run(self, pool: asyncpg.Pool, batch: int, *, dry_run: bool = False) -> int:
        """Rows left to re-seal at the end (the count only, with dry_run)."""
        async with pool.acquire() as conn:
            todo = await self.count(conn)
        self.report(f"current key {self.current_kid}: {todo} {self.what} to seal or re-seal")
        if dry_run or not todo:
            return todo
        done, started = 0, time.monotonic()
        while n := await self._batch(pool, batch):
            done += n
            self.report(f"re-sealed {done}/{todo} ({done / max(time.monotonic() - started, 1e-6):.0f}/s)")
        async with pool.acquire() as conn:
            left = await self.count(conn)
        self.report(f"done: {done} re-sealed, {left} left")
        return left

    async def _batch(self, pool: asyncpg.Pool, batch: int) -> int:
        async with pool.acquire() as conn:
            return await self.reseal(conn, batch)


def _print(line: str) -> None:
    print(line, flush=True)


def main(prog: str, doc: str, dsn: str, default_batch: int,
         rotation_of: Callable[[Callable[[str], None]], KeyRotation], argv: list[str] | None = None) -> int:
    """The command line of a service's rotation: --batch, --dry-run; progress on stdout."""
    from regsosek import db

    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("--batch", type=int, default=None, help=f"rows per transaction (default {default_batch})")
    p.add_argument("--dry-run", action="store_true", help="only count")
    a = p.parse_args(argv)
    rotation = rotation_of(_print)

    async def run() -> int:
        try:
            pool = await db.connect_pool(dsn, max_size=2, wait_s=30)
        except Exception as e:  # noqa: BLE001
            print(f"cannot reach the database ({type(e).__name__})", file=sys.stderr)
            return 3
        try:
            await rotation.run(pool, a.batch or default_batch, dry_run=a.dry_run)
            return 0
        finally:
            await pool.close()

    return asyncio.run(run())
