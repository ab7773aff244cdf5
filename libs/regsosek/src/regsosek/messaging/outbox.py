"""Writing outgoing events into the outbox, inside the caller's transaction.

Header keys are stored as bytes (`header_keys bytea[]`, migration 002), because a dead
letter keeps the headers of whatever record it carries, and a hostile record's header
key may hold a NUL byte (PostgreSQL text cannot) or bytes that are not UTF-8. The rule
for turning a stored key back into a Kafka header key (`kafka_header_key`, used by the
relay), whose keys aiokafka only takes as `str`:

- a key that is UTF-8 (NUL included, Kafka allows it) goes out verbatim;
- a key that is not UTF-8 cannot be a Kafka header key; it goes out under the escaped
  name `dlq_key_hex:` + the key's bytes in lower-case hex, so nothing is lost and no
  reader of the dead-letter topic trips over it.

Header values are bytes or null (Kafka allows a null value), stored as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from regsosek.contracts import EVENT_TYPES, Contract
from regsosek.envelope import Envelope, Headers, encode, envelope_for
from regsosek.telemetry import current_trace_headers
from regsosek.topics import Topic

_INSERT_ONE = "insert into outbox (topic, key, value, header_keys, header_values) values ($1, $2, $3, $4, $5)"


@dataclass(slots=True)
class OutgoingRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass
class Outbox:
    """Collects the events a unit of work emits; `flush` writes them in one round-trip."""

    source: str
    pending: list[OutgoingRecord] = field(default_factory=list)

    def publish(
        self, topic: Topic, key: str, data: Contract, *, subject: str, event_id: str | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Envelope:
        """`data` as the next record of `topic`; its trace context is `trace` (headers) if given,
        else the current one's."""
        return self.publish_encoded(topic, key, type(data), encode(data), subject=subject, event_id=event_id,
                                    trace=trace)

    def publish_encoded(
        self, topic: Topic, key: str, model: type[Contract], value: bytes, *, subject: str, event_id: str | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Envelope:
        """An event already serialised as the JSON of the contract `model`: for a producer's hot path
        that writes an event from values its own code computed, without building and validating the
        model first (classify's publisher). Its tests must hold the bytes to the contract: the same
        bytes as the model's own serialisation, and valid against the model."""
        if model not in EVENT_TYPES:  # e.g. a v1 shape with identifiers in clear: read only, never produced
            raise TypeError(f"{model.__name__} is not a produced event type")
        env = envelope_for(model, source=self.source, subject=subject,
                           trace=current_trace_headers() if trace is None else dict(trace), event_id=event_id)
        self.pending.append(OutgoingRecord(topic.wire, key.encode(), value, env.headers()))
        return env

    def add_raw(self, record: OutgoingRecord) -> None:
        self.pending.append(record)

    async def flush(self, conn: asyncpg.Connection) -> int:
        n = len(self.pending)
        if n == 0:
            return 0
        # Rows go in one statement per record to keep header arrays independent in
        # length (Postgres multi-dimensional arrays must be rectangular).
        await conn.executemany(
            _INSERT_ONE,
            [(r.topic, r.key, r.value, [header_key_bytes(k) for k, _ in r.headers],
              [_header_value_bytes(v) for _, v in r.headers]) for r in self.pending],
        )
        self.pending.clear()
        return n


ESCAPED_KEY_PREFIX = "dlq_key_hex:"


def header_key_bytes(key: str | bytes) -> bytes:
    """A header key's wire bytes. aiokafka gives keys as `str`; one that was not UTF-8 on
    the wire carries surrogate escapes (see messaging.consumer), which give the bytes back."""
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    try:
        return key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogatepass")


def kafka_header_key(stored: bytes) -> str:
    """The Kafka header key for a stored key (see the module docstring for the rule)."""
    try:
        return bytes(stored).decode()
    except UnicodeDecodeError:
        return ESCAPED_KEY_PREFIX + bytes(stored).hex()


def _header_value_bytes(value: bytes | str | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)


class RelayWakeup:
    """In-process signal from a committed transaction to the relay (`event`) and to the loops that
    took a `listener()` (notify's deliveries); a poll covers other processes' commits."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._listeners: list[asyncio.Event] = []

    def listener(self) -> asyncio.Event:
        e = asyncio.Event()
        self._listeners.append(e)
        return e

    def notify(self) -> None:
        self.event.set()
        for e in self._listeners:
            e.set()
