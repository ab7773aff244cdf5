"""The outbox relay: publishes committed outbox rows to Kafka, then deletes them.

One relay per database publishes at a time (a PostgreSQL advisory lock elects
it), in outbox id order, through an idempotent producer with acks=all, so each
key's order is kept. A crash between Kafka's acknowledgement and the delete
re-sends those rows on restart; consumers' inboxes make that harmless.

The relay heals itself instead of needing a restart:

- Every row's outcome is handled on its own (`send_batch`). A row the broker
  refuses for good (too large for the topic, topic not authorised, illegal topic
  name: `SET_ASIDE_ERRORS`) is moved to `outbox_rejected` with its bytes, headers
  and reason, in the transaction that deletes the rows published with it. It does
  not hold the rows behind it, not even later rows of its own key: the rejected
  record can never be published as it is, so waiting for it would stop its key for
  good, and with it, as keys share partitions and the relay goes in id order, every
  event of the service. Each event is a fact of its own (a family's interview, a
  decision) that consumers apply without the one before it, exactly as they go on
  past a dead-lettered input; the rejected row is an operator's case (error log,
  `regsosek_outbox_rejected_total`, `regsosek_outbox_rejected_rows`), kept so it
  can be re-queued once its cause is fixed (see migration 003).
- aiokafka numbers an idempotent producer's batches per partition when it sends
  them and never takes a number back, so after ANY failed batch (refused record,
  expired batch) the broker answers every later batch of that partition with
  OutOfOrderSequenceNumber. Such rows stay in the outbox and the relay replaces
  the producer (new producer id, numbering from 0) and sends them again; the same
  goes for a fenced or closed producer or an unknown producer id (`REBUILD_ERRORS`).
  Rows behind a row that must wait are never published ahead of it: a partition's
  batches go one at a time, so once one fails the later ones fail too, and when
  `send` itself fails the rest of the batch is not sent.
- Transient trouble (broker or database away, a topic that does not exist yet)
  keeps retrying with backoff, as it always did, with the same producer.
- Every instance, relay or not, counts the outbox (`watch`) for the backlog
  metrics and the readiness check `health`: the outbox is stalled when it has
  rows and its oldest row has not left it for `relay_stall_s`.

A command-line job that wrote events (a re-rank, a replay) publishes them before it
exits with `OutboxRelay.drain(timeout)` (see regsosek.composition): the same lock,
batches and outcomes, for the rows committed so far, then the relay stops.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    IllegalStateError,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTimestampError,
    InvalidTopicError,
    InvalidTxnState,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    PolicyViolationError,
    ProducerClosed,
    ProducerFenced,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownProducerId,
    UnsupportedForMessageFormatError,
)

from regsosek.background import IdlePoll, run_forever, wait_woken
from regsosek.db import Backoff, advisory_lock, advisory_unlock, is_transient
from regsosek.kafka_security import KafkaClientSettings, client_options
from regsosek.messaging.faults import FaultPoint
from regsosek.messaging.outbox import RelayWakeup, kafka_header_key
from regsosek.metrics import (
    EVENTS_PUBLISHED,
    OUTBOX_BACKLOG,
    OUTBOX_REJECTED,
    OUTBOX_REJECTED_ROWS,
    RELAY_LAST_PROGRESS,
    RELAY_LEADER,
    RELAY_PRODUCER_REBUILDS,
    RELAY_STALL_SECONDS,
    RELAY_STALLED,
)
from regsosek.settings import ServiceSettings

log = logging.getLogger("regsosek.relay")

RELAY_LOCK = 7316002

# The broker refused this record, and would refuse it again: set it aside.
SET_ASIDE_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,       # larger than the topic's max.message.bytes (or the producer's max_request_size)
    RecordListTooLargeError,
    RecordTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    InvalidTimestampError,
    PolicyViolationError,
    UnsupportedForMessageFormatError,
)
# The producer cannot go on: replace it, send the row again.
REBUILD_ERRORS: tuple[type[BaseException], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    ProducerFenced,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTxnState,
    KafkaTimeoutError,              # a batch expired or could not be queued in time
    ProducerClosed,
    IllegalStateError,
)

# Kafka's rule for topic names (and neither "." nor "..").
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")

# The backlog is counted exactly up to this many rows; beyond, the planner's estimate
# (a count of millions of rows every few seconds would cost more than it tells).
EXACT_COUNT_LIMIT = 100_000
_COUNT_SQL = """
select (select count(*) from (select 1 from outbox limit $1) s) as n,
       (select min(id) from outbox) as head,
       (select greatest(reltuples, 0)::bigint from pg_class where oid = 'outbox'::regclass) as estimate,
       (select count(*) from outbox_rejected) as rejected
"""


class Action(enum.Enum):
    SET_ASIDE = "set aside"  # refused for good: move to outbox_rejected
    REBUILD = "rebuild"      # the producer is unusable: replace it, keep the row
    RETRY = "retry"          # transient: keep the row and the producer, try later


def classify_error(error: BaseException, *, in_flight: bool) -> Action:
    """What to do about a row whose send failed with `error`.

    `in_flight`: the error came from the row's delivery future, i.e. its batch had been
    given a sequence number; any such failure leaves the producer out of step with the
    broker for that partition, so it is REBUILD unless the row itself is refused for good
    (and then the producer is replaced too, see `BatchResult.rebuild_for`).
    Errors from `send` itself come before any numbering: a retriable Kafka error (no
    metadata for the topic yet, broker away) waits with the same producer.
    Anything that is not a Kafka error (a bug, the database) is RETRY: never set a row
    aside for a reason that is not the broker's verdict on it.
    """
    if isinstance(error, SET_ASIDE_ERRORS):
        return Action.SET_ASIDE
    if in_flight or isinstance(error, REBUILD_ERRORS):
        return Action.REBUILD
    if isinstance(error, KafkaError):
        return Action.RETRY if error.retriable else Action.REBUILD
    return Action.RETRY


@dataclass
class Rejection:
    row: Mapping[str, Any]
    error: BaseException

    @property
    def error_type(self) -> str:
        return type(self.error).__name__

    @property
    def reason(self) -> str:
        detail = str(self.error)
        return f"{self.error_type}: {detail}" if detail else self.error_type


@dataclass
class BatchResult:
    """The outcome of sending one batch of outbox rows, row by row."""

    published: list[int] = field(default_factory=list)  # outbox ids Kafka acknowledged
    rejected: list[Rejection] = field(default_factory=list)  # refused for good
    waiting: list[int] = field(default_factory=list)  # stay in the outbox for another attempt
    rebuild_for: BaseException | None = None  # the error that left the producer unusable
    stopped_by: BaseException | None = None  # the error that stopped sending the rest of the batch

    @property
    def removed(self) -> int:
        return len(self.published) + len(self.rejected)


def _illegal_topic(topic: str) -> bool:
    return not _LEGAL_TOPIC.fullmatch(topic) or topic in (".", "..")


async def send_batch(
    producer: Any,
    rows: Sequence[Mapping[str, Any]],
    after_send: Callable[[list[asyncio.Future]], Awaitable[None]] | None = None,
) -> BatchResult:
    """Sends `rows` in order and waits for each one's outcome (no database here)."""
    result = BatchResult()
    sent: list[tuple[Mapping[str, Any], asyncio.Future]] = []
    unsent: Sequence[Mapping[str, Any]] = ()
    for i, r in enumerate(rows):
        if _illegal_topic(r["topic"]):
            # The producer would wait a request timeout for metadata that never comes.
            result.rejected.append(Rejection(r, InvalidTopicError(f"illegal topic name {r['topic']!r}")))
            continue
        try:
            fut = await producer.send(
                r["topic"], value=r["value"], key=r["key"],
                headers=list(zip(map(kafka_header_key, r["header_keys"]), r["header_values"], strict=True)),
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - sorted below
            action = classify_error(e, in_flight=False)
            if action is Action.SET_ASIDE:  # refused before it was queued: no sequence number used
                result.rejected.append(Rejection(r, e))
                continue
            result.stopped_by = e
            if action is Action.REBUILD:
                result.rebuild_for = e
            unsent = rows[i:]  # nothing after a row that must wait is sent
            break
        sent.append((r, fut))
        if after_send is not None:
            await after_send([f for _, f in sent])
    outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
    for (r, _), outcome in zip(sent, outcomes, strict=True):
        if not isinstance(outcome, BaseException):
            result.published.append(r["id"])
            continue
        result.rebuild_for = result.rebuild_for or outcome
        if classify_error(outcome, in_flight=True) is Action.SET_ASIDE:
            result.rejected.append(Rejection(r, outcome))
        else:
            result.waiting.append(r["id"])
    result.waiting.extend(r["id"] for r in unsent)
    return result


class ProducerUnusable(Exception):
    """A batch made no progress and the producer was replaced; the relay tries again."""


class StallWatch:
    """Whether the outbox is moving, from periodic observations of its size and oldest id.

    Progress is the oldest row leaving the outbox (published or set aside), whichever
    instance's relay removed it; new rows arriving are not progress. Pure state, so the
    readiness check reads it without a query.
    """

    def __init__(self, stall_s: float, now: float) -> None:
        self.stall_s = stall_s
        self.started = now
        self.observed_at: float | None = None
        self.last_error: str | None = None
        self.backlog = 0
        self.head: int | None = None
        self.head_since: float | None = None

    def observe(self, now: float, backlog: int, head: int | None) -> None:
        if backlog == 0 or head is None:
            self.head = self.head_since = None
        elif head != self.head:
            self.head, self.head_since = head, now
        self.backlog = backlog
        self.observed_at = now
        self.last_error = None

    def failed(self, error: BaseException) -> None:
        self.last_error = type(error).__name__

    def stalled_for(self, now: float) -> float:
        return 0.0 if self.head_since is None else now - self.head_since

    def problem(self, now: float) -> str | None:
        """None while the outbox is empty or moving; else what is wrong."""
        seen = self.observed_at if self.observed_at is not None else self.started
        if now - seen > self.stall_s:
            why = f" ({self.last_error})" if self.last_error else ""
            return f"outbox not checked for {now - seen:.0f}s{why}"
        stalled = self.stalled_for(now)
        if stalled >= self.stall_s:
            return f"stalled {stalled:.0f}s with {self.backlog} rows waiting"
        return None


class OutboxRelay:
    def __init__(
        self,
        settings: ServiceSettings,
        pool_provider: Callable[[], asyncpg.Pool],
        wakeup: RelayWakeup,
        producer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.pool_provider = pool_provider
        self.wakeup = wakeup
        self.producer_factory = producer_factory or (lambda: make_producer(settings.kafka_bootstrap, settings))
        self.exit_after_sends = FaultPoint("REGSOSEK_FAULT_RELAY_EXIT_AFTER_SENDS")
        self.producer: AIOKafkaProducer | None = None
        self.holds_lock = False
        self.stall = StallWatch(settings.relay_stall_s, time.monotonic())
        self._service = settings.service_name

    # ------------------------------------------------------------ publishing

    async def run(self) -> None:
        """Publishes while this instance holds the relay lock; forever, through every failure."""
        await run_forever("outbox relay", self._lead,
                          backoff=Backoff(self.settings.retry_initial_s, self.settings.retry_max_s),
                          expected=_expected_failure, on_error=self._after_failure, logger=log)

    async def stop(self) -> None:
        if self.producer is not None:
            producer, self.producer = self.producer, None
            await _close_quietly(producer)

    async def _after_failure(self, error: BaseException) -> None:
        if isinstance(error, KafkaError) and classify_error(error, in_flight=False) is Action.REBUILD:
            await self._drop_producer(error)

    async def _lead(self) -> None:
        pool: asyncpg.Pool = self.pool_provider()
        async with pool.acquire() as conn:
            while not await advisory_lock(conn, RELAY_LOCK, wait=False):  # noqa: ASYNC110 - polls a database lock; nothing in-process to wait on
                await asyncio.sleep(1.0)  # another instance is the relay
            self.holds_lock = True
            RELAY_LEADER.labels(self._service).set(1)
            idle = IdlePoll(self.settings.relay_idle_poll_s, self.settings.relay_idle_poll_max_s)
            try:
                while True:
                    self.wakeup.event.clear()  # before looking: a commit meanwhile cuts the wait short
                    await wait_woken(self.wakeup.event, idle.after(await self.publish_once(conn)))
            finally:
                self.holds_lock = False
                RELAY_LEADER.labels(self._service).set(0)
                await advisory_unlock(conn, RELAY_LOCK)

    async def publish_once(self, conn: asyncpg.Connection) -> int:
        """Sends the next batch; returns the rows that left the outbox (published or set
        aside), 0 only when the outbox is empty. A batch that removed nothing raises."""
        rows = await conn.fetch(
            "select id, topic, key, value, header_keys, header_values from outbox order by id limit $1",
            self.settings.relay_batch_size,
        )
        if not rows:
            return 0
        producer = await self._producer_ready()
        result = await send_batch(producer, rows, self._fault_after_send if self.exit_after_sends.armed else None)
        await self._settle(conn, result)
        if result.waiting:
            log.warning("outbox rows kept for another attempt", extra={"fields": {
                "rows": len(result.waiting), "error": type(result.stopped_by or result.rebuild_for).__name__}})
        if result.rebuild_for is not None:
            await self._drop_producer(result.rebuild_for)
        if result.removed == 0:
            if result.stopped_by is not None:
                raise result.stopped_by
            raise ProducerUnusable(f"no row of the batch was published ({type(result.rebuild_for).__name__})")
        return result.removed

    # ------------------------------------------------------------ draining (commands)

    async def drain(self, timeout: float = 120.0, *, poll_s: float = 0.2) -> int:
        """Sends every row committed to the outbox so far, for a command that wrote events and
        is about to exit (e.g. `python -m classify.rerank`); returns the rows this relay removed
        from the outbox (published, or set aside as `publish_once` does).

        "So far" is up to the newest outbox id when called (rows committed meanwhile may go too).
        When no instance holds the relay lock, this relay takes it, publishes in id order until
        none of those rows is left, releases the lock and stops its producer. While another
        instance (a running service) is the relay, it waits for that one to send them, taking
        over should the lock come free, and returns 0 when they are gone. Transient failures
        are retried with backoff; TimeoutError once `timeout` seconds have passed with rows left."""
        deadline = time.monotonic() + timeout
        async with self.pool_provider().acquire() as conn:
            mark = await conn.fetchval("select max(id) from outbox")
            if mark is None:
                return 0
            while await self._left_up_to(conn, mark):
                _check_deadline(deadline, timeout)
                if await advisory_lock(conn, RELAY_LOCK, wait=False):
                    try:
                        return await self._publish_up_to(conn, mark, deadline, timeout)
                    finally:
                        await advisory_unlock(conn, RELAY_LOCK)
                        await self.stop()
                await asyncio.sleep(poll_s)  # another instance is the relay: it sends them
        return 0

    async def _publish_up_to(self, conn: asyncpg.Connection, mark: int, deadline: float, timeout: float) -> int:
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        total = 0
        while await self._left_up_to(conn, mark):
            _check_deadline(deadline, timeout)
            try:
                total += await self.publish_once(conn)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not _expected_failure(e):
                    raise
                log.warning("outbox drain interrupted, retrying", exc_info=True,
                            extra={"fields": {"error": type(e).__name__, "retry_in_s": backoff.delay}})
                await self._after_failure(e)
                await backoff.wait()
            else:
                backoff.reset()
        return total

    @staticmethod
    async def _left_up_to(conn: asyncpg.Connection, mark: int) -> bool:
        return bool(await conn.fetchval("select exists (select 1 from outbox where id <= $1)", mark))

    async def _fault_after_send(self, futures: list[asyncio.Future]) -> None:
        if self.exit_after_sends.hit():
            await asyncio.gather(*futures)  # these reached Kafka; their rows stay in the outbox
            self.exit_after_sends.crash()

    async def _settle(self, conn: asyncpg.Connection, result: BatchResult) -> None:
        """Deletes the published rows and moves the refused ones, in one transaction."""
        if result.removed == 0:
            return
        async with conn.transaction():
            if result.rejected:
                await conn.executemany(
                    "insert into outbox_rejected"
                    " (id, topic, key, value, header_keys, header_values, created_at, error_type, reason)"
                    " select id, topic, key, value, header_keys, header_values, created_at, $2, $3"
                    " from outbox where id = $1",
                    [(j.row["id"], j.error_type, j.reason[:2000]) for j in result.rejected],
                )
            await conn.execute("delete from outbox where id = any($1::bigint[])",
                               result.published + [j.row["id"] for j in result.rejected])
        EVENTS_PUBLISHED.labels(self._service).inc(len(result.published))
        RELAY_LAST_PROGRESS.labels(self._service).set(time.time())
        for j in result.rejected:
            OUTBOX_REJECTED.labels(self._service, j.error_type).inc()
            # No key, value or headers in the log: they may carry personal data.
            log.error("outbox row refused by Kafka for good: moved to outbox_rejected; later rows of its key "
                      "are published without it",
                      extra={"fields": {"outbox_id": j.row["id"], "topic": j.row["topic"], "error": j.error_type,
                                        "reason": j.reason[:300], "value_bytes": len(j.row["value"] or b"")}})

    async def _producer_ready(self) -> Any:
        if self.producer is not None and not _usable(self.producer):
            await self._drop_producer(ProducerClosed("the producer was closed or its sender stopped"))
        if self.producer is None:
            producer = self.producer_factory()
            try:
                await producer.start()
            except BaseException:
                await _close_quietly(producer)
                raise
            self.producer = producer
        return self.producer

    async def _drop_producer(self, error: BaseException) -> None:
        """Stops the producer; the next batch starts a new one."""
        if self.producer is None:
            return
        RELAY_PRODUCER_REBUILDS.labels(self._service, type(error).__name__).inc()
        log.warning("replacing the Kafka producer", extra={"fields": {"error": type(error).__name__}})
        producer, self.producer = self.producer, None
        await _close_quietly(producer)

    # ------------------------------------------------------------ watching (every instance)

    async def watch(self) -> None:
        """Counts the outbox every `relay_monitor_interval_s` for the metrics and `health`."""
        await run_forever("outbox monitor", self._observe_and_wait,
                          backoff=Backoff(self.settings.retry_initial_s, self.settings.retry_max_s),
                          expected=is_transient, on_error=self._observe_failed, logger=log)

    async def _observe_failed(self, error: BaseException) -> None:
        self.stall.failed(error)

    async def _observe_and_wait(self) -> None:
        await self.observe()
        await asyncio.sleep(self.settings.relay_monitor_interval_s)

    async def observe(self) -> None:
        async with self.pool_provider().acquire() as conn:
            r = await conn.fetchrow(_COUNT_SQL, EXACT_COUNT_LIMIT)
        backlog = r["n"] if r["n"] < EXACT_COUNT_LIMIT else max(r["n"], r["estimate"])
        now = time.monotonic()
        self.stall.observe(now, backlog, r["head"])
        stalled_for = self.stall.stalled_for(now)
        OUTBOX_BACKLOG.labels(self._service).set(backlog)
        OUTBOX_REJECTED_ROWS.labels(self._service).set(r["rejected"])
        RELAY_STALL_SECONDS.labels(self._service).set(stalled_for)
        RELAY_STALLED.labels(self._service).set(1 if stalled_for >= self.settings.relay_stall_s else 0)

    def health(self) -> str | None:
        """Readiness check: None while the outbox is empty or moving, else the problem."""
        problem = self.stall.problem(time.monotonic())
        if problem and not self.holds_lock:
            problem += " (the relay lock is held by another instance)"
        return problem


def make_producer(bootstrap: str, security: KafkaClientSettings | None = None, **overrides) -> AIOKafkaProducer:
    """The relay's idempotent producer; TLS and SASL from `security` (the service's settings), or from
    the environment's REGSOSEK_KAFKA_* when not given (regsosek.kafka_security)."""
    opts = dict(
        bootstrap_servers=bootstrap,
        **client_options(security),
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
        # Above the topics' max.message.bytes (2 MiB) so a dead letter of any accepted
        # record (original + dlq_* headers) can be sent; dead-letter allows 4 MiB.
        max_request_size=4 * 1024 * 1024,
    )
    opts.update(overrides)
    return AIOKafkaProducer(**opts)


def _usable(producer: Any) -> bool:
    """False once aiokafka's producer is closed or its sender task has ended (it then
    fails every send with the error that stopped it)."""
    if getattr(producer, "_closed", False):
        return False
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return task is None or not task.done()


async def _close_quietly(producer: Any, timeout: float = 10.0) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the old producer is being thrown away
        log.warning("could not stop the old Kafka producer cleanly", exc_info=True)


def _check_deadline(deadline: float, timeout: float) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"the outbox was not emptied within {timeout:.0f}s")


def _expected_failure(e: BaseException) -> bool:
    return is_transient(e) or isinstance(e, KafkaError | ProducerUnusable)
