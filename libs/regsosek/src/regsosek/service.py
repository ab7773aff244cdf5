"""The shape every service shares: settings, database pool and migrations, the
outbox relay, the Kafka consumer, an HTTP app with /healthz and /metrics, and
the service's own background tasks. A service supplies a `ServiceDefinition`;
`build_app` wires it; `serve` runs it.

Readiness (`/healthz`, also `/readyz`) is a list of named checks on the `Runtime`
(`add_check`), so a part that can get stuck says so where the orchestrator looks:
200 `{"ready": true, "checks": {...}}` when every check passes, 503 with each failing
check's reason otherwise. The relay adds one (a backlog that does not move). Checks
read in-memory state only (a probe never waits on the database); whatever must be
queried is refreshed by a background task. `/livez` only says the process serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from faststream.kafka import KafkaBroker
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from regsosek import asyncapi, db, http_limits, telemetry
from regsosek.contracts import Contract
from regsosek.messaging import EventConsumer, Handler, Outbox, OutboxRelay, RelayWakeup, UnitOfWork
from regsosek.settings import ServiceSettings
from regsosek.topics import Topic

log = logging.getLogger("regsosek.service")

# A readiness check: None when fine, else a short reason (never personal data).
ReadinessCheck = Callable[[], "str | None"]


@dataclass
class ServiceDefinition:
    name: str
    settings: ServiceSettings
    migrations: Path
    handlers: dict[type[Contract], Handler] = field(default_factory=dict)
    topics: Sequence[Topic] = ()
    routers: Sequence[APIRouter] = ()
    background: Sequence[Callable[[Runtime], Awaitable[None]]] = ()
    title: str = ""
    description: str = ""


class Runtime:
    """What handlers, routes and background tasks of a running service share."""

    def __init__(self, definition: ServiceDefinition) -> None:
        self.definition = definition
        self.settings = definition.settings
        self.wakeup = RelayWakeup()
        self._pool: asyncpg.Pool | None = None
        self.ready = False  # started and not stopping
        self.checks: dict[str, ReadinessCheck] = {}

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Adds a named readiness check; /healthz fails while it returns a reason."""
        self.checks[name] = check

    def readiness(self) -> tuple[bool, dict[str, str]]:
        results = {"service": "ok" if self.ready else "not started or stopping"}
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as e:  # noqa: BLE001 - a broken check reports, it does not break the probe
                log.exception("readiness check failed", extra={"fields": {"check": name}})
                problem = f"check failed: {type(e).__name__}"
            results[name] = problem or "ok"
        return all(v == "ok" for v in results.values()), results

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "service not started"
        return self._pool

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """One transaction; events published through it are committed with it."""
        outbox = Outbox(f"/regsosek/{self.settings.service_name}")
        async with self.pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(conn, outbox)
            yield uow
            await uow.run_deferred()
            await outbox.flush(conn)
        self.wakeup.notify()


def build_app(definition: ServiceDefinition) -> FastAPI:
    s = definition.settings
    runtime = Runtime(definition)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        telemetry.setup(s.service_name, s.log_level)
        runtime._pool = await db.connect_pool(s.dsn(), max_size=s.db_pool_max)
        applied = await db.migrate(runtime.pool, definition.migrations)
        if applied:
            log.info("migrations applied", extra={"fields": {"applied": applied}})
        relay = OutboxRelay(s, lambda: runtime.pool, runtime.wakeup)
        runtime.add_check("relay", relay.health)
        tasks = [asyncio.create_task(relay.run(), name="outbox-relay"),
                 asyncio.create_task(relay.watch(), name="outbox-monitor")]
        broker = None
        if definition.handlers:
            broker = KafkaBroker(s.kafka_bootstrap, logger=logging.getLogger("faststream"), client_id=f"regsosek-{s.service_name}")
            EventConsumer(s, lambda: runtime.pool, definition.handlers, definition.topics, runtime.wakeup).attach(broker)
            await _start_broker(broker, s)
        for bg in definition.background:
            tasks.append(asyncio.create_task(bg(runtime), name=getattr(bg, "__name__", "background")))
        runtime.ready = True
        log.info("service started", extra={"fields": {"port": s.http_port}})
        try:
            yield
        finally:
            runtime.ready = False
            if broker is not None:
                await broker.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await relay.stop()
            await runtime.pool.close()

    app = FastAPI(title=definition.title or f"regsosek {definition.name}", description=definition.description,
                  version="1", lifespan=lifespan)
    app.state.runtime = runtime

    @app.get("/healthz", tags=["operations"], summary="Readiness: every check passes")
    @app.get("/readyz", tags=["operations"], summary="Readiness (same as /healthz)")
    async def healthz() -> Response:
        ok, checks = runtime.readiness()
        return Response(status_code=200 if ok else 503, content=json.dumps({"ready": ok, "checks": checks}),
                        media_type="application/json")

    @app.get("/livez", tags=["operations"], summary="Liveness: the process serves HTTP")
    async def livez() -> Response:
        return Response(content='{"alive": true}', media_type="application/json")

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def unavailable(request: Request, exc: Exception) -> Response:
        # The database or broker is away: tell the device to retry (same submission id) later.
        if db.is_transient(exc):
            return Response('{"reason": "temporarily unavailable, retry with the same submission id"}',
                            status_code=503, media_type="application/json", headers={"Retry-After": "2"})
        log.error("unhandled error", extra={"fields": {"error": type(exc).__name__, "path": request.url.path}})
        return Response('{"reason": "internal error"}', status_code=500, media_type="application/json")

    for r in definition.routers:
        app.include_router(r)
    app.include_router(asyncapi.router)  # GET /asyncapi.json|.yaml: the system's events
    app.add_middleware(http_limits.BodySizeLimit, max_bytes=s.http_max_body_bytes)
    app.add_middleware(TraceMiddleware)
    return app


async def _start_broker(broker: KafkaBroker, s: ServiceSettings) -> None:
    backoff = db.Backoff(0.5, 5.0)
    for _ in range(60):
        try:
            await broker.start()
            return
        except Exception as e:  # broker not up yet
            log.warning("kafka not reachable yet, retrying", exc_info=True, extra={"fields": {"error": type(e).__name__}})
            with contextlib.suppress(Exception):
                await broker.stop()
            await backoff.wait()
    raise RuntimeError(f"could not connect to Kafka at {s.kafka_bootstrap}")


class TraceMiddleware:
    """Continues the caller's W3C trace (traceparent header) into a server span."""

    def __init__(self, app) -> None:
        self.app = app
        self.tracer = trace.get_tracer("regsosek.http")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        ctx = telemetry.context_from_headers(headers)
        route = scope.get("path", "")
        with self.tracer.start_as_current_span(f"{scope.get('method', '')} {route}", context=ctx, kind=trace.SpanKind.SERVER):
            return await self.app(scope, receive, send)


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def serve(app: FastAPI) -> None:
    s = app.state.runtime.settings
    telemetry.setup(s.service_name, s.log_level)
    uvicorn.run(app, host=s.http_host, port=s.http_port, loop="uvloop",
                log_level="warning", access_log=False, timeout_graceful_shutdown=10)
