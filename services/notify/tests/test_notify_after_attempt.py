"""What one delivery attempt comes to (domain.after_attempt), decided without the store: deliveries
delivered, dead or still queued; the subscription's run of failures, its retry wait (backoff with
jitter, or the subscriber's Retry-After) and suspension. A fixed clock and a jitter that always
lands at a known point of its window make every wait exact. And the worker, on the in-memory store,
loads once, decides once and saves once per attempt."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from uuid import uuid4

import httpx
import pytest
from test_notify_handlers import FakeRuntime, apply, decided, handlers, queued, store, subscribe  # noqa: F401 - fixtures

from notify.delivery import DeliveryWorker
from notify.domain import Attempt, AttemptRecord, AttemptState, Outcome, RetryPolicy, after_attempt
from notify.publisher import Publisher
from notify.settings import NotifySettings

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
POLICY = RetryPolicy(base_s=0.5, cap_s=300.0, suspend_after=20)


class AtFraction(random.Random):
    """Jitter that always lands at `fraction` of its window [a, b]."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def state(failures: int = 0, status: str = "active", pending: tuple[int, ...] = (1, 2, 3)) -> AttemptState:
    return AttemptState(status, "PKH-API", failures, frozenset(pending))


RETRY = Attempt(Outcome.RETRY, 503, "HTTP 503")


@pytest.mark.parametrize("attempt,before,fraction,expected", [
    # acknowledged: delivered, the run of failures ends, the subscription stays due
    (Attempt(Outcome.DELIVERED, 200), state(failures=7),
     0.5, AttemptRecord(Outcome.DELIVERED, "delivered", (1, 2, 3), 0, None, False)),
    # refused for good (4xx, ERR): dead letters, kept for re-sending; the run is left as it was, no wait
    (Attempt(Outcome.REFUSED, 404, "HTTP 404"), state(failures=3),
     0.5, AttemptRecord(Outcome.REFUSED, "dead", (1, 2, 3), 3, None, False)),
    # failed: still queued, the run one longer, a wait of backoff with jitter (window base * 2^(n-1))
    (RETRY, state(failures=0), 0.5, AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 1, timedelta(seconds=0.25), False)),
    (RETRY, state(failures=3), 0.5, AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 4, timedelta(seconds=2.0), False)),
    (RETRY, state(failures=3), 0.0, AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 4, timedelta(0), False)),
    # the window stops growing at the cap
    (RETRY, state(failures=18), 0.5, AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 19, timedelta(seconds=150), False)),
    # the run reaches its length: an active subscription is suspended, its deliveries stay queued
    (RETRY, state(failures=19), 1.0, AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 20, timedelta(seconds=300), True)),
    # ...but a paused one stays paused, and a suspended one is not suspended again
    (RETRY, state(failures=19, status="paused"), 1.0,
     AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 20, timedelta(seconds=300), False)),
    (RETRY, state(failures=40, status="suspended"), 1.0,
     AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 41, timedelta(seconds=300), False)),
    # the subscriber's Retry-After wins when longer than the jitter, up to the cap
    (Attempt(Outcome.RETRY, 429, "HTTP 429", "120"), state(failures=0), 0.5,
     AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 1, timedelta(seconds=120), False)),
    (Attempt(Outcome.RETRY, 429, "HTTP 429", "9000"), state(failures=0), 0.5,
     AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 1, timedelta(seconds=300), False)),
    # an HTTP date is counted from the clock it is given
    (Attempt(Outcome.RETRY, 503, "HTTP 503", format_datetime(NOW + timedelta(seconds=90), usegmt=True)),
     state(failures=0), 0.5, AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 1, timedelta(seconds=90), False)),
    # a Retry-After shorter than the jitter does not shorten it
    (Attempt(Outcome.RETRY, 503, "HTTP 503", "1"), state(failures=9), 0.5,
     AttemptRecord(Outcome.RETRY, "pending", (1, 2, 3), 10, timedelta(seconds=128), False)),
    # deliveries no longer queued (erased meanwhile) are left out, the batch's order kept
    (Attempt(Outcome.DELIVERED, 200), state(pending=(3, 1)), 0.5,
     AttemptRecord(Outcome.DELIVERED, "delivered", (1, 3), 0, None, False)),
    (RETRY, state(failures=2, pending=()), 0.5,
     AttemptRecord(Outcome.RETRY, "pending", (), 3, timedelta(seconds=1.0), False)),
])
def test_after_attempt(attempt, before, fraction, expected):
    assert after_attempt(attempt, [1, 2, 3], before, POLICY, now=NOW, rng=AtFraction(fraction)) == expected


def test_only_a_failed_attempt_counts_as_failed():
    assert [after_attempt(Attempt(o, 200), [1], state(), POLICY, now=NOW, rng=AtFraction(0)).failed
            for o in Outcome] == [o is not Outcome.DELIVERED for o in Outcome]


# ---------------------------------------------------------------- the worker around it


class CountingStore:
    """Wraps the in-memory store, counting the recording calls of each attempt."""

    def __init__(self, inner) -> None:
        self.store, self.calls = inner, []

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if name in ("attempt_state", "save_attempt"):
            self.calls.append(name)
        return attr


async def test_a_failed_attempt_is_loaded_once_decided_once_and_saved_once(store, handlers):  # noqa: F811
    sub = await subscribe(store, ("pkh",))
    await apply(handlers, decided(1, {"pkh": True}))
    counting = CountingStore(store)

    @contextlib.asynccontextmanager
    async def stores(pool, transaction: bool = False):
        yield store

    worker = DeliveryWorker(NotifySettings(suspend_after_failures=2), Publisher(), store_for=lambda uow: counting,
                            stores=stores)
    failing = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(503, stream=httpx.ByteStream(b""))))
    async with failing as client:
        assert await worker.deliver_batch(FakeRuntime(), client, sub) is False
        assert counting.calls == ["attempt_state", "save_attempt"]
        s = store.subscriptions[sub]
        assert s["consecutive_failures"] == 1 and s["status"] == "active" and s["lease_owner"] is None
        assert s["next_attempt_at"] > datetime.now(UTC) - timedelta(seconds=1)  # a recorded wait, not a sleep
        assert queued(store, sub)[0]["status"] == "pending" and queued(store, sub)[0]["attempts"] == 1

        s["next_attempt_at"] = datetime.now(UTC)  # the wait is over
        assert await worker.deliver_batch(FakeRuntime(), client, sub) is False
    assert s["consecutive_failures"] == 2 and s["status"] == "suspended"  # suspended, nothing dropped
    assert queued(store, sub)[0]["status"] == "pending" and queued(store, sub)[0]["attempts"] == 2
    assert [a["outcome"] for a in store.attempts] == ["retry", "retry"]


async def test_a_broken_off_delivery_records_a_hold_off_instead_of_sleeping(store, handlers):  # noqa: F811
    sub = await subscribe(store, ("pkh",))
    await apply(handlers, decided(1, {"pkh": True}))

    @contextlib.asynccontextmanager
    async def stores(pool, transaction: bool = False):
        yield store

    worker = DeliveryWorker(NotifySettings(), Publisher(), store_for=lambda uow: store, stores=stores)
    worker_id = uuid4()

    async def broken(*args, **kwargs):
        store.subscriptions[sub]["lease_owner"] = worker_id
        raise RuntimeError("a fault while delivering")

    worker.deliver_batch = broken  # type: ignore[method-assign]
    before = datetime.now(UTC)
    await worker._drain(FakeRuntime(), None, sub, worker_id)  # returns at once: no task sleeps on the wait
    s = store.subscriptions[sub]
    assert s["lease_owner"] is None
    assert s["next_attempt_at"] >= before + timedelta(seconds=NotifySettings().retry_max_s)
    assert await store.due_subscriptions(10) == []  # not due for anyone until the hold-off is over
