"""HTTP spans and metrics by route template (regsosek.service.instrument_http), and spans exported
without exception messages (regsosek.telemetry.WithoutExceptionText)."""

from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from regsosek.service import instrument_http
from regsosek.telemetry import WithoutExceptionText

SECRET = "6472011234567890"  # looks like a NIK: must appear in no span attribute


def app_with_spans(service: str) -> tuple[FastAPI, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(WithoutExceptionText(exporter)))
    app = FastAPI()

    @app.get("/v1/families/{family_id}")
    async def family(family_id: str) -> dict:
        return {"ok": True}

    @app.post("/v1/broken")
    async def broken() -> dict:
        raise ValueError(f"invalid input syntax for type bigint: \"{SECRET}\"")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {}

    instrument_http(app, service, tracer_provider=provider)
    return app, exporter


def count(service: str, method: str, route: str, status: str) -> float:
    return REGISTRY.get_sample_value("regsosek_http_requests_total",
                                     {"service": service, "method": method, "route": route, "status": status}) or 0.0


def test_span_named_by_route_template_with_status_and_no_raw_path():
    app, exporter = app_with_spans("obs-a")
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with TestClient(app) as client:
        r = client.get(f"/v1/families/{SECRET}?nik={SECRET}", headers={"traceparent": parent})
        assert r.status_code == 200
        assert client.get("/healthz").status_code == 200
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["GET /v1/families/{family_id}"]  # probes are not traced, no send/receive spans
    span = spans[0]
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"  # the caller's trace continued
    attributes = dict(span.attributes)
    assert attributes.get("http.status_code", attributes.get("http.response.status_code")) == 200
    assert attributes["http.route"] == "/v1/families/{family_id}"
    assert SECRET not in json.dumps(attributes), attributes
    assert not attributes.get("net.peer.ip") and not attributes.get("client.address")  # the device's address


def test_request_metrics_by_route_template_and_status():
    app, _ = app_with_spans("obs-b")
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(3):
            client.get(f"/v1/families/{SECRET}")
        client.get("/no/such/path/123")
        assert client.post("/v1/broken").status_code == 500
        client.get("/healthz")
    assert count("obs-b", "GET", "/v1/families/{family_id}", "200") == 3
    assert count("obs-b", "GET", "unmatched", "404") == 1
    assert count("obs-b", "POST", "/v1/broken", "500") == 1
    assert count("obs-b", "GET", "/healthz", "200") == 0
    assert REGISTRY.get_sample_value("regsosek_http_request_duration_seconds_count",
                                     {"service": "obs-b", "method": "GET", "route": "/v1/families/{family_id}"}) == 3
    exported = "\n".join(line for line in REGISTRY_TEXT().splitlines() if "obs-b" in line)
    assert SECRET not in exported and "/no/such" not in exported  # raw paths never become labels


def REGISTRY_TEXT() -> str:  # noqa: N802
    from prometheus_client import generate_latest

    return generate_latest().decode()


def test_exported_spans_keep_the_exception_type_but_not_its_message():
    app, exporter = app_with_spans("obs-c")
    with TestClient(app, raise_server_exceptions=False) as client:
        client.post("/v1/broken")
    (span,) = exporter.get_finished_spans()
    doc = span.to_json()
    assert SECRET not in doc, doc
    assert "ValueError" in doc  # what failed is still there; the stack is in the log line with the trace id
