"""Intake: the HTTP front door. Wiring only; see api.py, domain.py, store.py, handlers.py."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from regsosek.service import ServiceDefinition, build_app, serve
from regsosek.topics import Topic

from intake.api import pydantic_problems, router
from intake.handlers import HANDLERS
from intake.settings import IntakeSettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def definition(settings: IntakeSettings | None = None) -> ServiceDefinition:
    settings = settings or IntakeSettings()
    return ServiceDefinition(
        name="intake", settings=settings, migrations=MIGRATIONS, handlers=HANDLERS,
        topics=[Topic.INTERVIEW_VERIFIED, Topic.INTERVIEW_FLAGGED, Topic.FAMILY_CLASSIFIED, Topic.ELIGIBILITY_DECIDED,
                Topic.ELIGIBILITY_DELIVERED],
        routers=[router], title="Regsosek intake",
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
