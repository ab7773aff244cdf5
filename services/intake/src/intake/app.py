"""Intake: the HTTP front door. Wiring only; see api.py, domain.py, store.py, handlers.py."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from intake import erasure, store
from intake.api import router
from intake.handlers import HANDLERS
from intake.settings import IntakeSettings
from regsosek import audit
from regsosek.retention import Rule
from regsosek.service import ServiceDefinition, build_app, serve
from regsosek.topics import Topic

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


async def seal_clear_bodies(runtime) -> None:
    """Background task: at start-up, then every REGSOSEK_RETENTION_INTERVAL_S, bodies in clear (stored
    before migration 004, or restored from an old backup) and bodies under an older key are sealed
    under the current key (python -m intake.rotate_keys does the same on demand)."""
    import asyncio
    import logging

    from intake.rotate_keys import rotate
    from regsosek import db

    while True:
        try:
            with open(os.devnull, "w") as quiet:
                await rotate(runtime.pool, runtime.settings.seal_batch_rows, out=quiet)
        except Exception as e:  # noqa: BLE001 - retried next round
            if not db.is_transient(e):
                logging.getLogger("intake").error("sealing bodies failed", extra={"fields": {"error": type(e).__name__}})
        await asyncio.sleep(runtime.settings.retention_interval_s)


def definition(settings: IntakeSettings | None = None) -> ServiceDefinition:
    settings = settings or IntakeSettings()
    store.keyring = settings.keyring()
    return ServiceDefinition(
        name="intake", settings=settings, migrations=MIGRATIONS, handlers=HANDLERS,
        topics=[Topic.INTERVIEW_VERIFIED, Topic.INTERVIEW_FLAGGED, Topic.FAMILY_CLASSIFIED, Topic.ELIGIBILITY_DECIDED,
                Topic.ELIGIBILITY_DELIVERED],
        routers=[router, erasure.router, audit.router], title="Regsosek intake", background=[seal_clear_bodies],
        retention=[Rule("submission_body", settings.submission_body_retention_days, store.expire_bodies)],
        description="Field officers submit family interviews (REGSOSEK22-K) and SLS rosters (VK1); supervisors "
        "resolve flagged families; village officials submit consultation (FKP) results.",
    )


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    app = build_app(definition(settings))  # bodies over REGSOSEK_HTTP_MAX_BODY_BYTES get 413 there

    @app.exception_handler(RequestValidationError)
    async def _problems(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ())]
            if loc and loc[0] == "body":
                loc = loc[1:]
                # single-body endpoints embed no field name; strip the parameter name if present
            problems.append({"path": "/" + "/".join(loc), "reason": str(err.get("msg", "invalid"))})
        return JSONResponse({"errors": problems}, status_code=422)

    return app


def main() -> None:
    serve(create_app())


if __name__ == "__main__":
    main()
