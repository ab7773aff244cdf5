"""CloudEvents 1.0 in Kafka binary content mode: attributes as `ce_*` headers,
the event data (JSON of a contract) as the record value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel
from uuid_utils import uuid7

from regsosek.contracts import EVENT_TYPES, LEGACY_EVENT_TYPES, MODELS_BY_TYPE, Contract

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


def new_event_id() -> str:
    """A new event id: a UUID version 7 (RFC 9562), its first 48 bits the time in milliseconds and
    ordered within a process. Every consumer keys its inbox (and notify its deliveries) by event id:
    ids that grow with time are inserted at the index's right edge, where the pages are in memory,
    instead of at random places across an index of millions of events."""
    return str(uuid7())


def source_of(service: str) -> str:
    """The CloudEvents `source` of everything a service produces: `/regsosek/<service>` (one rule)."""
    return f"/regsosek/{service}"


def new_envelope(
    data: Contract, *, source: str, subject: str, trace: dict[str, str] | None = None, event_id: str | None = None
) -> Envelope:
    return envelope_for(type(data), source=source, subject=subject, trace=trace, event_id=event_id)


def envelope_for(
    model: type[Contract], *, source: str, subject: str, trace: dict[str, str] | None = None,
    event_id: str | None = None,
) -> Envelope:
    """A new envelope for an event of the contract `model` (its CloudEvents type)."""
    trace = trace or {}
    return Envelope(
        id=event_id or new_event_id(),
        # a legacy type only where a test or tool writes a record as an older producer did; services
        # publish through the outbox, which refuses legacy types
        type=EVENT_TYPES.get(model) or LEGACY_EVENT_TYPES[model],
        source=source,
        time=datetime.now(UTC).isoformat(),
        subject=subject,
        traceparent=trace.get("traceparent"),
        tracestate=trace.get("tracestate"),
    )


def encode(data: Contract) -> bytes:
    return data.__pydantic_serializer__.to_json(data)


# Headers this system interprets; each may appear at most once and must be UTF-8
# text without NUL. Other headers are opaque to us and passed through untouched.
INTERPRETED_HEADERS = frozenset(
    {"ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time", "ce_subject", "content-type",
     "traceparent", "tracestate"}
)
REQUIRED_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_specversion")


def header_key_text(key: object) -> str | None:
    """A header key as valid UTF-8 text without NUL, or None when it is not one.

    aiokafka hands keys over as `str`; a key that was not UTF-8 on the wire arrives
    with surrogate escapes (see messaging.consumer), which this rejects as well."""
    if isinstance(key, bytes | bytearray):
        try:
            key = bytes(key).decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(key, str) or "\x00" in key:
        return None
    try:
        key.encode()
    except UnicodeEncodeError:  # lone surrogates: the wire bytes were not UTF-8
        return None
    return key


def read_headers(headers: Headers | tuple | None) -> Envelope:
    """The CloudEvents attributes of a record, or EnvelopeError saying what is wrong.

    Strict about what we interpret and about every header key (a record with a key
    that is not UTF-8 text is malformed); reasons name header keys only when they are
    ones we know, never a value (values may be personal data)."""
    h: dict[str, str] = {}
    for item in headers or ():
        try:
            k, v = item
        except (TypeError, ValueError):
            raise EnvelopeError("a header is not a (key, value) pair") from None
        key = header_key_text(k)
        if key is None:
            raise EnvelopeError("a header key is not UTF-8 text without NUL")
        if key not in INTERPRETED_HEADERS:
            continue  # opaque to us: any value, even null, is the producer's business
        if key in h:
            raise EnvelopeError(f"header {key} is repeated")
        if v is None:
            raise EnvelopeError(f"header {key} has a null value")
        if isinstance(v, str):
            text = v
        elif isinstance(v, bytes | bytearray | memoryview):
            try:
                text = bytes(v).decode()
            except UnicodeDecodeError:
                raise EnvelopeError(f"header {key} is not UTF-8") from None
        else:
            raise EnvelopeError(f"header {key} is not bytes")
        if "\x00" in text:
            raise EnvelopeError(f"header {key} contains NUL")
        h[key] = text
    missing = [k for k in REQUIRED_HEADERS if not h.get(k)]
    if missing:
        raise EnvelopeError(f"missing CloudEvents header(s): {', '.join(missing)}")
    if len(h["ce_id"]) > 200 or not h["ce_id"].isprintable() or not h["ce_id"].isascii():
        raise EnvelopeError("ce_id must be printable ASCII of at most 200 characters")
    if h["ce_specversion"] != SPEC_VERSION:
        raise EnvelopeError(f"unsupported ce_specversion {safe_token(h['ce_specversion'])}")
    return Envelope(
        id=h["ce_id"],
        type=h["ce_type"],
        source=h["ce_source"],
        time=h.get("ce_time", ""),
        subject=h.get("ce_subject", ""),
        traceparent=h.get("traceparent"),
        tracestate=h.get("tracestate"),
    )


_TOKEN = re.compile(r"[A-Za-z0-9._:/-]{1,120}")
_LONG_DIGITS = re.compile(r"\d{6,}")


def safe_token(value: str) -> str:
    """A value quoted for a reason or log line only when it looks like a name (an event
    type, a version), never when it could carry an identifier such as a NIK."""
    if _TOKEN.fullmatch(value) and not _LONG_DIGITS.search(value):
        return repr(value)
    return "(value not shown)"


def decode(envelope: Envelope, value: bytes | None, view: type[BaseModel] | None = None) -> Any:
    """Parse the data of a known event type, tolerating unknown fields: as its contract, or as `view`,
    a model of the part of it one consumer reads (fields not in the view are skipped, not validated)."""
    model = MODELS_BY_TYPE.get(envelope.type)
    if model is None:
        raise EnvelopeError(f"unknown event type {safe_token(envelope.type)}")
    if value is None:
        raise EnvelopeError("record has no value")
    return (view or model).model_validate_json(value, extra="ignore")


def loads(value: bytes):
    return orjson.loads(value)
