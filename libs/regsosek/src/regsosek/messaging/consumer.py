"""Consuming events by the reliability rules of ARCHITECTURE.md.

A FastStream batch subscriber (manual acknowledgement) hands each fetched batch to
`EventConsumer.process_batch`, which splits it by partition (a key's events stay
together, in order) and, for each part concurrently, in ONE database transaction:
  1. records every event id in the inbox (redelivered ids are skipped),
  2. applies each new event through its handler (without savepoints; if one event
     fails, the batch is rolled back and redone with a savepoint per event, so the
     failing event alone is dead-lettered),
  3. writes outgoing events and dead letters to the outbox,
and only after that transaction commits is the Kafka offset committed.

Failures: an invalid envelope or body, an unknown type, or a handler's
`PermanentError`/data error dead-letters that one record (original bytes,
headers and the reason) and the batch goes on. A transient failure (database
or network away) rolls the batch back and retries it with backoff, forever:
the partition waits, nothing is skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from opentelemetry import trace
from pydantic import ValidationError

from regsosek.contracts import Contract
from regsosek.db import Backoff, is_transient
from regsosek.envelope import Envelope, EnvelopeError, decode, read_headers
from regsosek.messaging.faults import FaultPoint
from regsosek.messaging.outbox import Outbox, OutgoingRecord, RelayWakeup
from regsosek.metrics import EVENTS_CONSUMED, EVENTS_DEAD_LETTERED, BATCH_SECONDS
from regsosek.settings import ServiceSettings
from regsosek.telemetry import context_from_headers
from regsosek.topics import Topic

log = logging.getLogger("regsosek.consumer")
_tracer = trace.get_tracer("regsosek.consumer")


class PermanentError(Exception):
    """The event can never be applied (bad data, broken invariant): dead-letter it."""


class _EventFailed(Exception):
    """An event failed in a batch applied without savepoints; retry the batch isolated."""


@dataclass(slots=True)
class Incoming:
    """One decoded event, handed to a handler together with its unit of work."""

    envelope: Envelope
    data: Any
    record: ConsumerRecord

    @property
    def key(self) -> str:
        return (self.record.key or b"").decode(errors="replace")


@dataclass(slots=True)
class UnitOfWork:
    """What a handler may touch: the transaction's connection and the outbox, plus a
    scratch `cache` that lives as long as the transaction (e.g. an SLS roster read by
    several events of one batch) and work `defer`red to just before commit, once per key
    (e.g. one recount per SLS instead of one per event)."""

    conn: asyncpg.Connection
    outbox: Outbox
    cache: dict = field(default_factory=dict)
    deferred: dict[Hashable, Callable[[], Awaitable[None]]] = field(default_factory=dict)

    def defer(self, key: Hashable, work: Callable[[], Awaitable[None]]) -> None:
        self.deferred[key] = work

    async def run_deferred(self) -> None:
        while self.deferred:
            key = next(iter(self.deferred))
            await self.deferred.pop(key)()


Handler = Callable[[UnitOfWork, Incoming], Awaitable[None]]


class EventConsumer:
    def __init__(
        self,
        settings: ServiceSettings,
        pool_provider: Callable[[], asyncpg.Pool],
        handlers: dict[type[Contract], Handler],
        topics: Sequence[Topic],
        wakeup: RelayWakeup,
    ) -> None:
        from regsosek.contracts import EVENT_TYPES

        self.settings = settings
        self.pool_provider = pool_provider
        self.handlers = {EVENT_TYPES[m]: h for m, h in handlers.items()}
        self.topics = [t.wire for t in topics]
        self.wakeup = wakeup
        self.source = f"/regsosek/{settings.service_name}"
        self.exit_after_commit = FaultPoint("REGSOSEK_FAULT_EXIT_AFTER_DB_COMMIT")

    # ---------------------------------------------------------------- wiring

    def attach(self, broker: KafkaBroker) -> None:
        s = self.settings

        async def keep_raw(records: tuple[ConsumerRecord, ...], original) -> Any:
            # FastStream's parser decodes every header as UTF-8; a poison record would
            # raise before we can dead-letter it. Give it sanitized copies, keep originals.
            safe = tuple(dataclasses.replace(r, headers=_printable_headers(r.headers)) for r in records)
            msg = await original(safe)
            msg.raw_message = records
            return msg

        async def no_decode(msg, original) -> None:
            return None

        @broker.subscriber(
            *self.topics,
            group_id=s.consumer_group,
            batch=True,
            max_records=s.consumer_max_records,
            batch_timeout_ms=s.consumer_batch_timeout_ms,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            parser=keep_raw,
            decoder=no_decode,
        )
        async def on_batch(body: Any, msg: KafkaMessage) -> None:  # noqa: ARG001
            try:
                await self.process_batch(msg.raw_message)
            except Exception:
                # A bug outside any one event's handler: never commit past the batch.
                # Rewind every partition in it and try again after a pause.
                log.exception("batch failed; rewinding to retry it", extra={"fields": {"records": len(msg.raw_message)}})
                await msg.nack()
                await asyncio.sleep(self.settings.retry_max_s)
                return
            if self.exit_after_commit.hit():
                self.exit_after_commit.crash()
            await msg.ack()

    # ---------------------------------------------------------------- processing

    async def process_batch(self, records: Sequence[ConsumerRecord]) -> None:
        """Apply a fetched batch. Records are grouped by partition number: a key's events
        (an SLS's roster and interviews, on co-partitioned topics) stay in one group, in
        order; groups are independent and run concurrently, each in its own transaction
        on its own connection. The caller commits offsets only after every group has."""
        groups: dict[int, list[ConsumerRecord]] = {}
        for r in records:
            groups.setdefault(r.partition, []).append(r)
        if len(groups) == 1 or self.settings.consumer_partition_concurrency <= 1:
            await self._process_group(records)
            return
        limit = asyncio.Semaphore(self.settings.consumer_partition_concurrency)

        async def bounded(group: list[ConsumerRecord]) -> None:
            async with limit:
                await self._process_group(group)

        results = await asyncio.gather(*(bounded(g) for g in groups.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # groups that committed are harmless to redo: their events are in the inbox

    async def _process_group(self, records: Sequence[ConsumerRecord]) -> None:
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            try:
                with BATCH_SECONDS.labels(self.settings.service_name).time():
                    try:
                        await self._apply(records, isolate=False)
                    except _EventFailed:
                        # One event failed: redo the batch with a savepoint per event so
                        # only that event is dead-lettered (the fast attempt was rolled back).
                        await self._apply(records, isolate=True)
                self.wakeup.notify()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not is_transient(e):
                    raise
                log.warning(
                    "transient failure, retrying batch",
                    extra={"fields": {"error": type(e).__name__, "delay_s": backoff.delay, "records": len(records)}},
                )
                await backoff.wait()

    async def _apply(self, records: Sequence[ConsumerRecord], *, isolate: bool) -> None:
        """Apply a batch in one transaction. Without `isolate` no savepoints are taken (two
        round trips saved per event); an event failing then aborts the attempt with
        `_EventFailed` and the caller retries the batch isolated."""
        outbox = Outbox(self.source)
        parsed: list[tuple[ConsumerRecord, Envelope | None, str | None]] = []
        for r in records:
            try:
                parsed.append((r, read_headers(r.headers), None))
            except EnvelopeError as e:
                parsed.append((r, None, str(e)))

        pool = self.pool_provider()
        async with pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(conn, outbox)
            ids = [env.id for _, env, _ in parsed if env is not None]
            fresh = set()
            if ids:
                rows = await conn.fetch(
                    "insert into inbox (event_id, topic) select * from unnest($1::text[], $2::text[]) "
                    "on conflict do nothing returning event_id",
                    ids,
                    [r.topic for r, env, _ in parsed if env is not None],
                )
                fresh = {row["event_id"] for row in rows}
            for record, env, problem in parsed:
                if env is None:
                    self._dead_letter(outbox, record, problem or "invalid envelope")
                    continue
                if env.id not in fresh:
                    continue  # already applied (redelivery) or repeated within this batch
                fresh.discard(env.id)
                await self._apply_one(uow, record, env, isolate)
            await uow.run_deferred()
            dead = sum(r.topic == Topic.DEAD_LETTER.wire for r in outbox.pending)
            await outbox.flush(conn)
        EVENTS_CONSUMED.labels(self.settings.service_name).inc(len(records))
        if dead:
            EVENTS_DEAD_LETTERED.labels(self.settings.service_name).inc(dead)

    async def _apply_one(self, uow: UnitOfWork, record: ConsumerRecord, env: Envelope, isolate: bool) -> None:
        outbox = uow.outbox
        handler = self.handlers.get(env.type)
        if handler is None:
            self._dead_letter(outbox, record, f"no handler for event type {env.type!r} in {self.settings.service_name}")
            return
        try:
            data = decode(env, record.value)
        except ValidationError as e:
            self._dead_letter(outbox, record, "invalid body: " + _validation_summary(e))
            return
        except (EnvelopeError, ValueError) as e:
            self._dead_letter(outbox, record, f"invalid body: {type(e).__name__}")
            return
        ctx = context_from_headers(record.headers)
        with _tracer.start_as_current_span(
            f"{record.topic} process", context=ctx, kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": record.topic,
                        "messaging.kafka.partition": record.partition, "messaging.kafka.offset": record.offset,
                        "cloudevents.event_id": env.id, "cloudevents.event_type": env.type},
        ):
            mark = len(outbox.pending)
            try:
                if isolate:
                    cached = dict(uow.cache)
                    async with uow.conn.transaction():  # savepoint: a failing event undoes only itself
                        await handler(uow, Incoming(env, data, record))
                else:
                    await handler(uow, Incoming(env, data, record))
            except Exception as e:
                if is_transient(e):
                    raise
                if not isolate:
                    raise _EventFailed from e
                # This event's alone: dead-letter it (replayable), keep the partition flowing.
                del outbox.pending[mark:]
                uow.cache.clear()  # it may hold what the rolled-back savepoint wrote
                uow.cache.update(cached)
                reason = str(e) if isinstance(e, PermanentError) else f"handler failed: {type(e).__name__}"
                self._dead_letter(outbox, record, reason)
                if not isinstance(e, PermanentError):
                    log.exception("handler failed; event dead-lettered", extra={"fields": {"event_id": env.id}})

    def _dead_letter(self, outbox: Outbox, record: ConsumerRecord, reason: str) -> None:
        log.warning(
            "dead-lettering record",
            extra={"fields": {"topic": record.topic, "partition": record.partition, "offset": record.offset, "reason": reason}},
        )
        headers = list(record.headers or ()) + [
            ("dlq_reason", reason.encode()),
            ("dlq_service", self.settings.service_name.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
        ]
        outbox.add_raw(OutgoingRecord(Topic.DEAD_LETTER.wire, record.key, record.value, headers))


def _printable_headers(headers) -> tuple:
    out = []
    for k, v in headers or ():
        try:
            (v or b"").decode()
            out.append((k, v or b""))
        except UnicodeDecodeError:
            out.append((k, b""))
    return tuple(out)


def _validation_summary(e: ValidationError) -> str:
    """Field paths and messages only: the offending values may be personal data."""
    parts = []
    for err in e.errors(include_input=False, include_url=False)[:10]:
        loc = "/".join(str(x) for x in err["loc"])
        parts.append(f"/{loc}: {err['msg']}")
    return "; ".join(parts)[:1000]
