"""The shape every service shares: settings, database pool and migrations, the
outbox relay, the Kafka consumer, an HTTP app with /healthz and /metrics, and
the service's own background tasks. A service supplies a `ServiceDefinition`;
`build_app` wires it; `serve` runs it.

Readiness (`/healthz`, also `/readyz`) is a list of named checks on the `Runtime`
(`add_check`), so a part that can get stuck says so where the orchestrator looks:
200 `{"ready": true, "checks": {...}}` when every check passes, 503 with each failing
check's reason otherwise. The checks: `service` (started, not stopping), `database`
(`select 1` on a connection of its own), `broker` (a metadata request, services that
consume), `schema` (every migration this code needs applied), `relay` (a backlog that
does not move), `tasks` (no background task died). Checks read in-memory state only
(a probe never waits on the database): what must be queried is refreshed by a
background task every REGSOSEK_PROBE_INTERVAL_S (regsosek.health).

Liveness (`/livez`): 503 when the event loop's heartbeat is late beyond
REGSOSEK_LOOP_LAG_LIMIT_S (measured by a watchdog thread, which also exports
`regsosek_event_loop_lag_seconds` and logs where a stuck loop is stuck) or when the
service could not start; a database or broker outage never fails liveness.

Migrations: applied on start when REGSOSEK_MIGRATE_ON_START (the local default). In
production they are their own step (`python -m regsosek.migrate --service <name>`, an
init container in deploy/); the service then waits, unready, until the schema is
current before it starts consuming and relaying.

HTTP: server spans named by route template (`GET /v1/submissions/{submission_id}`)
with status codes from the OpenTelemetry FastAPI instrumentation (the raw path, which
may hold an id, is replaced by the template on the span), and
`regsosek_http_requests_total` / `regsosek_http_request_duration_seconds` by route
template and status on /metrics. REGSOSEK_HTTP_WORKERS > 1 serves one port from that many
worker processes, each a whole instance (`serve`: services that hand over their app factory, intake;
the others log that they ignore it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from regsosek import asyncapi, db, health, http_limits, kafka_security, retention, telemetry
from regsosek.background import BackgroundTasks
from regsosek.contracts import Contract
from regsosek.envelope import source_of
from regsosek.messaging import EventConsumer, Handler, Outbox, OutboxRelay, RelayWakeup, UnitOfWork
from regsosek.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS
from regsosek.settings import ServiceSettings
from regsosek.topics import Topic

log = logging.getLogger("regsosek.service")

# A readiness check: None when fine, else a short reason (never personal data).
ReadinessCheck = Callable[[], "str | None"]
# A background task: started with the running service, it runs for the service's life.
BackgroundTask = Callable[["Runtime"], Coroutine[Any, Any, None]]


@dataclass
class ServiceDefinition:
    name: str
    settings: ServiceSettings
    migrations: Path
    handlers: dict[type[Contract], Handler] = field(default_factory=dict)
    topics: Sequence[Topic] = ()
    routers: Sequence[APIRouter] = ()
    # Each runs as a task named after the function for the service's life: build its loop with
    # regsosek.background.run_forever or periodic.
    background: Sequence[BackgroundTask] = ()
    # The service's own retention rules (SQL in its store.py); the shared ones (inbox,
    # outbox_rejected, audit_log) apply to every service: regsosek.retention.
    retention: Sequence[retention.Rule] = ()
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
        self.starting = "not started"  # what the start is waiting for, while not ready
        self.fatal: str | None = None  # the start failed: liveness fails, the orchestrator restarts
        self.checks: dict[str, ReadinessCheck] = {}
        self.watchdog: health.LoopWatchdog | None = None
        self.background = BackgroundTasks(definition.settings.service_name, logger=log)

    @property
    def tasks(self) -> list[asyncio.Task]:
        """The running background tasks (`background.tasks`)."""
        return self.background.tasks

    @tasks.setter
    def tasks(self, tasks: list[asyncio.Task]) -> None:
        self.background.tasks = list(tasks)

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Adds a named readiness check; /healthz fails while it returns a reason."""
        self.checks[name] = check

    def readiness(self) -> tuple[bool, dict[str, str]]:
        results = {"service": "ok" if self.ready else (self.fatal or self.starting)}
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as e:  # noqa: BLE001 - a broken check reports, it does not break the probe
                log.exception("readiness check failed", extra={"fields": {"check": name}})
                problem = f"check failed: {type(e).__name__}"
            results[name] = problem or "ok"
        return all(v == "ok" for v in results.values()), results

    def liveness(self) -> str | None:
        """None while the process is worth keeping; else why the orchestrator should restart it."""
        if self.fatal:
            return self.fatal
        return self.watchdog.problem() if self.watchdog is not None else None

    def tasks_check(self) -> str | None:
        """Readiness check: a background task that ended (they run forever) is a part that stopped."""
        return self.background.check()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "service not started"
        return self._pool

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """One transaction; events published through it are committed with it."""
        outbox = Outbox(source_of(self.settings.service_name))
        async with self.pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(conn, outbox)
            yield uow
            await uow.run_deferred()
            await outbox.flush(conn)
        self.wakeup.notify()


class _Lifecycle:
    """Start-up and shutdown of one service (the app's lifespan), in the order they must happen:
    `open` (telemetry, watchdog, database pool, the database probe), `start` (migrations, the
    schema wait, the relay, the consumer, the background tasks; then ready), `close`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime, self.definition, self.s = runtime, runtime.definition, runtime.settings
        self.broker: KafkaBroker | None = None
        self.starter: asyncio.Task | None = None
        self.schema_problem: str | None = "not checked yet"

    async def open(self) -> None:
        s, runtime = self.s, self.runtime
        telemetry.setup(s.service_name, s.log_level)
        kafka_security.check_production(s)  # production refuses Kafka in clear before anything starts
        runtime.watchdog = health.LoopWatchdog(s.service_name, beat_s=s.loop_beat_s, limit_s=s.loop_lag_limit_s,
                                               log_s=s.loop_lag_log_s)
        runtime.watchdog.start()
        runtime.starting = "connecting to the database"
        runtime._pool = await db.connect_pool(s.dsn(), max_size=s.db_pool_max)
        self.probe_conn = health.DatabaseProbe(s.dsn(), timeout_s=s.probe_timeout_s)
        self.database = health.Probe(s.service_name, "database", self.probe_conn.ping,
                                     interval_s=s.probe_interval_s, timeout_s=s.probe_timeout_s)
        runtime.add_check("database", self.database.check)
        runtime.add_check("tasks", runtime.tasks_check)
        runtime.background.start("probe-database", self.database.run())
        runtime.add_check("schema", lambda: self.schema_problem)
        self.relay = OutboxRelay(s, lambda: runtime.pool, runtime.wakeup)

    async def start(self) -> None:
        s, runtime = self.s, self.runtime
        if s.migrate_on_start:
            runtime.starting = "applying migrations"
            applied = await db.migrate(runtime.pool, self.definition.migrations)
            if applied:
                log.info("migrations applied", extra={"fields": {"applied": applied}})
        await self._wait_for_schema()
        runtime.add_check("relay", self.relay.health)
        runtime.background.start("outbox-relay", self.relay.run())
        runtime.background.start("outbox-monitor", self.relay.watch())
        if self.definition.handlers:
            await self._start_consumer()
        for bg in (*self.definition.background, retention.prune_forever):  # every service prunes (RETENTION.md)
            runtime.background.start(getattr(bg, "__name__", "background"), bg(runtime))
        await self.database.run_once()
        runtime.ready = True
        log.info("service started", extra={"fields": {"port": s.http_port}})

    async def _wait_for_schema(self) -> None:
        """Until every migration this code needs is applied (production applies them in a step of its own)."""
        s, definition = self.s, self.definition
        schema = health.Probe(s.service_name, "schema",
                              lambda: self.probe_conn.pending(definition.migrations, definition.name),
                              interval_s=s.probe_interval_s, timeout_s=s.probe_timeout_s)
        while (problem := await schema.run_once()) is not None:
            self.schema_problem = self.runtime.starting = problem
            log.warning("waiting for the schema", extra={"fields": {"reason": problem}})
            await asyncio.sleep(s.probe_interval_s)
        self.schema_problem = None  # a schema once current stays current for this code

    async def _start_consumer(self) -> None:
        s, runtime = self.s, self.runtime
        runtime.starting = "connecting to Kafka"
        broker = KafkaBroker(s.kafka_bootstrap_servers, logger=logging.getLogger("faststream"),
                             client_id=f"regsosek-{s.service_name}", security=s.kafka_faststream_security())
        self.broker = broker
        EventConsumer(s, lambda: runtime.pool, self.definition.handlers, self.definition.topics,
                      runtime.wakeup).attach(broker)
        await _start_broker(broker, s)

        async def broker_ping() -> str | None:
            return None if await broker.ping(timeout=s.probe_timeout_s) else "no metadata from the brokers"

        kafka = health.Probe(s.service_name, "broker", broker_ping,
                             interval_s=s.probe_interval_s, timeout_s=s.probe_timeout_s + 1)
        runtime.add_check("broker", kafka.check)
        await kafka.run_once()
        runtime.background.start("probe-broker", kafka.run())

    async def _start_or_fail(self) -> None:
        try:
            await self.start()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.runtime.fatal = f"start failed: {type(e).__name__}"
            log.exception("service could not start; /livez fails so that it is restarted")

    async def begin(self) -> None:
        """Locally (REGSOSEK_MIGRATE_ON_START) serve only once everything runs, as before; in
        production serve /healthz (503 with the reason, e.g. the schema behind) and /livez while
        the start waits."""
        if self.s.migrate_on_start:
            await self.start()
        else:
            self.starter = asyncio.create_task(self._start_or_fail(), name="start")

    async def close(self) -> None:
        runtime = self.runtime
        runtime.ready = False
        runtime.starting = "stopping"
        if self.starter is not None:
            self.starter.cancel()
            await asyncio.gather(self.starter, return_exceptions=True)
        if self.broker is not None:
            await self.broker.stop()
        await runtime.background.stop(timeout_s=SHUTDOWN_TASKS_S)
        await self.relay.stop()
        await self.probe_conn.close()
        await runtime.pool.close()
        if runtime.watchdog is not None:
            await runtime.watchdog.stop()


# How long shutdown waits for the cancelled background tasks (uvicorn's graceful shutdown is 10 s).
SHUTDOWN_TASKS_S = 10.0
# How long a worker process (REGSOSEK_HTTP_WORKERS > 1) may leave the supervisor's ping unanswered.
WORKER_PING_S = 60


def _lifespan(runtime: Runtime) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle = _Lifecycle(runtime)
        await lifecycle.open()
        await lifecycle.begin()
        try:
            yield
        finally:
            await lifecycle.close()

    return lifespan


def _add_operations_routes(app: FastAPI, runtime: Runtime) -> None:
    """/healthz and /readyz (readiness), /livez (liveness), /metrics (Prometheus)."""

    @app.get("/healthz", tags=["operations"], summary="Readiness: every check passes")
    @app.get("/readyz", tags=["operations"], summary="Readiness (same as /healthz)")
    async def healthz() -> Response:
        ok, checks = runtime.readiness()
        return Response(status_code=200 if ok else 503, content=json.dumps({"ready": ok, "checks": checks}),
                        media_type="application/json")

    @app.get("/livez", tags=["operations"], summary="Liveness: the event loop keeps up and the service could start")
    async def livez() -> Response:
        problem = runtime.liveness()
        if problem:
            return Response(status_code=503, content=json.dumps({"alive": False, "reason": problem}),
                            media_type="application/json")
        return Response(content='{"alive": true}', media_type="application/json")

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _add_error_handler(app: FastAPI) -> None:
    @app.exception_handler(Exception)
    async def unavailable(request: Request, exc: Exception) -> Response:
        # The database or broker is away: tell the device to retry (same submission id) later.
        if db.is_transient(exc):
            return Response('{"reason": "temporarily unavailable, retry with the same submission id"}',
                            status_code=503, media_type="application/json", headers={"Retry-After": "2"})
        log.error("unhandled error", exc_info=exc,
                  extra={"fields": {"error": type(exc).__name__, "route": route_template(request.scope)}})
        return Response('{"reason": "internal error"}', status_code=500, media_type="application/json")


def validation_problems(exc: RequestValidationError) -> list[dict[str, str]]:
    """A request's problems as JSON pointers and reasons: the pointer of a body field leaves out
    "body" (`/members/0/nik`); a query or path parameter's keeps where it came from
    (`/query/prefix`). Never the offending value: FastAPI's own answer repeats every input it
    refused, and the input may be a NIK, a name or a webhook secret."""
    problems = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        problems.append({"path": "/" + "/".join(loc), "reason": str(err.get("msg", "invalid"))})
    return problems


def add_validation_answer(app: FastAPI) -> None:
    """Every service answers a request its routes refuse with 422 and `{"errors": [{"path",
    "reason"}, ...]}` (`validation_problems`)."""

    @app.exception_handler(RequestValidationError)
    async def _problems(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"errors": validation_problems(exc)}, status_code=422)


def build_app(definition: ServiceDefinition) -> FastAPI:
    """The service's FastAPI app: its lifespan starts and stops everything (`_Lifecycle`); the
    operations routes, the error handler, the service's routers, /asyncapi.*, the body limit and
    the HTTP observability."""
    s = definition.settings
    runtime = Runtime(definition)
    app = FastAPI(title=definition.title or f"regsosek {definition.name}", description=definition.description,
                  version="1", lifespan=_lifespan(runtime))
    app.state.runtime = runtime
    _add_operations_routes(app, runtime)
    _add_error_handler(app)
    add_validation_answer(app)
    for r in definition.routers:
        app.include_router(r)
    app.include_router(asyncapi.router)  # GET /asyncapi.json|.yaml: the system's events
    app.add_middleware(http_limits.BodySizeLimit, max_bytes=s.http_max_body_bytes)
    instrument_http(app, s.service_name)
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
    raise RuntimeError(f"could not connect to Kafka at {s.kafka_description()}")


# Probes and scrapes are neither traced nor counted: they would drown the requests that matter.
_NOT_OBSERVED = ("/healthz", "/readyz", "/livez", "/metrics")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope) -> str:
    """The matched route's template (`/v1/subscriptions/{sub_id}`), or "unmatched": never the raw
    path, which may hold an id and is unbounded as a label."""
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"


class HttpMetrics:
    """Prometheus request metrics by route template, method and status code (outermost middleware:
    413s and errors count too)."""

    def __init__(self, app, service: str) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in _NOT_OBSERVED:
            return await self.app(scope, receive, send)
        status = 0
        started = time.perf_counter()

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as e:
            status = status or (503 if db.is_transient(e) else 500)  # what the exception handlers answer
            raise
        finally:
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            route = route_template(scope)
            HTTP_REQUESTS.labels(self.service, method, route, str(status or 500)).inc()
            HTTP_REQUEST_SECONDS.labels(self.service, method, route).observe(time.perf_counter() - started)


_RAW_REQUEST_ATTRIBUTES = ("http.target", "http.url", "url.path", "url.full", "url.query")
_CLIENT_ADDRESS_ATTRIBUTES = ("net.peer.ip", "net.sock.peer.addr", "client.address", "net.peer.port", "client.port")


def _span_without_raw_path(span, scope) -> None:
    """Server request hook: the span keeps the route template, not the path and query it was called
    with (they may hold an id), and not the caller's address (an officer's device)."""
    if span is None or not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    route = attributes.get("http.route") or "unmatched"
    for key in _RAW_REQUEST_ATTRIBUTES:
        if key in attributes:
            span.set_attribute(key, "" if key == "url.query" else route)
    for key in _CLIENT_ADDRESS_ATTRIBUTES:
        if key in attributes:
            span.set_attribute(key, "")


def instrument_http(app: FastAPI, service: str, tracer_provider=None) -> None:
    """OpenTelemetry server spans (the caller's W3C trace continued, span named by route template,
    status code recorded, no raw path or query) and the Prometheus request metrics."""
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracer_provider, excluded_urls=",".join(p.lstrip("/") + "$" for p in _NOT_OBSERVED),
        exclude_spans=["receive", "send"], server_request_hook=_span_without_raw_path)
    app.add_middleware(HttpMetrics, service=service)


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


class _AnsweredByTheApp(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application": Starlette raises an exception again after the
    app's own handler has answered it (and logged it, if it was not an outage: `_add_error_handler`),
    and uvicorn would log it a second time."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Exception in ASGI application")


# uvicorn's own loggers hand their records to the root logger, i.e. to telemetry's JSON lines (an
# exception as its type and stack, never its message); uvicorn's default configuration would print
# them in plain text, with each exception's message, which may hold the values it failed on.
UVICORN_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"answered": {"()": _AnsweredByTheApp}},
    "loggers": {
        "uvicorn": {"handlers": [], "propagate": True},
        "uvicorn.error": {"handlers": [], "propagate": True, "filters": ["answered"]},
        "uvicorn.access": {"handlers": [], "propagate": True},
    },
}


def serve(app: FastAPI, *, factory: str | None = None) -> None:
    """Serves the app on REGSOSEK_HTTP_HOST:REGSOSEK_HTTP_PORT. With REGSOSEK_HTTP_WORKERS above 1,
    uvicorn's supervisor starts that many worker processes on the one listening socket (a dead worker
    is replaced; SIGTERM stops them all gracefully); each builds its app with `factory` (an import
    path, "intake.app:create_app") and runs as a whole instance: its own pool and consumer, and a
    candidate for the outbox relay, which one process per database publishes at a time (advisory
    lock, regsosek.messaging.relay). A service that gives no factory serves with one process (and
    says so in its log)."""
    s = app.state.runtime.settings
    telemetry.setup(s.service_name, s.log_level)
    options: dict[str, Any] = {"host": s.http_host, "port": s.http_port, "loop": "uvloop", "log_level": "warning",
                               "access_log": False, "timeout_graceful_shutdown": 10, "log_config": UVICORN_LOGGING}
    if s.http_workers > 1 and factory is None:  # one environment may be shared by every service
        log.warning("REGSOSEK_HTTP_WORKERS ignored: this service serves with one process (run more instances)",
                    extra={"fields": {"workers": s.http_workers}})
    if s.http_workers == 1 or factory is None:
        uvicorn.run(app, **options)
    else:
        log.info("serving with worker processes", extra={"fields": {"workers": s.http_workers}})
        # a worker that does not answer the supervisor's ping for this long is replaced: generous, since
        # a worker still importing on a busy machine does not answer yet
        uvicorn.run(factory, factory=True, workers=s.http_workers, timeout_worker_healthcheck=WORKER_PING_S,
                    **options)
