"""Apply a service's migrations and exit: the production step before a service starts.

    python -m regsosek.migrate --service verify           # apply what is pending, then exit 0
    python -m regsosek.migrate --service verify --check   # exit 3 when something is pending, apply nothing

The database is the service's own (REGSOSEK_DATABASE_URL, or the local stack's
REGSOSEK_PG_URL_BASE/<service>). The shared messaging migrations go first, then the
service's own (`<service>/migrations/`), each once, in a transaction of its own, under
an advisory lock so that two runs (an init container in each of two new pods) take turns.
In deploy/ each Deployment runs this as an init container and the service itself runs
with REGSOSEK_MIGRATE_ON_START=false, unready until the schema is current.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from pathlib import Path

from regsosek import db, telemetry
from regsosek.settings import ServiceSettings

log = logging.getLogger("regsosek.migrate")

SERVICES = ("intake", "verify", "classify", "notify", "console")
EXIT_PENDING = 3


def migrations_of(service: str) -> Path:
    """The service's migrations folder (`MIGRATIONS` of its app module)."""
    if service not in SERVICES:
        raise SystemExit(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    return importlib.import_module(f"{service}.app").MIGRATIONS


async def run(service: str, *, check: bool = False, dsn: str | None = None, migrations: Path | None = None,
              wait_s: float = 60.0) -> tuple[list[str], list[str]]:
    """Applies (or, with `check`, only lists) the pending migrations: (applied, still pending)."""
    folder = migrations or migrations_of(service)
    pool = await db.connect_pool(dsn or ServiceSettings(service_name=service).dsn(), max_size=1, wait_s=wait_s)
    try:
        if check:
            async with pool.acquire() as conn:
                return [], await db.pending_migrations(conn, folder)
        applied = await db.migrate(pool, folder)
        async with pool.acquire() as conn:
            return applied, await db.pending_migrations(conn, folder)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m regsosek.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", required=True, choices=SERVICES)
    parser.add_argument("--check", action="store_true", help="apply nothing; exit 3 when migrations are pending")
    parser.add_argument("--wait-s", type=float, default=60.0, help="how long to wait for the database to accept connections")
    args = parser.parse_args(argv)
    telemetry.setup(f"{args.service}-migrate")
    applied, pending = asyncio.run(run(args.service, check=args.check, wait_s=args.wait_s))
    if args.check:
        log.info("schema checked", extra={"fields": {"service": args.service, "pending": pending}})
        return EXIT_PENDING if pending else 0
    log.info("schema current", extra={"fields": {"service": args.service, "applied": applied}})
    return 0 if not pending else 1


if __name__ == "__main__":
    sys.exit(main())
