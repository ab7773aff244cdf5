"""Key rotation of the bodies intake keeps sealed (regsosek.crypto).

Put the new key first in REGSOSEK_DATA_KEYS (or the keys file), keeping the old ones after it,
roll the instances (new bodies are sealed under the new key, old ones still open), then run:

    python -m intake.rotate_keys [--batch 500] [--dry-run]

It re-seals every body not under the current key (and seals any still in clear, stored before
migration 004), in batches of one transaction each (rows locked with skip locked, so it runs
beside the service and beside another copy of itself), printing progress. Interrupted, it
resumes where it stopped (it picks rows by key id). When it reports 0 left, the old key can be
removed from the configuration. Exit codes: 0 done, 2 usage, 3 database unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

import asyncpg

from intake.store import IntakeStore


class KeyRotation:
    """Seals every body in clear and re-seals every body under an older key, batch by batch
    (each batch its own transaction), reporting progress line by line to `report`."""

    def __init__(self, store_on: Callable[[asyncpg.Connection], IntakeStore], current_kid: str,
                 report: Callable[[str], None]) -> None:
        self.store_on = store_on
        self.current_kid = current_kid
        self.report = report

    async def run(self, pool: asyncpg.Pool, batch: int, *, dry_run: bool = False) -> int:
        """Bodies left to seal or re-seal at the end (the count only, with dry_run)."""
        async with pool.acquire() as conn:
            todo = await self.store_on(conn).unsealed_or_stale()
        self.report(f"current key {self.current_kid}: {todo} bodies to seal or re-seal")
        if dry_run or not todo:
            return todo
        done, started = 0, time.monotonic()
        while n := await self._reseal(pool, batch):
            done += n
            self.report(f"re-sealed {done}/{todo} ({done / max(time.monotonic() - started, 1e-6):.0f}/s)")
        async with pool.acquire() as conn:
            left = await self.store_on(conn).unsealed_or_stale()
        self.report(f"done: {done} re-sealed, {left} left")
        return left

    async def _reseal(self, pool: asyncpg.Pool, batch: int) -> int:
        async with pool.acquire() as conn:
            return await self.store_on(conn).reseal_batch(batch)


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    from intake.app import key_rotation  # the composition root (which imports this module)
    from intake.settings import IntakeSettings
    from regsosek import db

    p = argparse.ArgumentParser(prog="python -m intake.rotate_keys", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None, help="rows per transaction (REGSOSEK_SEAL_BATCH_ROWS, 500)")
    p.add_argument("--dry-run", action="store_true", help="only count")
    a = p.parse_args(argv)
    s = IntakeSettings()
    rotation = key_rotation(s, report=_print)

    async def run() -> int:
        try:
            pool = await db.connect_pool(s.dsn(), max_size=2, wait_s=30)
        except Exception as e:  # noqa: BLE001
            print(f"cannot reach the database ({type(e).__name__})", file=sys.stderr)
            return 3
        try:
            await rotation.run(pool, a.batch or s.seal_batch_rows, dry_run=a.dry_run)
            return 0
        finally:
            await pool.close()

    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
