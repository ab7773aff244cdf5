"""Verify: RT/SLS roster verification. Wiring only."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from regsosek.db import is_transient
from regsosek.service import Runtime, ServiceDefinition, build_app, serve
from regsosek.topics import Topic
from verify import handlers, pseudonymise, store
from verify.api import router
from verify.handlers import HANDLERS
from verify.settings import VerifySettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
log = logging.getLogger("verify")


async def flag_expired_holds(runtime: Runtime) -> None:
    """Interviews whose roster never came are flagged "no roster" after the hold timeout
    (one transaction per family, under its SLS lock; decided normally if the roster came
    after all). A roster arriving later still decides them (see handlers.on_roster)."""
    s: VerifySettings = runtime.settings
    while True:
        await asyncio.sleep(s.hold_sweep_interval_s)
        try:
            async with runtime.pool.acquire() as conn:
                expired = await store.expired_holds(conn, s.hold_timeout_s)
            for row in expired:
                async with runtime.unit_of_work() as uow:
                    await handlers.flag_if_still_held(uow, row["family_id"], row["sls_id"], s.hold_timeout_s)
        except Exception as e:
            if not is_transient(e):
                log.exception("hold sweep failed")


def definition(settings: VerifySettings | None = None) -> ServiceDefinition:
    settings = settings or VerifySettings()
    handlers.settings = settings
    return ServiceDefinition(
        name="verify", settings=settings, migrations=MIGRATIONS, handlers=HANDLERS,
        topics=[Topic.SLS_ROSTER, Topic.INTERVIEW_SUBMITTED, Topic.VERIFICATION_RESOLVED, Topic.FAMILY_ERASED],
        routers=[router], background=[flag_expired_holds, pseudonymise.at_start_up], title="Regsosek verify",
        description="Matches each interview to its SLS roster (VK1); progress per SLS, village and regency.",
    )


def main() -> None:
    serve(build_app(definition()))
