"""CloudEvents 1.0 in Kafka binary content mode: attributes as `ce_*` headers,
the event data (JSON of a contract) as the record value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4

import orjson

from regsosek.contracts import EVENT_TYPES, MODELS_BY_TYPE, Contract

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"

Headers = list[tuple[str, bytes]]


class EnvelopeError(ValueError):
    """The record is not a CloudEvent this system understands (a permanent failure)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    type: str
    source: str
    time: str
    subject: str
    traceparent: str | None = None
    tracestate: str | None = None

    def headers(self) -> Headers:
        h: Headers = [
            ("ce_id", self.id.encode()),
            ("ce_type", self.type.encode()),
            ("ce_source", self.source.encode()),
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_time", self.time.encode()),
            ("ce_subject", self.subject.encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]
        if self.traceparent:
            h.append(("traceparent", self.traceparent.encode()))
        if self.tracestate:
            h.append(("tracestate", self.tracestate.encode()))
        return h


def new_envelope(
    data: Contract, *, source: str, subject: str, trace: dict[str, str] | None = None, event_id: str | None = None
) -> Envelope:
    trace = trace or {}
    return Envelope(
        id=event_id or str(uuid4()),
        type=EVENT_TYPES[type(data)],
        source=source,
        time=datetime.now(UTC).isoformat(),
        subject=subject,
        traceparent=trace.get("traceparent"),
        tracestate=trace.get("tracestate"),
    )


def encode(data: Contract) -> bytes:
    return data.__pydantic_serializer__.to_json(data)


def read_headers(headers: Headers | tuple) -> Envelope:
    h: dict[str, str] = {}
    for k, v in headers or ():
        try:
            h[k] = v.decode() if isinstance(v, bytes | bytearray) else str(v)
        except UnicodeDecodeError as e:
            raise EnvelopeError(f"header {k} is not UTF-8") from e
    missing = [k for k in ("ce_id", "ce_type", "ce_source", "ce_specversion") if not h.get(k)]
    if missing:
        raise EnvelopeError(f"missing CloudEvents header(s): {', '.join(missing)}")
    if len(h["ce_id"]) > 200 or not h["ce_id"].isprintable() or not h["ce_id"].isascii():
        raise EnvelopeError("ce_id must be printable ASCII of at most 200 characters")
    if h["ce_specversion"] != SPEC_VERSION:
        raise EnvelopeError(f"unsupported ce_specversion {h['ce_specversion']!r}")
    return Envelope(
        id=h["ce_id"],
        type=h["ce_type"],
        source=h["ce_source"],
        time=h.get("ce_time", ""),
        subject=h.get("ce_subject", ""),
        traceparent=h.get("traceparent"),
        tracestate=h.get("tracestate"),
    )


def decode(envelope: Envelope, value: bytes | None) -> Contract:
    """Parse the data of a known event type, tolerating unknown fields."""
    model = MODELS_BY_TYPE.get(envelope.type)
    if model is None:
        raise EnvelopeError(f"unknown event type {envelope.type!r}")
    if value is None:
        raise EnvelopeError("record has no value")
    return model.model_validate_json(value, extra="ignore")


def loads(value: bytes):
    return orjson.loads(value)
