"""Verify: RT/SLS roster verification. Wiring only."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from regsosek.contracts import FamilyInterview
from regsosek.db import is_transient
from regsosek.telemetry import in_trace_of
from regsosek.service import Runtime, ServiceDefinition, build_app, serve
from regsosek.topics import Topic

from verify import domain, handlers, store
from verify.handlers import HANDLERS
from verify.settings import VerifySettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
log = logging.getLogger("verify")


async def flag_expired_holds(runtime: Runtime) -> None:
    """Interviews whose roster never came are flagged "no roster" after the hold timeout."""
    s: VerifySettings = runtime.settings
    while True:
        await asyncio.sleep(s.hold_sweep_interval_s)
        try:
            async with runtime.unit_of_work() as uow:
                for row in await store.held_longer_than(uow.conn, s.hold_timeout_s):
                    iv = FamilyInterview.model_validate(row["body"])
                    with in_trace_of(row["traceparent"]):
                        await handlers.record(uow, iv, domain.no_roster(s.hold_timeout_s / 3600))
        except Exception as e:
            if not is_transient(e):
                log.exception("hold sweep failed")


def definition(settings: VerifySettings | None = None) -> ServiceDefinition:
    settings = settings or VerifySettings()
    handlers.settings = settings
    return ServiceDefinition(
        name="verify", settings=settings, migrations=MIGRATIONS, handlers=HANDLERS,
        topics=[Topic.SLS_ROSTER, Topic.INTERVIEW_SUBMITTED, Topic.VERIFICATION_RESOLVED],
        background=[flag_expired_holds], title="Regsosek verify",
    )


def main() -> None:
    serve(build_app(definition()))
