"""Consuming events by the reliability rules of docs/ARCHITECTURE.md.

A FastStream batch subscriber (manual acknowledgement) hands each fetched batch to
`EventConsumer.process_batch`, which splits it by partition (a key's events stay
together, in order) and, for each part concurrently, in ONE database transaction:
  1. records every event id in the inbox (redelivered ids are skipped),
  2. applies each new event through its handler (without savepoints; if one event
     fails, the batch is rolled back and redone with a savepoint per event, so the
     failing event alone is dead-lettered),
  3. writes outgoing events and dead letters to the outbox (a dead-lettered event's id
     leaves the inbox again, so it can be re-driven: python -m regsosek.deadletters),
and only after that transaction commits is the Kafka offset committed.

Failures: an invalid envelope or body, an unknown type, or a handler's
`PermanentError`/data error dead-letters that one record (original bytes,
headers and the reason) and the batch goes on.

Any record, however malformed, is read by `parse_record` inside one guard that turns
every non-transient exception into a problem (a reason for the dead letter): null or
repeated CloudEvents headers, header keys or values that are not UTF-8 or hold NUL, a
null or undecodable key, a value that is not JSON or too large
(`consumer_max_record_bytes`), an unknown type. Such a record never enters the inbox.
If a batch still fails for a reason no single event owns (deferred work, the outbox
write), its records are applied one transaction each, and a record that fails alone is
dead-lettered: one record never fails a batch, nor holds another partition.

Two places before our code must not raise on a hostile record either:
- aiokafka decodes header keys as strict UTF-8 while unpacking a fetched batch; a key
  that is not UTF-8 raises out of `getmany` for the whole fetch, forever.
  `messaging.tolerant_fetch` (installed into aiokafka's fetcher on import) re-reads such
  a batch keeping the key's bytes as surrogate escapes, which `parse_record` rejects
  and the outbox stores losslessly (see messaging.outbox).
- FastStream's parser decodes every header value as UTF-8 (null values raise): it is
  given the records without headers (it needs none), the originals are kept. A transient failure (database
or network away) rolls the batch back and retries it with backoff, forever:
the partition waits, nothing is skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from regsosek.contracts import MODELS_BY_TYPE, Contract
from regsosek.db import Backoff, is_transient
from regsosek.envelope import Envelope, EnvelopeError, decode, read_headers, safe_token
from regsosek.messaging import tolerant_fetch  # noqa: F401  (installs the tolerant fetcher)
from regsosek.messaging.faults import FaultPoint, reject_event_types
from regsosek.messaging.outbox import Outbox, OutgoingRecord, RelayWakeup, header_key_bytes
from regsosek.messaging.unit_of_work import UnitOfWork
from regsosek.metrics import BATCH_SECONDS, EVENTS_CONSUMED, EVENTS_DEAD_LETTERED, REBALANCE_SECONDS
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


Handler = Callable[[UnitOfWork, Incoming], Awaitable[None]]
H = TypeVar("H", bound=Callable[..., Awaitable[None]])


def reads(view: type[BaseModel]) -> Callable[[H], H]:
    """Marks a handler that reads only `view` of its event: the consumer decodes the record as the
    view instead of the whole contract (the fields not in it are skipped, not validated) and hands
    the handler the view as `Incoming.data`. What the view reads is validated as the contract
    does (its fields have the contract's types; the consumer's tests hold them to it), and a record
    whose body is not JSON or whose read fields do not validate is dead-lettered with the reason."""

    def mark(handler: H) -> H:
        handler.reads = view  # type: ignore[attr-defined]
        return handler

    return mark


def views_of(handlers: Mapping[str, Handler]) -> dict[str, type[BaseModel]]:
    """The views the handlers read (`reads`), by event type."""
    return {t: v for t, h in handlers.items() if (v := getattr(h, "reads", None)) is not None}

# How a consumer group shares its topics' partitions among instances (docs/ORDERING.md,
# "Instances and partition assignment"). Range gives partition N of every subscribed topic to
# the same instance when all instances subscribe to the same topics and the topics have the
# same partition count (the registry's profiles): an SLS's roster, interviews and resolutions
# then meet in one instance and one fetched batch, and the per-SLS locks are not contended.
# Range alone: aiokafka (0.14.0) sends one JoinGroup per configured assignor on every join (its
# `CoordinatorGroupRebalance.perform_group_join` sends the request inside the loop that lists
# the assignors' protocols), so with round robin offered second every member joined each
# rebalance twice, the second time with another protocol list, which starts a rebalance of its
# own; on a loaded machine members fell out of step and a new instance needed up to two
# minutes to join (the scale-out run's set-up). libs/regsosek/tests/test_partition_assignment.py
# shows the library's behaviour, so an upgrade that fixes it is noticed.
PARTITION_ASSIGNMENT: tuple[type[AbstractPartitionAssignor], ...] = (RangePartitionAssignor,)


class RebalanceLog(ConsumerRebalanceListener):
    """Logs every rebalance as one instance sees it: the partitions it gave up, then the ones it
    got and how long it held none in between (for a new instance: how long its join took)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.revoked_at: float | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.revoked_at = time.monotonic()
        log.info("rebalance: partitions revoked", extra={"fields": {"partitions": len(revoked)}})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        waited = time.monotonic() - self.revoked_at if self.revoked_at is not None else 0.0
        REBALANCE_SECONDS.labels(self.service).observe(waited)
        log.info("rebalance: partitions assigned", extra={"fields": {
            "partitions": len(assigned), "topics": len({tp.topic for tp in assigned}),
            "without_partitions_s": round(waited, 2)}})


class EventConsumer:
    def __init__(
        self,
        settings: ServiceSettings,
        pool_provider: Callable[[], asyncpg.Pool],
        handlers: dict[type[Contract], Handler],
        topics: Sequence[Topic],
        wakeup: RelayWakeup,
    ) -> None:
        from regsosek.contracts import CONSUMABLE_EVENT_TYPES

        self.settings = settings
        self.pool_provider = pool_provider
        self.handlers = {CONSUMABLE_EVENT_TYPES[m]: h for m, h in handlers.items()}  # legacy types readable too
        self.views = views_of(self.handlers)  # events decoded as the part their handler reads
        self.handlers = reject_event_types(self.handlers, PermanentError)  # a test's fault point; off unless set
        self.topics = [t.wire for t in topics]
        self.wakeup = wakeup
        self.source = f"/regsosek/{settings.service_name}"
        self.exit_after_commit = FaultPoint("REGSOSEK_FAULT_EXIT_AFTER_DB_COMMIT")

    # ---------------------------------------------------------------- wiring

    def attach(self, broker: KafkaBroker) -> None:
        s = self.settings

        async def keep_raw(records: tuple[ConsumerRecord, ...], original) -> Any:
            # FastStream's parser decodes every header value as UTF-8 (a null or binary
            # value raises before we could dead-letter the record). It needs no header:
            # give it copies without any, keep the originals for `process_batch`.
            safe = tuple(dataclasses.replace(r, headers=()) for r in records)
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
            partition_assignment_strategy=PARTITION_ASSIGNMENT,
            session_timeout_ms=s.consumer_session_timeout_ms,
            heartbeat_interval_ms=s.consumer_heartbeat_interval_ms,
            rebalance_timeout_ms=s.consumer_rebalance_timeout_ms,
            max_poll_interval_ms=s.consumer_max_poll_interval_ms,
            listener=RebalanceLog(s.service_name),
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
            try:
                await msg.ack()
            except CommitFailedError:
                # The group rebalanced while the batch was applied: its partitions may be another
                # instance's now. The database committed; the records come again to whoever owns
                # the partitions and the inbox skips them.
                log.warning("batch applied but its offsets not committed: the group rebalanced meanwhile",
                            extra={"fields": {"records": len(msg.raw_message)}})

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
        parsed = [
            parse_record(r, handled_types=self.handlers, max_bytes=self.settings.consumer_max_record_bytes,
                         service=self.settings.service_name, views=self.views)
            for r in records
        ]
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            try:
                with BATCH_SECONDS.labels(self.settings.service_name).time():
                    await self._apply_resilient(parsed)
                self.wakeup.notify()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not is_transient(e):
                    raise
                log.warning(
                    "transient failure, retrying batch", exc_info=True,
                    extra={"fields": {"delay_s": backoff.delay, "records": len(records)}},
                )
                await backoff.wait()

    async def _apply_resilient(self, parsed: Sequence[Parsed]) -> None:
        """Apply a partition's records, narrowing a failure down to the record that owns
        it: fast (no savepoints), then a savepoint per event (a failing handler's event
        alone is dead-lettered), then, if the batch still fails for a reason no handler
        owns (deferred work, the outbox write), one transaction per record, where a record
        that fails alone is dead-lettered. Transient failures propagate (retry)."""
        try:
            await self._apply(parsed, isolate=False)
            return
        except _EventFailed:
            pass  # one event failed; the attempt was rolled back
        except Exception as e:
            if is_transient(e):
                raise
            log.exception("batch failed; redoing it with a savepoint per event")
        try:
            await self._apply(parsed, isolate=True)
            return
        except Exception as e:
            if is_transient(e):
                raise
            log.exception("batch failed outside any one handler; applying its records one by one",
                          extra={"fields": {"records": len(parsed)}})
        for p in parsed:
            try:
                await self._apply([p], isolate=True)
            except Exception as e:
                if is_transient(e):
                    raise
                log.exception("record failed on its own; dead-lettering it",
                              extra={"fields": {"topic": p.record.topic, "partition": p.record.partition,
                                                "offset": p.record.offset}})
                await self._apply([Parsed(p.record, problem=f"processing failed: {type(e).__name__}")], isolate=True)

    async def _apply(self, parsed: Sequence[Parsed], *, isolate: bool) -> None:
        """Apply parsed records in one transaction. Without `isolate` no savepoints are
        taken (two round trips saved per event); an event failing then aborts the attempt
        with `_EventFailed` and the caller retries the batch isolated."""
        outbox = Outbox(self.source)
        pool = self.pool_provider()
        async with pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(conn, outbox, isolated=isolate)
            readable = [p for p in parsed if p.problem is None]
            fresh = set()
            if readable:
                rows = await conn.fetch(
                    "insert into inbox (event_id, topic) select * from unnest($1::text[], $2::text[]) "
                    "on conflict do nothing returning event_id",
                    [p.readable_envelope().id for p in readable],
                    [p.record.topic for p in readable],
                )
                fresh = {row["event_id"] for row in rows}
            todo = _fresh_in_order(readable, fresh)
            uow.batch = tuple(Incoming(p.readable_envelope(), p.data, p.record) for p in todo)
            dead_ids: list[str] = []
            for p in parsed:
                if p.problem is not None:
                    self._dead_letter(outbox, p.record, p.problem)
            for p, incoming in zip(todo, uow.batch, strict=True):
                before = len(outbox.pending)
                await self._apply_one(uow, p, isolate, incoming)
                if any(o.topic == Topic.DEAD_LETTER.wire for o in outbox.pending[before:]):
                    dead_ids.append(incoming.envelope.id)
            if dead_ids:
                # A dead-lettered event was not applied: forget its id, so that re-driving it
                # (same ce_id, python -m regsosek.deadletters) applies it instead of skipping it.
                await conn.execute("delete from inbox where event_id = any($1::text[])", dead_ids)
            await uow.run_deferred()
            dead = sum(r.topic == Topic.DEAD_LETTER.wire for r in outbox.pending)
            await outbox.flush(conn)
        EVENTS_CONSUMED.labels(self.settings.service_name).inc(len(parsed))
        if dead:
            EVENTS_DEAD_LETTERED.labels(self.settings.service_name).inc(dead)

    async def _apply_one(self, uow: UnitOfWork, parsed: Parsed, isolate: bool, incoming: Incoming | None = None) -> None:
        outbox = uow.outbox
        record = parsed.record
        incoming = incoming or Incoming(parsed.readable_envelope(), parsed.data, record)
        env = incoming.envelope
        handler = self.handlers[env.type]  # parse_record dead-letters types without one
        with _tracer.start_as_current_span(
            f"{record.topic} process", context=parsed.context, kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": record.topic,
                        "messaging.kafka.partition": record.partition, "messaging.kafka.offset": record.offset,
                        "cloudevents.event_id": env.id, "cloudevents.event_type": env.type},
        ):
            mark = len(outbox.pending)
            try:
                if isolate:
                    # What a failing event may have changed outside the savepoint: the scratch cache
                    # (lists in it are appended to in place, and deferred work holds on to them, so
                    # they are cut back to their length, not replaced) and the work it deferred.
                    cached = dict(uow.cache)
                    lengths = {k: len(v) for k, v in cached.items() if isinstance(v, list)}
                    deferred = dict(uow.deferred)
                    async with uow.conn.transaction():  # savepoint: a failing event undoes only itself
                        await handler(uow, incoming)
                else:
                    await handler(uow, incoming)
            except Exception as e:
                if is_transient(e):
                    raise
                if not isolate:
                    raise _EventFailed from e
                # This event's alone: dead-letter it (replayable), keep the partition flowing.
                del outbox.pending[mark:]
                for k, n in lengths.items():
                    del cached[k][n:]
                uow.cache.clear()  # it may hold what the rolled-back savepoint wrote
                uow.cache.update(cached)
                uow.deferred.clear()
                uow.deferred.update(deferred)
                reason = str(e) if isinstance(e, PermanentError) else f"handler failed: {type(e).__name__}"
                self._dead_letter(outbox, record, reason)
                if not isinstance(e, PermanentError):
                    log.exception("handler failed; event dead-lettered", extra={"fields": {"event_id": env.id}})

    def _dead_letter(self, outbox: Outbox, record: ConsumerRecord, reason: str) -> None:
        log.warning(
            "dead-lettering record",
            extra={"fields": {"topic": record.topic, "partition": record.partition, "offset": record.offset, "reason": reason}},
        )
        headers = [_header_pair(h) for h in record.headers or ()] + [
            ("dlq_reason", reason.encode()),
            ("dlq_service", self.settings.service_name.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
        ]
        outbox.add_raw(OutgoingRecord(Topic.DEAD_LETTER.wire, record.key, record.value, headers))


def _fresh_in_order(readable: Sequence[Parsed], fresh: set[str]) -> list[Parsed]:
    """The records whose event ids the inbox took just now, in order; an id repeated within the
    batch counts once (its first record)."""
    left, todo = set(fresh), []
    for p in readable:
        event_id = p.readable_envelope().id
        if event_id in left:
            left.discard(event_id)
            todo.append(p)
    return todo


@dataclass(slots=True)
class Parsed:
    """A record as read by `parse_record`: either an envelope, its decoded data and trace
    context, or the `problem` (a dead letter's reason) that makes it unreadable."""

    record: ConsumerRecord
    envelope: Envelope | None = None
    data: Any = None
    context: otel_context.Context | None = None
    problem: str | None = None

    def readable_envelope(self) -> Envelope:
        """The envelope of a record that parsed (`problem` is None)."""
        if self.envelope is None:
            raise ValueError(f"record without an envelope has no event to apply ({self.problem})")
        return self.envelope


def parse_record(record: ConsumerRecord, *, handled_types: Container[str], max_bytes: int, service: str,
                 views: Mapping[str, type[BaseModel]] | None = None) -> Parsed:
    """Reads a record into a `Parsed`, never raising for anything the record carries: any
    non-transient exception becomes a problem with a reason. Reasons say what is wrong,
    naming only headers and types we know, never a value (it may be personal data).
    `views`: by event type, the part of the event its handler reads (`reads`), decoded instead of
    the whole contract."""
    try:
        return _parse(record, handled_types, max_bytes, service, views or {})
    except EnvelopeError as e:
        return Parsed(record, problem=str(e))
    except ValidationError as e:
        return Parsed(record, problem=_body_problem(e))
    except Exception as e:
        if is_transient(e):
            raise
        log.warning("record unreadable; it will be dead-lettered", exc_info=True,
                    extra={"fields": {"topic": getattr(record, "topic", None), "offset": getattr(record, "offset", None)}})
        return Parsed(record, problem=f"unreadable record ({type(e).__name__})")


def _parse(record: ConsumerRecord, handled_types: Container[str], max_bytes: int, service: str,
           views: Mapping[str, type[BaseModel]]) -> Parsed:
    size = record_size(record)
    if size > max_bytes:
        raise EnvelopeError(f"record too large: {size} bytes, limit {max_bytes}")
    if record.key is None:
        raise EnvelopeError("record has no key")
    try:
        bytes(record.key).decode()
    except UnicodeDecodeError:
        raise EnvelopeError("record key is not UTF-8") from None
    env = read_headers(record.headers)
    if env.type not in handled_types:
        if env.type in MODELS_BY_TYPE:
            raise EnvelopeError(f"no handler for event type {safe_token(env.type)} in {service}")
        raise EnvelopeError(f"unknown event type {safe_token(env.type)}")
    if record.value is None:
        raise EnvelopeError("record has no value")
    data = decode(env, record.value, views.get(env.type))
    return Parsed(record, env, data, context_from_headers(record.headers))


def record_size(record: ConsumerRecord) -> int:
    """Bytes of a record's key, value and headers (as on the wire, near enough)."""
    size = len(record.key or b"") + len(record.value or b"")
    for item in record.headers or ():
        if not isinstance(item, tuple | list) or len(item) != 2:
            continue  # read_headers names the problem
        k, v = item
        size += len(header_key_bytes(k)) if isinstance(k, str | bytes) else 0
        size += len(v) if isinstance(v, bytes | bytearray | str) else 0
    return size


def _header_pair(item) -> tuple[str | bytes, bytes | None]:
    """An original header for the dead letter, kept as it came (the outbox stores any key)."""
    try:
        k, v = item
    except (TypeError, ValueError):
        return ("dlq_unreadable_header", None)
    if not isinstance(k, str | bytes):
        k = "dlq_unreadable_header"
    if v is not None and not isinstance(v, bytes):
        v = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else None
    return (k, v)


def _body_problem(e: ValidationError) -> str:
    if any(err.get("type") == "json_invalid" for err in e.errors(include_input=False, include_url=False)):
        return "invalid body: value is not JSON"
    return "invalid body: " + _validation_summary(e)


def _validation_summary(e: ValidationError) -> str:
    """Field paths and messages only: the offending values may be personal data."""
    parts = []
    for err in e.errors(include_input=False, include_url=False)[:10]:
        loc = "/".join(str(x) for x in err["loc"])
        parts.append(f"/{loc}: {err['msg']}")
    return "; ".join(parts)[:1000]
