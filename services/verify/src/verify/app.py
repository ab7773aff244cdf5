"""Verify: RT/SLS roster verification. The composition root: settings, store, publisher,
handlers, routes and background tasks are built here, and only here; the service
(`definition`) and the commands (`python -m verify.pseudonymise`) build theirs through `compose`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from regsosek.background import run_forever
from regsosek.db import Backoff, is_transient
from regsosek.messaging import UnitOfWork
from regsosek.retention import Rule
from regsosek.service import BackgroundTask, Runtime, ServiceDefinition, build_app, serve
from regsosek.topics import Topic
from verify import pseudonymise
from verify.api import progress_router
from verify.handlers import VerifyHandlers
from verify.publisher import Publisher
from verify.settings import VerifySettings
from verify.store import VerifyStore

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
TOPICS = (Topic.SLS_ROSTER, Topic.INTERVIEW_SUBMITTED, Topic.VERIFICATION_RESOLVED, Topic.FAMILY_ERASED,
          Topic.FAMILY_UPDATE,
          Topic.FKP_GROUND_CHECK)
log = logging.getLogger("verify")


@dataclass(frozen=True)
class Verify:
    """The service's parts, built once."""

    settings: VerifySettings
    store_for: Callable[[UnitOfWork], VerifyStore]  # in a unit of work (its transaction and cache)
    store_of: Callable[[asyncpg.Connection], VerifyStore]  # on a connection of its own (reads, commands)
    publisher: Publisher
    handlers: VerifyHandlers


def compose(settings: VerifySettings | None = None) -> Verify:
    settings = settings or VerifySettings()
    legacy_key = settings.legacy_key()

    def store_for(uow: UnitOfWork) -> VerifyStore:
        return VerifyStore(uow.conn, cache=uow.cache, legacy_key=legacy_key)

    def store_of(conn: asyncpg.Connection) -> VerifyStore:
        return VerifyStore(conn, legacy_key=legacy_key)

    publisher = Publisher(settings.update_hold_timeout_s)
    return Verify(settings, store_for, store_of, publisher, VerifyHandlers(settings, store_for, publisher))


def hold_sweep(verify: Verify) -> BackgroundTask:
    """Interviews whose roster never came are flagged "no roster" after the hold timeout (one
    transaction per family, under its SLS lock; decided normally if the roster came after all); updates
    kept for a family that was not verified within the update hold timeout get an update_not_applicable
    flag (one transaction per update).
    A roster arriving later still decides them (domain.on_roster)."""
    s = verify.settings

    async def flag_expired_holds(runtime: Runtime) -> None:
        async def sweep() -> None:
            await asyncio.sleep(s.hold_sweep_interval_s)
            async with runtime.pool.acquire() as conn:
                expired = await verify.store_of(conn).expired_holds(s.hold_timeout_s)
            for family_id, sls_id in expired:
                async with runtime.unit_of_work() as uow:
                    await verify.handlers.on_hold_expired(uow, family_id, sls_id)
            async with runtime.pool.acquire() as conn:
                waited = await verify.store_of(conn).expired_update_holds(s.update_hold_timeout_s)
            for update in waited:
                async with runtime.unit_of_work() as uow:
                    await verify.handlers.on_update_hold_expired(uow, update)

        await run_forever("hold sweep", sweep, backoff=Backoff(1.0, max(1.0, s.hold_sweep_interval_s)),
                          expected=is_transient, logger=log)

    return flag_expired_holds


def definition(settings: VerifySettings | None = None) -> ServiceDefinition:
    verify = compose(settings)
    return ServiceDefinition(
        name="verify", settings=verify.settings, migrations=MIGRATIONS, handlers=verify.handlers.by_event_type(),
        topics=TOPICS, routers=[progress_router(verify.settings, verify.store_of)],
        background=[hold_sweep(verify), pseudonymise.at_start_up(verify.settings, verify.store_of)],
        retention=[Rule("interview_body", verify.settings.interview_body_retention_days,
                        lambda conn, before, limit: verify.store_of(conn).expire_bodies(before, limit))],
        title="Regsosek verify",
        description="Matches each interview to its SLS roster (VK1); progress per SLS, village and regency.",
    )


def main() -> None:
    serve(build_app(definition()))
