"""The outbox relay: publishes committed outbox rows to Kafka, then deletes them.

One relay per database publishes at a time (a PostgreSQL advisory lock elects
it), in outbox id order, through an idempotent producer with acks=all, so each
key's order is kept. A crash between Kafka's acknowledgement and the delete
re-sends those rows on restart; consumers' inboxes make that harmless.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

from regsosek.db import Backoff, is_transient
from regsosek.messaging.faults import FaultPoint
from regsosek.messaging.outbox import RelayWakeup
from regsosek.metrics import EVENTS_PUBLISHED, OUTBOX_BACKLOG
from regsosek.settings import ServiceSettings

log = logging.getLogger("regsosek.relay")

RELAY_LOCK = 7316002


def make_producer(bootstrap: str, **overrides) -> AIOKafkaProducer:
    opts = dict(
        bootstrap_servers=bootstrap,
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


class OutboxRelay:
    def __init__(self, settings: ServiceSettings, pool_provider, wakeup: RelayWakeup) -> None:
        self.settings = settings
        self.pool_provider = pool_provider
        self.wakeup = wakeup
        self.exit_after_sends = FaultPoint("REGSOSEK_FAULT_RELAY_EXIT_AFTER_SENDS")
        self.producer: AIOKafkaProducer | None = None

    async def run(self) -> None:
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            try:
                if self.producer is None:
                    producer = make_producer(self.settings.kafka_bootstrap)
                    await producer.start()
                    self.producer = producer
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not is_transient(e) and not _is_kafka_error(e):
                    log.exception("relay failed unexpectedly; restarting")
                else:
                    log.warning("relay interrupted, retrying", extra={"fields": {"error": type(e).__name__}})
                await backoff.wait()
            else:
                backoff.reset()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def _lead(self) -> None:
        pool: asyncpg.Pool = self.pool_provider()
        async with pool.acquire() as conn:
            while not await conn.fetchval("select pg_try_advisory_lock($1)", RELAY_LOCK):
                await asyncio.sleep(1.0)  # another instance is the relay
            try:
                while True:
                    published = await self.publish_once(conn)
                    if published == 0:
                        self.wakeup.event.clear()
                        try:
                            await asyncio.wait_for(self.wakeup.event.wait(), self.settings.relay_idle_poll_s)
                        except TimeoutError:
                            pass
            finally:
                if not conn.is_closed():
                    await conn.execute("select pg_advisory_unlock($1)", RELAY_LOCK)

    async def publish_once(self, conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(
            "select id, topic, key, value, header_keys, header_values from outbox order by id limit $1",
            self.settings.relay_batch_size,
        )
        OUTBOX_BACKLOG.labels(self.settings.service_name).set(len(rows))
        if not rows:
            return 0
        assert self.producer is not None
        futures = []
        for i, r in enumerate(rows):
            futures.append(
                await self.producer.send(
                    r["topic"], value=r["value"], key=r["key"],
                    headers=list(zip(r["header_keys"], r["header_values"], strict=True)),
                )
            )
            if self.exit_after_sends.armed and self.exit_after_sends.hit():
                await asyncio.gather(*futures)  # these reached Kafka; their rows stay in the outbox
                self.exit_after_sends.crash()
        await asyncio.gather(*futures)
        await conn.execute("delete from outbox where id = any($1::bigint[])", [r["id"] for r in rows])
        EVENTS_PUBLISHED.labels(self.settings.service_name).inc(len(rows))
        return len(rows)


def _is_kafka_error(e: BaseException) -> bool:
    from aiokafka.errors import KafkaError

    return isinstance(e, KafkaError)
