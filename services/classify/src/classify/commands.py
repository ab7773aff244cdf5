"""What the operator commands (classify.rerank, classify.replay) share: the service's
settings and files from the environment (REGSOSEK_*, as the service reads them), the
service's parts (those app.py composes the service from, without its web framework and
Kafka client) over a database pool with the service's migrations applied
(regsosek.composition), progress (a bar with rate and ETA on a terminal, a log line every
10 s elsewhere: regsosek.progress) and publishing what they wrote to the outbox
(`CommandRoot.drain`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from classify.domain import Config
from classify.reclassify import Reclassifier, StaleVersions, reclassifier
from classify.settings import ClassifySettings, load_config
from classify.store import MIGRATIONS, RerankStore
from regsosek.composition import open_command
from regsosek.progress import Progress, progress


def common_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--batch-size", type=int, default=batch_size,
                        help="families per transaction (default %(default)s)")
    parser.add_argument("--outbox-only", action="store_true",
                        help="leave the events in the outbox for the running service's relay instead of "
                             "publishing (or waiting for them to be published) before exiting")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


# (reclassifier, pool, on_commit: after each committed batch, progress display)
Work = Callable[[Reclassifier, asyncpg.Pool, Callable[[], None], Progress], Awaitable[Any]]
# (families to go through in all, of which already done) for the progress display
Count = Callable[[RerankStore, Config], Awaitable[tuple[int, int]]]


async def count_families(store: RerankStore, cfg: Config) -> tuple[int, int]:
    return await store.family_count(), 0


def run(settings: ClassifySettings, args: argparse.Namespace, work: Work, show: Callable[[Any], None],
        *, what: str = "families", count: Count = count_families) -> int:
    """Runs `work(reclassifier, pool, on_commit, progress)`; `on_commit` is called after each committed batch
    of `args.batch_size` families and advances the progress display."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    for noisy in ("aiokafka", "regsosek.messaging", "regsosek.relay", "classify"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    async def main() -> Any:
        async with open_command(settings, MIGRATIONS) as root:
            config = load_config(settings)
            async with root.pool.acquire() as conn:
                total, done = await count(RerankStore(conn), config)
            with progress(what, total, unit="families", initial=min(done, total)) as p:
                report = await work(reclassifier(config), root.pool, batch_counter(p, args.batch_size), p)
            if not args.outbox_only:
                await root.drain()
            return report

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
