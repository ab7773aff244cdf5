"""One-off conversion of rows stored before pseudonymised events (migration 004).

Interviews and roster revisions stored before held NIKs, KK numbers, names, addresses and GPS in
clear. A SQL migration cannot hash them (the key is intake's secret, never given to a migration),
so this converts them in Python, in batches, each batch its own transaction: every interview body
becomes the v2 shape (`pseudonymise_interview`, the same function intake publishes with, so the
NIK claims already stored still match), every roster revision the v2 roster, each roster entry's
KK number its hash, and the RT head's name on `rosters` is dropped. Resumable (it picks the rows
still in clear) and safe beside running instances (rows locked with skip locked). At the end it
rewrites the tables (VACUUM FULL) so that dead tuples do not keep the old values.

    REGSOSEK_LEGACY_NIK_HASH_KEY=<intake's REGSOSEK_NIK_HASH_KEY> python -m verify.pseudonymise [--batch 500]

Verify also runs it once at start-up when that key is available (always outside production).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable

import asyncpg

from regsosek import db
from regsosek.contracts import FamilyInterview, SlsRoster, pseudonymise_interview, pseudonymise_roster
from regsosek.pseudonyms import kk_hash
from regsosek.service import BackgroundTask, Runtime
from verify.settings import VerifySettings
from verify.store import TABLES_WITH_LEGACY_ROWS as TABLES
from verify.store import VerifyStore

log = logging.getLogger("verify.pseudonymise")
StoreOf = Callable[[asyncpg.Connection], VerifyStore]


async def convert_batch(conn: asyncpg.Connection, key: str, limit: int, store_of: StoreOf = VerifyStore) -> dict[str, int]:
    """One batch (one transaction): rows converted per table."""
    store = store_of(conn)
    async with conn.transaction():
        rows = await store.legacy_rows(limit)
        interviews = [(r["family_id"], pseudonymise_interview(FamilyInterview.model_validate(r["body"]), key)
                       .model_dump(mode="json")) for r in rows["interviews"]]
        revisions = [(r["sls_id"], r["revision"], pseudonymise_roster(SlsRoster.model_validate(r["body"]), key)
                      .model_dump(mode="json")) for r in rows["roster_history"]]
        entries = [(r["sls_id"], r["building_no"], r["family_no"], kk_hash(key, r["kk_number"]).hex())  # kk_number is not null
                   for r in rows["roster_families"]]
        await store.replace_legacy(interviews, revisions, entries, [r["sls_id"] for r in rows["rosters"]])
    return {t: len(rows[t]) for t in TABLES}


async def convert_all(pool: asyncpg.Pool, key: str, batch: int = 500, *, vacuum: bool = True,
                      progress=None, store_of: StoreOf = VerifyStore) -> dict[str, int]:
    total = dict.fromkeys(TABLES, 0)
    while True:
        async with pool.acquire() as conn:
            done = await convert_batch(conn, key, batch, store_of)
        for t, n in done.items():
            total[t] += n
        if progress:
            progress(total)
        if all(n < batch for n in done.values()):
            break
    if vacuum and any(total.values()):
        async with pool.acquire() as conn:
            await store_of(conn).vacuum_legacy_tables()
    return total


def at_start_up(settings: VerifySettings, store_of: StoreOf) -> BackgroundTask:
    """Background task: one conversion when the legacy key is available, then idle (background tasks
    run for the service's life; one that ends makes the service unready)."""

    async def pseudonymise_at_start_up(runtime: Runtime) -> None:
        key = settings.legacy_key()
        if key is not None:
            try:
                total = await convert_all(runtime.pool, key, vacuum=False, store_of=store_of)
                if any(total.values()):
                    log.info("rows stored in clear pseudonymised", extra={"fields": total})
            except Exception as e:  # noqa: BLE001 - the one-off command does it too
                log.error("pseudonymising stored rows failed; run python -m verify.pseudonymise",
                          extra={"fields": {"error": type(e).__name__}})
        await asyncio.Event().wait()

    return pseudonymise_at_start_up


def main(argv: list[str] | None = None) -> int:
    from verify.app import compose  # the service's composition root (it imports this module)

    p = argparse.ArgumentParser(prog="python -m verify.pseudonymise", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=500)
    a = p.parse_args(argv)
    verify = compose()
    s = verify.settings
    key = s.legacy_key()
    if key is None:
        print("REGSOSEK_LEGACY_NIK_HASH_KEY must be set (intake's NIK hash key)", file=sys.stderr)
        return 2

    async def run() -> dict[str, int]:
        pool = await db.connect_pool(s.dsn(), max_size=2, wait_s=30)
        try:
            return await convert_all(pool, key, a.batch, store_of=verify.store_of,
                                     progress=lambda t: print("converted so far: " + ", ".join(
                                         f"{k} {v}" for k, v in t.items()), flush=True))
        finally:
            await pool.close()

    total = asyncio.run(run())
    print("done: " + ", ".join(f"{k} {v}" for k, v in total.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
