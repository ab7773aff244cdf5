"""The delivery worker: POSTs each subscription's pending events, oldest first,
signed, in batches; retries with backoff and jitter; suspends a subscription after
a run of failures, keeping its queue. One worker at a time per subscription
(row lock), so several notify instances can run."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from itertools import takewhile
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import httpx
import orjson
from opentelemetry import trace
from prometheus_client import Counter, Gauge

from regsosek.db import Backoff, is_transient
from regsosek.service import Runtime
from regsosek.signing import HEADER, sign
from regsosek.telemetry import context_from_headers

from notify import store
from notify.domain import Outcome, callback_problem, outcome_of, retry_delay
from notify.settings import NotifySettings

log = logging.getLogger("notify.delivery")
_tracer = trace.get_tracer("notify.delivery")
DELIVERED = Counter("regsosek_notify_delivered_total", "Events delivered and acknowledged", ["subscription"])
ATTEMPTS = Counter("regsosek_notify_attempts_total", "Delivery attempts (POSTs)", ["subscription", "result"])
PENDING = Gauge("regsosek_notify_pending", "Pending deliveries per subscription (lag)", ["subscription"])


async def deliver_forever(runtime: Runtime) -> None:
    s: NotifySettings = runtime.settings
    backoff = Backoff(s.retry_initial_s, s.retry_max_s)
    async with httpx.AsyncClient(timeout=s.delivery_timeout_s, follow_redirects=False) as client:
        while True:
            try:
                subs = []
                async with runtime.pool.acquire() as conn:
                    subs = await store.due_subscriptions(conn)
                if subs:
                    await asyncio.gather(*(deliver_batch(runtime, client, sid) for sid in subs))
                else:
                    await asyncio.sleep(s.delivery_idle_poll_s)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not is_transient(e):
                    log.exception("delivery loop failed")
                await backoff.wait()


async def _resolve(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({i[4][0] for i in infos})


async def deliver_batch(runtime: Runtime, client: httpx.AsyncClient, sub_id: UUID) -> None:
    s: NotifySettings = runtime.settings
    async with runtime.pool.acquire() as conn, conn.transaction():
        sub = await conn.fetchrow(
            f"select {store.SUB_COLUMNS} from subscriptions where id = $1 and status = 'active' for update skip locked",
            sub_id)
        if sub is None:
            return  # another instance is delivering it, or it was paused
        rows = await conn.fetch(
            "select id, event_id, payload, traceparent, attempts, next_attempt_at from deliveries "
            "where subscription_id = $1 and status = 'pending' order by id limit $2", sub_id, s.delivery_batch_size)
        if not rows or rows[0]["next_attempt_at"] > datetime.now(UTC):
            return  # the oldest is waiting for its retry: later ones wait too (order)
        first = rows[0]["attempts"]
        rows = list(takewhile(lambda r: r["attempts"] == first, rows))  # a retried batch stays apart from new ones
        message_id = str(uuid4())
        body = orjson.dumps({
            "header": {"version": "1.0.0", "message_id": message_id, "message_ts": datetime.now(UTC).isoformat(),
                       "action": "notify", "sender_id": "regsosek", "receiver_id": str(sub_id),
                       "total_count": len(rows)},
            "message": {"transaction_id": str(uuid4()), "notify_event": [r["payload"] for r in rows]},
        })
        status, error, retry_after, ack = None, None, None, False
        started = time.perf_counter()
        host = urlsplit(sub["callback_url"]).hostname or ""
        try:
            problem = callback_problem(sub["callback_url"], await _resolve(host), production=s.env == "production")
        except OSError:
            problem = "callback host does not resolve"
        with _tracer.start_as_current_span("notify deliver", context=context_from_headers(
                {"traceparent": rows[0]["traceparent"]} if rows[0]["traceparent"] else {}),
                kind=trace.SpanKind.CLIENT, attributes={"regsosek.subscription": str(sub_id), "regsosek.events": len(rows)}):
            if problem:
                error = problem
            else:
                headers = {"content-type": "application/json", "Idempotency-Key": message_id,
                           HEADER: sign(sub["secret"], int(time.time()), body)}
                if rows[0]["traceparent"]:
                    headers["traceparent"] = rows[0]["traceparent"]
                try:
                    resp = await client.post(sub["callback_url"], content=body, headers=headers)
                    status, retry_after = resp.status_code, resp.headers.get("retry-after")
                    ack = _acked(resp)
                    if not ack:
                        error = f"HTTP {status}" + ("" if status >= 300 else " without ACK")
                except httpx.HTTPError as e:
                    error = f"{type(e).__name__}"
        latency_ms = (time.perf_counter() - started) * 1000
        outcome = Outcome.RETRY if problem else outcome_of(status, ack)
        ids = [r["id"] for r in rows]
        await conn.execute(
            "insert into delivery_attempts (subscription_id, message_id, events, status_code, latency_ms, error) "
            "values ($1, $2, $3, $4, $5, $6)", sub_id, message_id, len(rows), status, latency_ms, error)
        ATTEMPTS.labels(str(sub_id), outcome.value).inc()
        if outcome is Outcome.DELIVERED:
            await conn.execute("update deliveries set status = 'delivered', attempts = attempts + 1, last_status = $2, "
                               "last_error = null, delivered_at = now() where id = any($1::bigint[])", ids, status)
            await conn.execute("update subscriptions set consecutive_failures = 0 where id = $1", sub_id)
            DELIVERED.labels(str(sub_id)).inc(len(ids))
        elif outcome is Outcome.REFUSED:
            await conn.execute("update deliveries set status = 'dead', attempts = attempts + 1, last_status = $2, "
                               "last_error = $3 where id = any($1::bigint[])", ids, status, error)
        else:
            attempt = rows[0]["attempts"] + 1
            wait = retry_delay(attempt, s.retry_base_s, s.retry_cap_s, retry_after)
            await conn.execute(
                "update deliveries set attempts = attempts + 1, last_status = $2, last_error = $3, "
                "next_attempt_at = now() + $4::interval where id = any($1::bigint[])",
                ids, status, error, timedelta(seconds=wait))
            failures = await conn.fetchval(
                "update subscriptions set consecutive_failures = consecutive_failures + 1, updated_at = now() "
                "where id = $1 returning consecutive_failures", sub_id)
            if failures >= s.suspend_after_failures:
                await conn.execute("update subscriptions set status = 'suspended' where id = $1", sub_id)
                log.warning("subscription suspended after repeated failures",
                            extra={"fields": {"subscription": str(sub_id), "failures": failures}})
        PENDING.labels(str(sub_id)).set(await conn.fetchval(
            "select count(*) from deliveries where subscription_id = $1 and status = 'pending'", sub_id))


def _acked(resp: httpx.Response) -> bool:
    if not 200 <= resp.status_code < 300:
        return False
    try:
        return resp.json().get("message", {}).get("ack_status") == "ACK"
    except (ValueError, AttributeError):
        return False
