"""The delivery worker: POSTs each subscription's pending events, oldest first,
signed, in batches; retries with backoff and jitter; suspends a subscription after
a run of failures, keeping its queue.

Every due subscription gets its own task, so a slow or failing subscriber never
holds up the others. One instance at a time delivers a given subscription: it takes
a lease on the subscription row (longer than one delivery can last) and calls the
subscriber without holding a database connection; the outcome is recorded, and the
lease given back, in one transaction afterwards. A crashed instance's lease simply
runs out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import httpcore
import httpx
import orjson
from opentelemetry import trace
from prometheus_client import Counter, Gauge

from notify import dci_domain, store
from notify.domain import Outcome, callback_problem, is_public_address, outcome_of, retry_delay
from notify.settings import NotifySettings, SigningKey
from regsosek import standard_webhooks
from regsosek.contracts import EligibilityDelivered
from regsosek.db import Backoff, is_transient
from regsosek.messaging import Outbox
from regsosek.service import Runtime
from regsosek.signing import HEADER, sign
from regsosek.telemetry import context_from_headers, in_trace_of
from regsosek.topics import Topic

log = logging.getLogger("notify.delivery")
_tracer = trace.get_tracer("notify.delivery")
DELIVERED = Counter("regsosek_notify_delivered_total", "Events delivered and acknowledged", ["subscription"])
ATTEMPTS = Counter("regsosek_notify_attempts_total", "Delivery attempts (POSTs)", ["subscription", "result"])
PENDING = Gauge("regsosek_notify_pending", "Deliveries queued per subscription, not yet acknowledged (lag)",
                ["subscription"])
OLDEST_PENDING = Gauge("regsosek_notify_oldest_pending_seconds",
                       "Age of the oldest queued delivery per subscription (0 when none)", ["subscription"])
DEAD = Gauge("regsosek_notify_dead", "Dead letters per subscription (refused by the subscriber, kept for re-sending)",
             ["subscription"])
SUSPENDED = Gauge("regsosek_notify_suspended", "1 when the subscription is suspended after repeated failures",
                  ["subscription"])


# ---------------------------------------------------------------- the loop


async def deliver_forever(runtime: Runtime) -> None:
    s: NotifySettings = runtime.settings
    worker = uuid4()  # this instance, as the holder of delivery leases
    backoff = Backoff(s.retry_initial_s, s.retry_max_s)
    inflight: dict[UUID, asyncio.Task] = {}
    async with make_client(s) as client:
        try:
            while True:
                try:
                    async with runtime.pool.acquire() as conn:
                        due = await store.due_subscriptions(conn, s.delivery_concurrency)
                    for sub_id in due:
                        if sub_id in inflight or len(inflight) >= s.delivery_concurrency:
                            continue
                        task = asyncio.create_task(_drain(runtime, client, sub_id, worker), name=f"deliver-{sub_id}")
                        inflight[sub_id] = task
                        task.add_done_callback(lambda _t, k=sub_id: inflight.pop(k, None))
                    backoff.reset()
                    await asyncio.sleep(s.delivery_idle_poll_s)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    if not is_transient(e):
                        log.exception("delivery loop failed")
                    await backoff.wait()
        finally:
            tasks = list(inflight.values())
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _drain(runtime: Runtime, client: httpx.AsyncClient, sub_id: UUID, worker: UUID) -> None:
    """Deliver one subscription's batches back to back while they are acknowledged."""
    s: NotifySettings = runtime.settings
    try:
        while await deliver_batch(runtime, client, sub_id, worker):
            pass
    except asyncio.CancelledError:
        raise
    except Exception as e:
        if is_transient(e):
            log.warning("delivery interrupted", exc_info=True, extra={"fields": {"subscription": str(sub_id), "error": type(e).__name__}})
        else:
            log.exception("delivery failed", extra={"fields": {"subscription": str(sub_id)}})
        try:
            async with runtime.pool.acquire() as conn:
                await store.release(conn, sub_id, worker)
        except Exception:  # noqa: BLE001 - the lease runs out by itself
            pass
        await asyncio.sleep(s.retry_max_s)


# ---------------------------------------------------------------- one batch


def lease_for(s: NotifySettings) -> timedelta:
    # Longer than one delivery can take (resolution + the whole POST), with a margin.
    return timedelta(seconds=s.delivery_timeout_s + s.resolve_timeout_s + 30)


async def deliver_batch(runtime: Runtime, client: httpx.AsyncClient, sub_id: UUID, worker: UUID | None = None) -> bool:
    """Send the subscription's next batch and record the outcome. True when it was
    taken (acknowledged or refused) so the next batch may follow at once."""
    s: NotifySettings = runtime.settings
    worker = worker or uuid4()
    async with runtime.pool.acquire() as conn:
        sub = await store.claim(conn, sub_id, worker, lease_for(s))
        if sub is None:
            return False  # paused, waiting for its retry, or another instance is delivering it
        rows = await conn.fetch(
            "select id, event_id, payload, traceparent, attempts from deliveries "
            "where subscription_id = $1 and status = 'pending' order by id limit $2", sub_id, s.delivery_batch_size)
        if not rows:
            await store.release(conn, sub_id, worker)
            return False
        fmt, dci_sender = await store.subscription_format(conn, sub_id)
    first = rows[0]["attempts"]
    rows = list(takewhile(lambda r: r["attempts"] == first, rows))  # a retried batch stays apart from new ones
    message_id = str(uuid4())
    if fmt == "dci":  # a DCI subscription (notify.dci): the spec's signed /registry/notify envelope
        body = orjson.dumps(dci_domain.notify_body(s.webhook_signing_keys()[0], message_id=message_id,
                                                   now=datetime.now(UTC), sender_id=s.dci_sender_id,
                                                   receiver_id=dci_sender or str(sub_id), transaction_id=str(uuid4()),
                                                   payloads=[r["payload"] for r in rows]))
    else:
        body = orjson.dumps({
            "header": {"version": "1.0.0", "message_id": message_id, "message_ts": datetime.now(UTC).isoformat(),
                       "action": "notify", "sender_id": "regsosek", "receiver_id": str(sub_id),
                       "total_count": len(rows)},
            "message": {"transaction_id": str(uuid4()), "notify_event": [r["payload"] for r in rows]},
        })
    status, error, retry_after, ack = None, None, None, False
    refused_by_err: str | None = None
    production = s.env == "production"
    started = time.perf_counter()
    with _tracer.start_as_current_span("notify deliver", context=context_from_headers(
            {"traceparent": rows[0]["traceparent"]} if rows[0]["traceparent"] else {}),
            kind=trace.SpanKind.CLIENT, attributes={"regsosek.subscription": str(sub_id), "regsosek.events": len(rows)}):
        problem = await callback_problem_now(sub["callback_url"], production, s.resolve_timeout_s)
        if problem:
            error = problem
        else:
            key = batch_key(rows)  # also the Standard Webhooks webhook-id: the same on every re-send
            headers = {"content-type": "application/json", "Idempotency-Key": key,
                       **signature_headers(sub["signature"], sub["secret"], s.webhook_signing_keys(), key,
                                           int(time.time()), body)}
            if rows[0]["traceparent"]:
                headers["traceparent"] = rows[0]["traceparent"]
            try:
                async with asyncio.timeout(s.delivery_timeout_s):
                    status, retry_after, reply, refused_reply = await post_capped(
                        client, sub["callback_url"], body, headers, s.max_reply_bytes)
                if refused_reply:  # not read further: a failed attempt, whatever the status
                    problem = error = f"HTTP {status}: {refused_reply}"
                else:
                    ack = _acked(status, reply)
                    refused_by_err = None if ack else _err_answer(status, reply)
                    if refused_by_err:  # the subscriber says ERR: recorded, dead-lettered, not retried
                        error = refused_by_err
                    elif not ack:
                        error = f"HTTP {status}" + ("" if status >= 300 else " without ACK")
            except (TimeoutError, httpx.TimeoutException):
                error = f"no answer within {s.delivery_timeout_s:g} s"
            except httpx.HTTPError as e:
                error = type(e).__name__ + (f": {e}" if isinstance(e, httpx.ConnectError) and str(e) else "")
    latency_ms = (time.perf_counter() - started) * 1000
    outcome = Outcome.RETRY if problem else outcome_of(status, ack)
    if not problem and refused_by_err:
        outcome = Outcome.REFUSED
    await _record(runtime, sub_id, worker, rows, message_id, outcome, status, error, retry_after, latency_ms)
    return outcome is not Outcome.RETRY


async def _confirm(runtime: Runtime, conn, sub_id: UUID, owner: str, rows) -> None:
    """eligibility-delivered for each newly acknowledged event, in the same transaction
    (through the outbox), in the trace of the submission."""
    outbox = Outbox(f"/regsosek/{runtime.settings.service_name}")
    now = datetime.now(UTC)
    for r in rows:
        data = r["payload"]["data"]
        with in_trace_of(r["traceparent"], "notify confirm"):
            outbox.publish(Topic.ELIGIBILITY_DELIVERED, data["sls_id"], EligibilityDelivered(
                family_id=data["family_id"], sls_id=data["sls_id"], submission_id=data["submission_id"],
                version=data["version"], eligibility_event_id=r["event_id"], subscription_id=sub_id,
                subscriber=owner, delivered_at=now), subject=data["family_id"])
    await outbox.flush(conn)
    if rows:
        runtime.wakeup.notify()


async def _record(runtime: Runtime, sub_id: UUID, worker: UUID, rows, message_id: str, outcome: Outcome,
                  status: int | None, error: str | None, retry_after: str | None, latency_ms: float) -> None:
    s: NotifySettings = runtime.settings
    ids = [r["id"] for r in rows]
    failed = outcome is not Outcome.DELIVERED
    async with runtime.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "insert into delivery_attempts (subscription_id, message_id, events, status_code, latency_ms, error, outcome) "
            "values ($1, $2, $3, $4, $5, $6, $7)", sub_id, message_id, len(rows), status, latency_ms,
            error[:1000] if error else None, outcome.value)
        if outcome is Outcome.DELIVERED:
            done = {r["id"] for r in await conn.fetch(
                "update deliveries set status = 'delivered', attempts = attempts + 1, last_status = $2, "
                "last_error = null, delivered_at = now() where id = any($1::bigint[]) and status = 'pending' "
                "returning id", ids, status)}
            owner = await conn.fetchval(
                "update subscriptions set consecutive_failures = 0, delivered_total = delivered_total + $2 "
                "where id = $1 returning owner", sub_id, len(done))
            await _confirm(runtime, conn, sub_id, owner, [r for r in rows if r["id"] in done])
            DELIVERED.labels(str(sub_id)).inc(len(done))
        elif outcome is Outcome.REFUSED:
            await conn.execute("update deliveries set status = 'dead', attempts = attempts + 1, last_status = $2, "
                               "last_error = $3 where id = any($1::bigint[]) and status = 'pending'", ids, status, error)
        else:
            await conn.execute(
                "update deliveries set attempts = attempts + 1, last_status = $2, last_error = $3 "
                "where id = any($1::bigint[]) and status = 'pending'", ids, status, error)
            failures = await conn.fetchval(
                "update subscriptions set consecutive_failures = consecutive_failures + 1 where id = $1 "
                "returning consecutive_failures", sub_id)
            wait = retry_delay(failures, s.retry_base_s, s.retry_cap_s, retry_after)
            await conn.execute("update subscriptions set next_attempt_at = now() + $2::interval where id = $1",
                               sub_id, timedelta(seconds=wait))
            if failures >= s.suspend_after_failures:
                suspended = await conn.fetchval(
                    "update subscriptions set status = 'suspended', updated_at = now() where id = $1 "
                    "and status = 'active' returning true", sub_id)
                if suspended:
                    log.warning("subscription suspended after repeated failures",
                                extra={"fields": {"subscription": str(sub_id), "failures": failures}})
        await conn.execute(
            "update subscriptions set attempts_total = attempts_total + 1, "
            "failed_attempts_total = failed_attempts_total + $3, last_attempt_at = now(), "
            "lease_owner = case when lease_owner = $2 then null else lease_owner end, "
            "lease_until = case when lease_owner = $2 then null else lease_until end where id = $1",
            sub_id, worker, int(failed))
    ATTEMPTS.labels(str(sub_id), outcome.value).inc()


def signature_headers(scheme: str, secret: str | None, keys: Sequence[SigningKey], msg_id: str, timestamp: int,
                      body: bytes) -> dict[str, str]:
    """The signature headers of one POST (README "Programme integration"): always the Standard Webhooks
    webhook-id, webhook-timestamp and webhook-signature; in it a v1a (Ed25519) signature per signing key
    (current first, then the one being rotated out) for ed25519 and both, and a v1 (HMAC-SHA256 with the
    subscription secret) for hmac and both, which also keep the X-Regsosek-Signature header."""
    signatures: list[str] = []
    headers: dict[str, str] = {}
    if scheme in ("hmac", "both"):
        if not secret:
            raise ValueError(f"a {scheme} subscription without a secret")
        signatures.append(standard_webhooks.sign_hmac(secret, msg_id, timestamp, body))
        headers[HEADER] = sign(secret, timestamp, body)
    if scheme in ("ed25519", "both"):
        signatures += [standard_webhooks.sign_ed25519(k.key, msg_id, timestamp, body) for k in keys]
    if not signatures:
        raise ValueError(f"unknown signature scheme {scheme!r}")
    return {**standard_webhooks.webhook_headers(msg_id, timestamp, signatures), **headers}


def batch_key(rows) -> str:
    """Idempotency-Key of a batch: the same for every re-send of the same events. (Each
    event also carries its own event_id, the key a subscriber de-duplicates by.)"""
    digest = hashlib.sha256("\n".join(r["event_id"] for r in rows).encode()).hexdigest()
    return str(UUID(digest[:32]))


async def post_capped(client: httpx.AsyncClient, url: str, body: bytes, headers: dict,
                      max_bytes: int) -> tuple[int, str | None, bytes, str | None]:
    """POSTs and reads at most `max_bytes` of the reply: (status, Retry-After, reply, None), or
    (status, Retry-After, b"", why) when the reply is longer (by its Content-Length, or counted while
    it streams: nothing more is read) or compressed (identity was asked for; a compressed reply
    could expand without bound)."""
    async with client.stream("POST", url, content=body, headers={**headers, "accept-encoding": "identity"}) as resp:
        status, retry_after = resp.status_code, resp.headers.get("retry-after")
        too_long = f"reply longer than {max_bytes} bytes (REGSOSEK_MAX_REPLY_BYTES), not read"
        declared = resp.headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
            return status, retry_after, b"", too_long
        encoding = resp.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return status, retry_after, b"", f"reply compressed ({encoding[:40]}) although identity was asked for"
        reply = bytearray()
        async for chunk in resp.aiter_raw():
            reply += chunk
            if len(reply) > max_bytes:
                return status, retry_after, b"", too_long
        return status, retry_after, bytes(reply), None


def _err_answer(status: int, reply: bytes) -> str | None:
    """A 2xx reply whose ack_status is ERR (the DCI Response): the subscriber refuses the message
    (bad signature, unknown receiver...); the error it gives, else None."""
    if not 200 <= status < 300:
        return None
    try:
        m = orjson.loads(reply).get("message", {})
        if m.get("ack_status") != "ERR":
            return None
        err = m.get("error") or {}
        return f"ERR {str(err.get('code', ''))[:100]}: {str(err.get('message', ''))[:500]}".strip()
    except (ValueError, AttributeError):
        return None


def _acked(status: int, reply: bytes) -> bool:
    if not 200 <= status < 300:
        return False
    try:
        return orjson.loads(reply).get("message", {}).get("ack_status") == "ACK"
    except (ValueError, AttributeError):
        return False


# ---------------------------------------------------------------- callback safety


async def resolve(host: str, timeout_s: float = 5.0) -> list[str]:
    async with asyncio.timeout(timeout_s):
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({i[4][0] for i in infos})


async def callback_problem_now(url: str, production: bool, timeout_s: float) -> str | None:
    """Why the callback may not be called now (None if it may), from what its name resolves to now."""
    if not production:
        return callback_problem(url, [], production=False)
    try:
        addresses = await resolve(urlsplit(url).hostname or "", timeout_s)
    except (OSError, TimeoutError, UnicodeError):
        addresses = []
    return callback_problem(url, addresses, production=True)


class _PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Connects only to public addresses, checked at connect time against the addresses
    it then connects to, so a name that changes between the check and the connection
    (DNS rebinding) cannot reach an internal address. TLS still verifies the name."""

    def __init__(self, timeout_s: float) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.timeout_s = timeout_s

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = await resolve(host, self.timeout_s)
        except (OSError, TimeoutError, UnicodeError) as e:
            raise httpcore.ConnectError(f"callback host does not resolve ({type(e).__name__})") from e
        for addr in addresses:
            if not is_public_address(addr):
                raise httpcore.ConnectError(f"callback resolves to a non-public address ({addr})")
        last: Exception | None = None
        for addr in addresses:
            try:
                return await self.inner.connect_tcp(addr, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except httpcore.ConnectError as e:
                last = e
        raise last or httpcore.ConnectError("callback host does not resolve")

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not callbacks")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _PublicOnlyTransport(httpx.AsyncHTTPTransport):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(trust_env=False)
        # httpx has no public switch for the network backend; its pool is rebuilt the same
        # way with ours (a unit test checks the guard is in the path of a real request).
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            http1=True, network_backend=_PublicOnlyBackend(timeout_s))


def make_client(s: NotifySettings) -> httpx.AsyncClient:
    """The HTTP client for callbacks; in production it can reach public addresses only."""
    transport = _PublicOnlyTransport(s.resolve_timeout_s) if s.env == "production" else None
    return httpx.AsyncClient(timeout=s.delivery_timeout_s, follow_redirects=False, transport=transport,
                             trust_env=s.env != "production")


# ---------------------------------------------------------------- lag as metrics


async def publish_lag_forever(runtime: Runtime) -> None:
    """Keeps the per-subscription gauges equal to the database, whichever instance
    enqueued or delivered: queued (lag), age of the oldest queued, dead, suspended."""
    s: NotifySettings = runtime.settings
    known: set[str] = set()
    while True:
        try:
            async with runtime.pool.acquire() as conn:
                rows = await store.lag(conn)
            seen = set()
            for r in rows:
                sid = str(r["id"])
                seen.add(sid)
                PENDING.labels(sid).set(r["pending"])
                oldest = r["oldest_pending_at"]
                OLDEST_PENDING.labels(sid).set(max(0.0, r["now_s"] - oldest.timestamp()) if oldest else 0.0)
                DEAD.labels(sid).set(r["dead"])
                SUSPENDED.labels(sid).set(1 if r["status"] == "suspended" else 0)
            for sid in known - seen:  # unsubscribed
                for g in (PENDING, OLDEST_PENDING, DEAD, SUSPENDED):
                    try:
                        g.remove(sid)
                    except KeyError:
                        pass
            known = seen
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not is_transient(e):
                log.exception("lag metrics failed")
        await asyncio.sleep(s.metrics_refresh_s)
