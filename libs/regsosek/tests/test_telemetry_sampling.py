"""Spans are recorded only when something receives them (regsosek.telemetry.default_sampler); an
unrecorded request keeps its trace context, so trace ids still reach logs, rows and Kafka headers."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from regsosek.telemetry import default_sampler, trace_id_of

EXPORT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "REGSOSEK_TRACE_FILE",
                    "OTEL_TRACES_SAMPLER")


@pytest.fixture
def no_exporter(monkeypatch):
    for v in EXPORT_VARIABLES:
        monkeypatch.delenv(v, raising=False)


def test_without_an_exporter_spans_are_not_recorded_but_carry_a_trace_id(no_exporter):
    tracer = TracerProvider(sampler=default_sampler()).get_tracer("t")
    with tracer.start_as_current_span("request") as span:
        assert not span.is_recording() and span.get_span_context().is_valid
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    assert trace_id_of(carrier["traceparent"]) == format(span.get_span_context().trace_id, "032x")


def test_a_callers_sampled_trace_is_still_recorded(no_exporter):
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    span = TracerProvider(sampler=default_sampler()).get_tracer("t").start_span("request", context=parent)
    assert span.is_recording() and format(span.get_span_context().trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize("variable", EXPORT_VARIABLES)
def test_with_an_exporter_or_a_chosen_sampler_the_sdk_decides(no_exporter, monkeypatch, variable):
    monkeypatch.setenv(variable, "always_on" if variable == "OTEL_TRACES_SAMPLER" else "/tmp/x")
    assert default_sampler() is None
    assert TracerProvider(sampler=default_sampler()).get_tracer("t").start_span("request").is_recording()
