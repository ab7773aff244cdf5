"""Intake: the HTTP front door. The composition root: settings → store factory, publisher,
handlers → routes, consumers, background tasks, retention → the ServiceDefinition. The key
rotation command (python -m intake.rotate_keys) builds its parts here too (key_rotation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
from fastapi import FastAPI

from intake import api, consultation_api, erasure, registry
from intake.consultation_handlers import ConsultationHandlers
from intake.consultation_store import ConsultationStore
from intake.handlers import IntakeHandlers
from intake.publisher import IntakePublisher
from intake.registry_handlers import RegistryHandlers
from intake.settings import IntakeSettings
from intake.store import IntakeStore
from regsosek import audit_api, db
from regsosek.background import run_forever
from regsosek.key_rotation import KeyRotation
from regsosek.retention import Rule
from regsosek.service import BackgroundTask, Runtime, ServiceDefinition, build_app, serve
from regsosek.topics import Topic

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def store_on(settings: IntakeSettings) -> Callable[[asyncpg.Connection], IntakeStore]:
    """Intake's store on a connection, sealing and opening bodies with the settings' keys."""
    keyring = settings.keyring()
    return lambda conn: IntakeStore(conn, keyring)


def handlers(settings: IntakeSettings) -> IntakeHandlers:
    stores = store_on(settings)
    publisher = IntakePublisher(settings.nik_hash_key, settings.identity_keyring())
    return IntakeHandlers(settings, lambda uow: stores(uow.conn), publisher,
                          also_erase=lambda uow, family_id: ConsultationStore(uow.conn).erase_reasons(family_id))


def consultation_handlers(settings: IntakeSettings, publisher: IntakePublisher) -> ConsultationHandlers:
    """The village consultation's commands (FKP forums, decisions, ground checks), with intake's one publisher."""
    stores = store_on(settings)
    return ConsultationHandlers(lambda uow: ConsultationStore(uow.conn), lambda uow: stores(uow.conn), publisher)


def key_rotation(settings: IntakeSettings, report: Callable[[str], None]) -> KeyRotation:
    stores = store_on(settings)
    return KeyRotation("bodies", lambda conn: stores(conn).unsealed_or_stale(),
                       lambda conn, batch: stores(conn).reseal_batch(batch), settings.keyring().current_kid, report)


def sealing_task(settings: IntakeSettings) -> BackgroundTask:
    """Background task: at start-up, then every REGSOSEK_RETENTION_INTERVAL_S, bodies in clear (stored
    before migration 004, or restored from an old backup) and bodies under an older key are sealed
    under the current key (python -m intake.rotate_keys does the same on demand); a failed round is
    retried with backoff (regsosek.background.run_forever)."""
    rotation = key_rotation(settings, report=lambda line: None)

    async def seal_clear_bodies(runtime: Runtime) -> None:
        async def attempt() -> None:
            await rotation.run(runtime.pool, settings.seal_batch_rows)
            await asyncio.sleep(settings.retention_interval_s)

        await run_forever("seal-clear-bodies", attempt, expected=db.is_transient,
                          backoff=db.Backoff(1.0, settings.retention_interval_s))

    return seal_clear_bodies


def definition(settings: IntakeSettings | None = None) -> ServiceDefinition:
    settings = settings or IntakeSettings()
    h = handlers(settings)
    living = RegistryHandlers(h)
    stores = store_on(settings)
    return ServiceDefinition(
        name="intake", settings=settings, migrations=MIGRATIONS, handlers={**h.consumers(), **living.consumers()},
        topics=[Topic.INTERVIEW_VERIFIED, Topic.INTERVIEW_FLAGGED, Topic.FAMILY_CLASSIFIED, Topic.ELIGIBILITY_DECIDED,
                Topic.ELIGIBILITY_DELIVERED, Topic.UPDATE_HELD],
        routers=[api.router(h, settings), erasure.router(h, settings),
                 registry.router(living, settings),
                 consultation_api.router(consultation_handlers(settings, h.publisher), settings), audit_api.router],
        title="Regsosek intake",
        background=[sealing_task(settings)],
        retention=[Rule("submission_body", settings.submission_body_retention_days,
                        lambda conn, before, limit: h.expire_bodies(stores(conn), before, limit))],
        description="Field officers submit family interviews (REGSOSEK22-K) and SLS rosters (VK1); supervisors "
        "resolve flagged families; village officials submit consultation (FKP) results.",
    )


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    return build_app(definition(settings))  # bodies over REGSOSEK_HTTP_MAX_BODY_BYTES get 413 there


def main() -> None:
    # REGSOSEK_HTTP_WORKERS > 1: every worker process builds its own app with create_app
    serve(create_app(), factory="intake.app:create_app")


if __name__ == "__main__":
    main()
