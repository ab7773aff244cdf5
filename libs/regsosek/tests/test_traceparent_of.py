"""`traceparent_of`: the trace a Kafka record arrived in, read from its headers as
`context_from_headers` reads them (never raising on what a producer may write)."""

from __future__ import annotations

from regsosek.telemetry import traceparent_of

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_traceparent_a_record_carries():
    assert traceparent_of([("ce_id", b"x"), ("traceparent", TRACE.encode())]) == TRACE


def test_none_when_the_headers_carry_no_readable_trace():
    assert traceparent_of([("ce_id", b"x")]) is None
    assert traceparent_of([("traceparent", b"\xff\xfe not a trace")]) is None
    assert traceparent_of([("traceparent", None), (b"\xff", b"x"), ("odd",)]) is None
    assert traceparent_of(None) is None
