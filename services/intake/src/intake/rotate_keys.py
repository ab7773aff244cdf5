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

from intake import store
from intake.settings import IntakeSettings
from regsosek import db


async def rotate(pool, batch: int, *, dry_run: bool = False, out=sys.stdout) -> int:
    async with pool.acquire() as conn:
        todo = await store.unsealed_or_stale(conn)
    print(f"current key {store.keyring.current_kid}: {todo} bodies to seal or re-seal", file=out, flush=True)
    if dry_run or not todo:
        return todo
    done, started = 0, time.monotonic()
    while True:
        async with pool.acquire() as conn:
            n = await store.reseal_batch(conn, batch)
        if not n:
            break
        done += n
        print(f"re-sealed {done}/{todo} ({done / max(time.monotonic() - started, 1e-6):.0f}/s)", file=out, flush=True)
    async with pool.acquire() as conn:
        left = await store.unsealed_or_stale(conn)
    print(f"done: {done} re-sealed, {left} left", file=out, flush=True)
    return left


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m intake.rotate_keys", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None, help="rows per transaction (REGSOSEK_SEAL_BATCH_ROWS, 500)")
    p.add_argument("--dry-run", action="store_true", help="only count")
    a = p.parse_args(argv)
    s = IntakeSettings()
    store.keyring = s.keyring()

    async def run() -> int:
        try:
            pool = await db.connect_pool(s.dsn(), max_size=2, wait_s=30)
        except Exception as e:  # noqa: BLE001
            print(f"cannot reach the database ({type(e).__name__})", file=sys.stderr)
            return 3
        try:
            await rotate(pool, a.batch or s.seal_batch_rows, dry_run=a.dry_run)
            return 0
        finally:
            await pool.close()

    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
