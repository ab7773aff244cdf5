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
    app = build_app(definition(settings))
    max_bytes = app.state.runtime.settings.max_request_bytes

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

    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    return app


class BodyLimit:
    """Refuses bodies over the cap with 413 before they are parsed."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.max_bytes:
                return await _too_large(send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            return await self.app(scope, limited, send)
        except _TooLarge:
            return await _too_large(send)


class _TooLarge(Exception):
    pass


async def _too_large(send) -> None:
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"reason": "request body too large"}'})


def main() -> None:
    serve(create_app())


if __name__ == "__main__":
    main()
