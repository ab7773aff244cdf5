"""The delivery worker: POSTs each subscription's pending events, oldest first,
signed, in batches; retries with backoff and jitter; suspends a subscription after
a run of failures, keeping its queue.

Every due subscription gets its own task, so a slow or failing subscriber never
holds up the others. One instance at a time delivers a given subscription: it takes
a lease on the subscription row (longer than one delivery can last) and calls the
subscriber without holding a database connection; the outcome is recorded, and the
lease given back, in one transaction afterwards. A crashed instance's lease simply
runs out. Every wait is a time recorded on the subscription (next_attempt_at), which the
loop's due query honours: a retry after a failed attempt (domain.after_attempt), and a
hold-off after a delivery broke off (the database, a fault); no task sleeps on it, and a
restarted or another instance keeps to it.

The worker reads and writes through the store (notify.store) and leaves building
eligibility-delivered to the publisher (notify.publisher). The subscription API does not call
it: a re-send or a replay requeues deliveries in the store, and the worker finds them due.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from uuid import UUID, uuid4

import httpx
import orjson
from opentelemetry import trace
from prometheus_client import Counter, Gauge

from notify import dci_domain
from notify.callbacks import acked, batch_key, callback_problem_now, err_answer, make_client, post_capped, signature_headers
from notify.domain import (
    Attempt,
    NamedBatch,
    Outcome,
    RetryPolicy,
    after_attempt,
    identity_key,
    name_members,
    open_lists,
    outcome_of,
)
from notify.publisher import Publisher
from notify.settings import NotifySettings
from notify.store import NotifyStore, open_store, store_in
from regsosek.background import IdlePoll, run_forever, wait_woken
from regsosek.db import Backoff, is_transient
from regsosek.messaging import UnitOfWork
from regsosek.service import Runtime
from regsosek.telemetry import context_from_headers
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




def _forget(inflight: dict, sub_id, _task: asyncio.Task) -> None:
    """A subscription's drain finished: it may be drained again."""
    inflight.pop(sub_id, None)


def lease_for(s: NotifySettings) -> timedelta:
    # Longer than one delivery can take (resolution + the whole POST), with a margin.
    return timedelta(seconds=s.delivery_timeout_s + s.resolve_timeout_s + 30)


class DeliveryWorker:
    """The delivery loop and the lag gauges: background tasks of the service (app.py)."""

    def __init__(self, settings: NotifySettings, publisher: Publisher,
                 store_for: Callable[[UnitOfWork], NotifyStore] = store_in,
                 stores: Callable[..., AbstractAsyncContextManager[NotifyStore]] = open_store) -> None:
        self.settings = settings
        self.publisher = publisher
        self.store_for = store_for  # the store in a unit of work (an attempt's outcome and its events)
        self.stores = stores  # a store on a connection of the pool: stores(pool, transaction=False)

    # ---------------------------------------------------------------- the loop

    async def deliver_forever(self, runtime: Runtime) -> None:
        s = self.settings
        worker = uuid4()  # this instance, as the holder of delivery leases
        inflight: dict[UUID, asyncio.Task] = {}
        idle, woken = IdlePoll(s.delivery_idle_poll_s, s.delivery_idle_poll_max_s), runtime.wakeup.listener()
        async with make_client(s) as client:

            async def start_due() -> None:
                woken.clear()  # before looking: a commit meanwhile cuts the wait short
                async with self.stores(runtime.pool) as store:
                    due = await store.due_subscriptions(s.delivery_concurrency)
                for sub_id in due:
                    if sub_id in inflight or len(inflight) >= s.delivery_concurrency:
                        continue
                    task = asyncio.create_task(self._drain(runtime, client, sub_id, worker), name=f"deliver-{sub_id}")
                    inflight[sub_id] = task
                    task.add_done_callback(functools.partial(_forget, inflight, sub_id))
                # at most one look per delivery_idle_poll_s; longer, up to the longest, while nothing is due
                await asyncio.sleep(s.delivery_idle_poll_s)
                await wait_woken(woken, idle.after(len(due)) - s.delivery_idle_poll_s)

            try:
                await run_forever("delivery loop", start_due, backoff=Backoff(s.retry_initial_s, s.retry_max_s),
                                  expected=is_transient, logger=log)
            finally:
                tasks = list(inflight.values())
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self, runtime: Runtime, client: httpx.AsyncClient, sub_id: UUID, worker: UUID) -> None:
        """Deliver one subscription's batches back to back while they are acknowledged."""
        try:
            while await self.deliver_batch(runtime, client, sub_id, worker):
                pass
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if is_transient(e):
                log.warning("delivery interrupted", exc_info=True,
                            extra={"fields": {"subscription": str(sub_id), "error": type(e).__name__}})
            else:
                log.exception("delivery failed", extra={"fields": {"subscription": str(sub_id)}})
            try:  # not due again for a while, whichever instance looks; this task ends and frees its place
                async with self.stores(runtime.pool) as store:
                    await store.hold_off(sub_id, worker, timedelta(seconds=self.settings.retry_max_s))
            except Exception:  # noqa: BLE001 - the lease runs out by itself, and holds the subscription till then
                log.warning("delivery hold-off not recorded", exc_info=True,
                            extra={"fields": {"subscription": str(sub_id)}})

    # ---------------------------------------------------------------- one batch

    async def deliver_batch(self, runtime: Runtime, client: httpx.AsyncClient, sub_id: UUID,
                            worker: UUID | None = None) -> bool:
        """Send the subscription's next batch and record the outcome. True when it was
        taken (acknowledged or refused) so the next batch may follow at once."""
        s = self.settings
        worker = worker or uuid4()
        async with self.stores(runtime.pool) as store:
            sub = await store.claim(sub_id, worker, lease_for(s))
            if sub is None:
                return False  # paused, waiting for its retry, or another instance is delivering it
            rows = await store.pending_batch(sub_id, s.delivery_batch_size)
            if not rows:
                await store.release(sub_id, worker)
                return False
            first = rows[0]["attempts"]
            rows = list(takewhile(lambda r: r["attempts"] == first, rows))  # a retried batch stays apart from new ones
            named = await self._name_members(store, rows)
            if named.wait:  # the first delivery's identity list has not arrived yet: look again shortly
                await store.retry_after(sub_id, timedelta(seconds=s.identity_retry_s))
                await store.release(sub_id, worker)
                return False
        rows = [{**r, "payload": p} for r, p in zip(rows[:len(named.payloads)], named.payloads, strict=True)]
        message_id = str(uuid4())
        started = time.perf_counter()
        with _tracer.start_as_current_span("notify deliver", context=context_from_headers(
                {"traceparent": rows[0]["traceparent"]} if rows[0]["traceparent"] else {}),
                kind=trace.SpanKind.CLIENT,
                attributes={"regsosek.subscription": str(sub_id), "regsosek.events": len(rows)}):
            attempt = await self._post(client, sub, rows, self._body(sub, rows, message_id))
        latency_ms = (time.perf_counter() - started) * 1000
        await self._record(runtime, sub_id, worker, rows, message_id, attempt, latency_ms)
        return attempt.outcome is not Outcome.RETRY

    async def _name_members(self, store: NotifyStore, rows: list[dict]) -> NamedBatch:
        """The batch's member-level decisions with each member's NIK from the identity feed
        (domain.name_members), opened here, at sending time: a stored payload never holds a NIK."""
        keys = list(dict.fromkeys(k for r in rows if (k := identity_key(r["payload"])) is not None))
        niks, failed = open_lists(await store.member_identities(keys), self.settings.identity_keyring())
        if failed:  # a key dropped too early: sent without NIKs after the wait
            log.warning("identity lists do not open", extra={"fields": {"kids": sorted(set(failed))}})
        return name_members(rows, niks, now=datetime.now(UTC), wait_s=self.settings.identity_wait_s)

    def _body(self, sub: dict, rows: list[dict], message_id: str) -> bytes:
        s = self.settings
        if sub["format"] == "dci":  # a DCI subscription (notify.dci): the spec's signed /registry/notify envelope
            return orjson.dumps(dci_domain.notify_body(
                s.webhook_signing_keys()[0], message_id=message_id, now=datetime.now(UTC), sender_id=s.dci_sender_id,
                receiver_id=sub["dci_sender"] or str(sub["id"]), transaction_id=str(uuid4()),
                payloads=[r["payload"] for r in rows]))
        return orjson.dumps({
            "header": {"version": "1.0.0", "message_id": message_id, "message_ts": datetime.now(UTC).isoformat(),
                       "action": "notify", "sender_id": "regsosek", "receiver_id": str(sub["id"]),
                       "total_count": len(rows)},
            "message": {"transaction_id": str(uuid4()), "notify_event": [r["payload"] for r in rows]},
        })

    async def _post(self, client: httpx.AsyncClient, sub: dict, rows: list[dict], body: bytes) -> Attempt:
        """POSTs the batch, signed, after checking the callback again; what it came to."""
        s = self.settings
        problem = await callback_problem_now(sub["callback_url"], s.env == "production", s.resolve_timeout_s)
        if problem:
            return Attempt(Outcome.RETRY, error=problem)
        key = batch_key(rows)  # also the Standard Webhooks webhook-id: the same on every re-send
        headers = {"content-type": "application/json", "Idempotency-Key": key,
                   **signature_headers(sub["signature"], sub["secret"], s.webhook_signing_keys(), key,
                                       int(time.time()), body)}
        if rows[0]["traceparent"]:
            headers["traceparent"] = rows[0]["traceparent"]
        status = retry_after = None
        try:
            async with asyncio.timeout(s.delivery_timeout_s):
                status, retry_after, reply, refused_reply = await post_capped(
                    client, sub["callback_url"], body, headers, s.max_reply_bytes)
        except (TimeoutError, httpx.TimeoutException):
            return Attempt(Outcome.RETRY, status, f"no answer within {s.delivery_timeout_s:g} s", retry_after)
        except httpx.HTTPError as e:
            error = type(e).__name__ + (f": {e}" if isinstance(e, httpx.ConnectError) and str(e) else "")
            return Attempt(Outcome.RETRY, status, error, retry_after)
        if refused_reply:  # not read further: a failed attempt, whatever the status
            return Attempt(Outcome.RETRY, status, f"HTTP {status}: {refused_reply}", retry_after)
        if acked(status, reply):
            return Attempt(outcome_of(status, True), status, None, retry_after)
        if refused_by_err := err_answer(status, reply):  # the subscriber says ERR: dead-lettered, not retried
            return Attempt(Outcome.REFUSED, status, refused_by_err, retry_after)
        return Attempt(outcome_of(status, False), status,
                       f"HTTP {status}" + ("" if status >= 300 else " without ACK"), retry_after)

    async def _record(self, runtime: Runtime, sub_id: UUID, worker: UUID, rows: list[dict], message_id: str,
                      a: Attempt, latency_ms: float) -> None:
        """The attempt and what it comes to, in one transaction: what the decision needs is loaded once,
        domain.after_attempt decides (deliveries delivered, dead or still queued; the run of failures,
        the retry wait, suspension), the store saves it, giving the lease back, and eligibility-delivered
        goes out for each newly acknowledged decision."""
        s = self.settings
        policy = RetryPolicy(s.retry_base_s, s.retry_cap_s, s.suspend_after_failures)
        async with runtime.unit_of_work() as uow:
            store = self.store_for(uow)
            ids = [r["id"] for r in rows]
            state = await store.attempt_state(sub_id, ids)
            record = after_attempt(a, ids, state, policy, now=datetime.now(UTC))
            await store.save_attempt(sub_id, worker, message_id, len(rows), latency_ms, a, record)
            if record.deliveries == "delivered":
                done = set(record.ids)
                decisions = [r for r in rows if r["id"] in done and r["event_type"] == Topic.ELIGIBILITY_DECIDED.value]
                self.publisher.delivered(uow, sub_id, state.owner, decisions, datetime.now(UTC))  # not erasure notices
        ATTEMPTS.labels(str(sub_id), a.outcome.value).inc()
        if record.deliveries == "delivered":
            DELIVERED.labels(str(sub_id)).inc(len(record.ids))
        if record.suspend:
            log.warning("subscription suspended after repeated failures",
                        extra={"fields": {"subscription": str(sub_id), "failures": record.failures}})

    # ---------------------------------------------------------------- lag as metrics

    async def publish_lag_forever(self, runtime: Runtime) -> None:
        """Keeps the per-subscription gauges equal to the database, whichever instance
        enqueued or delivered: queued (lag), age of the oldest queued, dead, suspended."""
        s = self.settings
        known: set[str] = set()

        async def refresh() -> None:
            nonlocal known
            async with self.stores(runtime.pool) as store:
                rows = await store.lag()
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
            await asyncio.sleep(s.metrics_refresh_s)

        await run_forever("lag metrics", refresh, backoff=Backoff(s.metrics_refresh_s, s.metrics_refresh_s),
                          expected=is_transient, logger=log)
