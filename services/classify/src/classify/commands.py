"""What the operator commands (classify.rerank, classify.replay) share: the service's
settings and files from the environment (REGSOSEK_*, as the service reads them), a
database pool with the service's migrations applied, progress (a bar with rate and ETA
on a terminal, a log line every 10 s elsewhere: regsosek.progress) and publishing what
they wrote to the outbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from classify.app import MIGRATIONS, load_classifier
from classify.reclassify import StaleVersions, drain_outbox
from classify.settings import ClassifySettings
from classify.store import Config
from regsosek import db
from regsosek.progress import Progress, progress


def common_arguments(parser: argparse.ArgumentParser, settings: ClassifySettings) -> None:
    parser.add_argument("--batch-size", type=int, default=settings.rerank_batch_size,
                        help="families per transaction (default %(default)s)")
    parser.add_argument("--outbox-only", action="store_true",
                        help="leave the events in the outbox for the running service's relay instead of "
                             "publishing (or waiting for them to be published) before exiting")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


Work = Callable[[asyncpg.Pool, Config, Callable[[], None]], Awaitable[Any]]
# (families to go through in all, of which already done) for the progress display
Count = Callable[[asyncpg.Connection, Config], Awaitable[tuple[int, int]]]


async def count_families(conn: asyncpg.Connection, cfg: Config) -> tuple[int, int]:
    return await conn.fetchval("select count(*) from families"), 0


def run(settings: ClassifySettings, args: argparse.Namespace, work: Work, show: Callable[[Any], None],
        *, what: str = "families", count: Count = count_families) -> int:
    """Runs `work(pool, config, on_commit)`; `on_commit` is called after each committed batch of
    `args.batch_size` families and advances the progress display."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    for noisy in ("aiokafka", "regsosek.messaging", "classify"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    async def main() -> Any:
        pool = await db.connect_pool(settings.dsn(), max_size=4, wait_s=30)
        try:
            await db.migrate(pool, MIGRATIONS)
            cfg = load_classifier(settings).config
            async with pool.acquire() as conn:
                total, done = await count(conn, cfg)
            with progress(what, total, unit="families", initial=min(done, total)) as p:
                report = await work(pool, cfg, batch_counter(p, args.batch_size))
            if not args.outbox_only:
                await drain_outbox(pool, settings)
            return report
        finally:
            await pool.close()

    try:
        report = asyncio.run(main())
    except StaleVersions as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), default=str))
    else:
        show(report)
    return 0


def batch_counter(p: Progress, batch_size: int) -> Callable[[], None]:
    """An `on_commit` callback: a committed batch is `batch_size` families (the last one may be
    smaller; the display never runs past its total)."""
    return lambda: p.update(batch_size)
