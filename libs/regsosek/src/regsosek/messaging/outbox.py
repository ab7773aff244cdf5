"""Writing outgoing events into the outbox, inside the caller's transaction."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg

from regsosek.contracts import Contract
from regsosek.envelope import Envelope, Headers, encode, new_envelope
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
        self, topic: Topic, key: str, data: Contract, *, subject: str, event_id: str | None = None
    ) -> Envelope:
        env = new_envelope(data, source=self.source, subject=subject, trace=current_trace_headers(), event_id=event_id)
        self.pending.append(OutgoingRecord(topic.wire, key.encode(), encode(data), env.headers()))
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
            [(r.topic, r.key, r.value, [k for k, _ in r.headers], [v for _, v in r.headers]) for r in self.pending],
        )
        self.pending.clear()
        return n


class RelayWakeup:
    """In-process signal from a committed transaction to the relay (a poll covers other processes)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def notify(self) -> None:
        self.event.set()
