"""What the operator commands (classify.rerank, classify.replay) share: the service's
settings and files from the environment (REGSOSEK_*, as the service reads them), a
database pool with the service's migrations applied, and publishing what they wrote
to the outbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from regsosek import db

from classify.app import MIGRATIONS, load_classifier
from classify.reclassify import StaleVersions, drain_outbox
from classify.settings import ClassifySettings
from classify.store import Config


def common_arguments(parser: argparse.ArgumentParser, settings: ClassifySettings) -> None:
    parser.add_argument("--batch-size", type=int, default=settings.rerank_batch_size,
                        help="families per transaction (default %(default)s)")
    parser.add_argument("--outbox-only", action="store_true",
                        help="leave the events in the outbox for the running service's relay instead of "
                             "publishing (or waiting for them to be published) before exiting")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(settings: ClassifySettings, args: argparse.Namespace,
        work: Callable[[asyncpg.Pool, Config], Awaitable[Any]], show: Callable[[Any], None]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")

    async def main() -> Any:
        pool = await db.connect_pool(settings.dsn(), max_size=4, wait_s=30)
        try:
            await db.migrate(pool, MIGRATIONS)
            report = await work(pool, load_classifier(settings).config)
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
