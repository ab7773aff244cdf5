"""Console: the operations console's composition root. Wiring only."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from console.api import Pages
from console.gateway import Gateway
from console.handlers import ConsoleHandlers
from console.session import SignedOut
from console.settings import ConsoleSettings
from console.signin import signin_router
from regsosek import audit_api
from regsosek.service import ServiceDefinition, build_app, serve
from regsosek.topics import Topic

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
STATIC = Path(__file__).resolve().parent / "static"
# Every asset the pages use, served by the console itself (deployments may be offline: no CDN).
ASSETS = {"console.css": "text/css", "console.js": "text/javascript"}
TOPICS = [Topic.SLS_ROSTER, Topic.INTERVIEW_SUBMITTED, Topic.VERIFICATION_RESOLVED, Topic.FKP_ADJUSTMENT,
          Topic.INTERVIEW_VERIFIED, Topic.INTERVIEW_FLAGGED, Topic.FAMILY_CLASSIFIED, Topic.ELIGIBILITY_DECIDED,
          Topic.SLS_COMPLETED, Topic.ELIGIBILITY_DELIVERED, Topic.FAMILY_ERASED,
          Topic.FKP_FORUM, Topic.FKP_DECISION, Topic.FKP_GROUND_CHECK]


def assets_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/static/{name}")
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, "no such asset")
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=300"})

    return r


def definition(settings: ConsoleSettings | None = None) -> ServiceDefinition:
    return compose(settings)[0]


def compose(settings: ConsoleSettings | None = None) -> tuple[ServiceDefinition, Pages]:
    """The service's definition and its pages (whose error pages the app's exception handlers render)."""
    settings = settings or ConsoleSettings()
    pages = Pages(settings, Gateway(settings))
    return ServiceDefinition(
        name="console", settings=settings, migrations=MIGRATIONS, handlers=ConsoleHandlers().table(), topics=TOPICS,
        routers=[signin_router(settings, pages), pages.router(), assets_router(), audit_api.router],
        title="Regsosek console", description="Census operations, supervisors, village officials and programme "
                                              "integrators: a read model of the pipeline's topics, and actions "
                                              "through the owning services' APIs.",
    ), pages


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    d, pages = compose(settings)
    app = build_app(d)

    @app.exception_handler(SignedOut)
    async def signed_out(request: Request, exc: SignedOut) -> Response:
        return pages.signed_out(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/") or not isinstance(exc.detail, str):
            return JSONResponse({"reason": exc.detail}, status_code=exc.status_code)
        return pages.render(request, "error.html", status=exc.status_code, reason=exc.detail)

    return app


def main() -> None:
    serve(create_app())
