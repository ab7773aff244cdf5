"""Tracing (W3C trace context over HTTP and Kafka headers, OTLP export when
configured) and structured JSON logs. Personal identifiers never go into spans
or logs: callers pass pseudonyms (see `contracts.identifiers.pseudonym`).

Spans are recorded only when something receives them (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or REGSOSEK_TRACE_FILE set) or OTEL_TRACES_SAMPLER
asks for them; otherwise a request or batch still gets its trace context (ids in logs,
stored rows and Kafka headers, a caller's trace continued), but no span is recorded
(ParentBased(ALWAYS_OFF): a caller's sampled trace is still recorded): a span with
nowhere to go was a tenth of intake's CPU per request. With an exporter, the sampler is
the SDK's (OTEL_TRACES_SAMPLER, default parent-based always-on; at national scale e.g.
`parentbased_traceidratio` with OTEL_TRACES_SAMPLER_ARG=0.01).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler
from opentelemetry.trace import Status

_configured = False


def setup(service_name: str, log_level: str = "INFO") -> None:
    global _configured
    if _configured:
        return
    _configured = True
    provider = TracerProvider(resource=Resource.create({"service.name": f"regsosek-{service_name}"}),
                              sampler=default_sampler())
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(WithoutExceptionText(OTLPSpanExporter())))
    if span_file := os.environ.get("REGSOSEK_TRACE_FILE"):
        # Spans as JSON lines in a file: for a machine without a collector, and for the tests that
        # scan every span of a run for personal data.
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        out = open(span_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        provider.add_span_processor(SimpleSpanProcessor(WithoutExceptionText(
            ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n"))))
    trace.set_tracer_provider(provider)
    instrument_libraries()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level)
    for noisy in ("aiokafka", "faststream", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def spans_wanted() -> bool:
    """Something receives spans (an OTLP endpoint, REGSOSEK_TRACE_FILE), or OTEL_TRACES_SAMPLER asks for them."""
    return any(os.environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                                           "REGSOSEK_TRACE_FILE", "OTEL_TRACES_SAMPLER"))


def default_sampler() -> Sampler | None:
    """ParentBased(ALWAYS_OFF) when no span would be exported and OTEL_TRACES_SAMPLER is unset; else
    None (the SDK's sampler from the environment)."""
    return None if spans_wanted() else ParentBased(ALWAYS_OFF)


_EXCEPTION_TEXT = ("exception.message", "exception.stacktrace")  # the stacktrace ends with the message


def without_exception_text(span: ReadableSpan) -> ReadableSpan:
    """The span as exported: exception events keep the exception's type but not its message or
    formatted stack, and an error status keeps the type only. The SDK (and every instrumentation)
    records `str(exception)`, and the messages of database and validation errors can quote the
    offending value (`invalid input syntax for type bigint: "6472..."`). The stack is in the log
    line with the same trace id (JsonFormatter), without the message."""
    events = [Event(e.name, {k: v for k, v in (e.attributes or {}).items() if k not in _EXCEPTION_TEXT}, e.timestamp)
              if e.name == "exception" else e for e in span.events]
    status = span.status
    if status.description:
        status = Status(status.status_code, status.description.split(":", 1)[0])
    return ReadableSpan(name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                        attributes=span.attributes, events=events, links=span.links, kind=span.kind, status=status,
                        start_time=span.start_time, end_time=span.end_time,
                        instrumentation_scope=span.instrumentation_scope)


class WithoutExceptionText(SpanExporter):
    """Wraps an exporter: every span goes out through `without_exception_text`."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([without_exception_text(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def instrument_libraries() -> None:
    """Client spans from the OpenTelemetry instrumentations: asyncpg when spans are wanted (statement text only:
    `capture_parameters=False`, so the values bound to $1, $2 ... never reach a span; they
    are NIKs, names, whole interviews) and httpx (webhook deliveries, JWKS fetches). The
    FastAPI server side is instrumented per app (regsosek.service.instrument_http)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    # A statement's client span is only worth making when spans go somewhere: it adds no trace
    # context (rows and events take theirs from the request or record), and making it was ~6% of
    # intake's CPU per submission even unrecorded (BENCHMARKS.md, intake round 3).
    if spans_wanted() and not AsyncPGInstrumentor().is_instrumented_by_opentelemetry:
        AsyncPGInstrumentor(capture_parameters=False).instrument()
    if not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        HTTPXClientInstrumentor().instrument()


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        span = trace.get_current_span().get_span_context()
        doc = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if span.is_valid:
            doc["trace_id"] = format(span.trace_id, "032x")
        for k, v in getattr(record, "fields", {}).items():
            doc[k] = v
        if record.exc_info and record.exc_info[1] is not None:
            doc.update(exception_fields(record.exc_info[1]))
        return orjson.dumps(doc, default=str).decode()


_MAX_CHAIN = 5


def exception_fields(exc: BaseException) -> dict:
    """An exception for a log line: its type and stack (file, line, function), and those
    of its causes, but never its message: the messages of database and validation errors
    can hold the offending values (a NIK, a name)."""
    fields: dict = {"exc_type": _type_name(exc), "exc_stack": _frames(exc)}
    causes: list[dict] = []
    seen = {id(exc)}
    current: BaseException | None = exc
    while current is not None and len(causes) < _MAX_CHAIN:
        nxt, relation = (current.__cause__, "cause") if current.__cause__ is not None else (
            (current.__context__, "context") if not current.__suppress_context__ else (None, ""))
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        causes.append({"relation": relation, "exc_type": _type_name(nxt), "exc_stack": _frames(nxt)})
        current = nxt
    if causes:
        fields["exc_causes"] = causes
    return fields


def _type_name(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ in ("builtins", "__main__") else f"{t.__module__}.{t.__qualname__}"


def _frames(exc: BaseException) -> list[str]:
    return [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)]


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


_TRACE_HEADERS = ("traceparent", "tracestate")


def context_from_headers(headers: Iterable[tuple[object, object]] | Mapping[str, object] | None) -> otel_context.Context:
    """The W3C trace context carried by `headers` (Kafka header pairs or an HTTP mapping).

    Never raises: headers come from outside (any producer may write a null value, bytes
    that are not UTF-8, a key that is not text); what cannot be read as a trace header
    is ignored and the work starts a new trace."""
    carrier: dict[str, str] = {}
    try:
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        for item in pairs:
            try:
                k, v = item
            except (TypeError, ValueError):
                continue
            if isinstance(k, bytes | bytearray):
                k = bytes(k).decode("latin-1")
            if not isinstance(k, str) or k.lower() not in _TRACE_HEADERS:
                continue
            if isinstance(v, bytes | bytearray | memoryview):
                v = bytes(v).decode(errors="replace")
            if isinstance(v, str) and "\x00" not in v:
                carrier[k.lower()] = v
        return extract(carrier)
    except Exception:  # noqa: BLE001 - a trace is never worth failing the work it belongs to
        return otel_context.Context()


def traceparent_of(headers: Iterable[tuple[object, object]] | Mapping[str, object] | None) -> str | None:
    """The W3C traceparent that `headers` carry, as read by `context_from_headers` (None when they
    carry none that can be read): the trace a record arrived in, before any span of its own."""
    carrier: dict[str, str] = {}
    inject(carrier, context=context_from_headers(headers))
    return carrier.get("traceparent")


def current_trace_headers() -> dict[str, str]:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def trace_id_of(traceparent: str | None) -> str | None:
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 else None


@contextlib.contextmanager
def in_trace_of(traceparent: str | None, name: str = "resume held work"):
    """Continue a stored trace (e.g. of a held interview) for the work done inside."""
    if not traceparent:
        yield
        return
    with trace.get_tracer("regsosek").start_as_current_span(name, context=extract({"traceparent": traceparent})):
        yield
