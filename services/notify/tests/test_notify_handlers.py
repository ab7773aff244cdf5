"""Notify's handler logic in milliseconds: the real handlers on a FakeUnitOfWork and the in-memory
store (tests/notify_fakes.py). The real-stack proof of the same guarantees is in tests/integration
(test_notify_delivery, test_programme_scope, test_decision_order, test_erasure)."""

from __future__ import annotations

import contextlib
import inspect
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import orjson
import pytest
import yaml

from notify.delivery import DeliveryWorker
from notify.domain import Filters, parse_access
from notify.handlers import NotifyHandlers
from notify.publisher import Publisher
from notify.settings import NotifySettings
from notify.store import NotifyStore
from regsosek.contracts import EligibilityDecided, EligibilityDelivered, FamilyErased
from regsosek.envelope import new_envelope
from regsosek.messaging import Incoming
from regsosek.programmes import PROGRAMME_CODES
from regsosek.testing import FakeUnitOfWork

from notify_fakes import InMemoryNotifyStore

ACCESS_FILE = Path(__file__).resolve().parents[1] / "src" / "notify" / "data" / "programme-access-2022.1.yaml"
ACCESS = parse_access(yaml.safe_load(ACCESS_FILE.read_text(encoding="utf-8")), PROGRAMME_CODES)
SLS = "64720100010001"
FAMILY = SLS + "-0001-001"


def _public(cls) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(f) for name, f in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_the_in_memory_store_has_the_real_stores_methods_and_signatures():
    real, fake = _public(NotifyStore), _public(InMemoryNotifyStore)
    assert sorted(fake) == sorted(real)
    for name, signature in real.items():
        assert str(fake[name]) == str(signature), name


# ---------------------------------------------------------------- set-up


def decided(seq: int, eligible: dict[str, bool], *, family: str = FAMILY, group: int = 1) -> Incoming:
    data = EligibilityDecided.model_validate({
        "family_id": family, "sls_id": family.split("-")[0], "submission_id": str(uuid4()), "version": seq,
        "decision_seq": seq, "welfare_group": group, "decile": 2 * group, "model_version": "pmt-test",
        "rule_version": "rules-test",
        "decisions": [{"programme": p, "eligible": e, "rule_version": "rules-test", "reasons": [f"reason of {p}"]}
                      for p, e in eligible.items()],
        "decided_at": datetime(2022, 11, 1, tzinfo=UTC).isoformat()})
    return Incoming(new_envelope(data, source="/regsosek/classify", subject=family), data, None)


def erased(family: str = FAMILY) -> Incoming:
    data = FamilyErased(erasure_id=uuid4(), family_id=family, sls_id=family.split("-")[0],
                        reason="data_subject_request", erased_at=datetime(2022, 12, 1, tzinfo=UTC))
    return Incoming(new_envelope(data, source="/regsosek/intake", subject=family), data, None)


async def subscribe(store: InMemoryNotifyStore, scope: tuple[str, ...], **filters) -> UUID:
    sub_id = uuid4()
    row, refused = await store.create_subscription(
        sub_id=sub_id, owner="programme", callback_url="http://receiver/hook", secret=None, signature="ed25519",
        scope=scope, filters=Filters(**filters), limit_problem=lambda counts: None)
    assert row is not None and refused is None
    return sub_id


@pytest.fixture
def store() -> InMemoryNotifyStore:
    return InMemoryNotifyStore()


@pytest.fixture
def handlers(store) -> NotifyHandlers:
    return NotifyHandlers(ACCESS, store_for=lambda uow: store)


async def apply(handlers: NotifyHandlers, *messages: Incoming) -> FakeUnitOfWork:
    """One consumed batch: each message through its handler, then the commit."""
    uow = FakeUnitOfWork("notify")
    routes = handlers.handlers()
    for m in messages:
        await routes[type(m.data)](uow, m)
    await uow.commit()
    return uow


def queued(store: InMemoryNotifyStore, sub_id: UUID) -> list[dict]:
    return [d for d in store.deliveries if d["subscription_id"] == sub_id]


# ---------------------------------------------------------------- fan-out with scoped payloads


async def test_a_decision_fans_out_to_matching_subscriptions_each_with_its_programmes_payload(store, handlers):
    pkh = await subscribe(store, ("pkh",))
    sembako = await subscribe(store, ("sembako",), programmes=("sembako",))
    pbi = await subscribe(store, ("pbi_jkn",), programmes=("pbi_jkn",))  # not eligible for it: no match
    elsewhere = await subscribe(store, ("pkh",), area_prefixes=("3171",))  # another area
    msg = decided(1, {"pkh": True, "sembako": True, "pbi_jkn": False})

    uow = await apply(handlers, msg)

    assert uow.published == []  # notify publishes nothing when it queues
    assert queued(store, pbi) == [] and queued(store, elsewhere) == []
    (to_pkh,), (to_sembako,) = queued(store, pkh), queued(store, sembako)
    assert to_pkh["event_id"] == to_sembako["event_id"] == msg.envelope.id
    assert to_pkh["payload"]["subject"] == FAMILY and to_pkh["payload"]["event_id"] == msg.envelope.id
    # each programme sees its own decision and reasons only, never another programme's
    assert [d["programme"] for d in to_pkh["payload"]["data"]["decisions"]] == ["pkh"]
    assert [d["programme"] for d in to_sembako["payload"]["data"]["decisions"]] == ["sembako"]
    assert set(to_pkh["payload"]["data"]) <= {*ACCESS.fields_for(("pkh",)), "decisions"}
    assert store.family_decisions[FAMILY] == (1, msg.envelope.id)
    assert store.registry[FAMILY][2]["family_id"] == FAMILY  # the DCI read model holds the newest decision


async def test_live_subscriptions_are_read_once_per_batch(store, handlers):
    await subscribe(store, ("pkh",))
    others = [decided(1, {"pkh": True}, family=f"{SLS}-{i:04d}-001") for i in range(2, 52)]
    await apply(handlers, *others)
    assert store.calls.count("live_subscriptions") == 1 and store.calls.count("family_state") == 1
    assert len(store.deliveries) == 50


# ---------------------------------------------------------------- ordering by decision_seq


async def test_an_older_decision_is_not_delivered_after_a_newer_one(store, handlers):
    sub = await subscribe(store, ("pkh",))
    newer, older = decided(5, {"pkh": True}), decided(3, {"pkh": True})
    await apply(handlers, newer)
    await apply(handlers, older)  # arrives late, in a later batch
    assert [d["event_id"] for d in queued(store, sub)] == [newer.envelope.id]
    assert store.family_decisions[FAMILY] == (5, newer.envelope.id)


async def test_within_one_batch_only_decisions_newer_than_the_last_queued_go_out_in_order(store, handlers):
    sub = await subscribe(store, ("pkh",))
    first, late, newest, again = (decided(2, {"pkh": True}), decided(1, {"pkh": True}), decided(4, {"pkh": True}),
                                  decided(4, {"pkh": True}))
    await apply(handlers, first, late, newest, again)
    assert [d["event_id"] for d in queued(store, sub)] == [first.envelope.id, newest.envelope.id]
    assert store.family_decisions[FAMILY] == (4, newest.envelope.id)


# ---------------------------------------------------------------- a family that stops matching


async def test_a_family_that_stops_matching_is_followed_up_to_the_subscriptions_told_about_it(store, handlers):
    told = await subscribe(store, ("pkh",), programmes=("pkh",))
    await apply(handlers, decided(1, {"pkh": True}))
    never_told = await subscribe(store, ("pkh",), programmes=("pkh",))  # subscribed after that decision

    withdrawal = decided(2, {"pkh": False})
    await apply(handlers, withdrawal)

    follow_up = queued(store, told)[-1]
    assert follow_up["event_id"] == withdrawal.envelope.id
    assert follow_up["payload"]["data"]["decisions"] == [
        {"programme": "pkh", "eligible": False, "rule_version": "rules-test", "reasons": ["reason of pkh"]}]
    assert queued(store, never_told) == []  # it never held "eligible": nothing to withdraw


# ---------------------------------------------------------------- erasure


async def test_erasure_empties_the_familys_deliveries_and_stops_later_ones(store, handlers):
    sub = await subscribe(store, ("pkh",))
    await apply(handlers, decided(1, {"pkh": True}))
    other = f"{SLS}-0002-001"
    await apply(handlers, decided(1, {"pkh": True}, family=other))
    erasure = erased()

    await apply(handlers, erasure)
    gone, notice = [d for d in queued(store, sub) if d["family_id"] == FAMILY]
    assert gone["status"] == "erased" and gone["payload"] is None
    assert notice["status"] == "pending" and notice["event_type"] == "family-erased"
    assert FAMILY not in store.registry and other in store.registry
    (entry,) = store.audit
    assert (entry.action, entry.object_id, entry.request_id) == ("family.erase", FAMILY, erasure.envelope.id)
    assert entry.detail == {"erasure_id": str(erasure.data.erasure_id), "reason": "data_subject_request",
                            "pending_deliveries": 1, "payloads": 1, "identity_lists": 0, "erasure_notices": 1}

    await apply(handlers, decided(9, {"pkh": True}))  # a later decision about the erased family
    assert [(d["family_id"], d["event_type"]) for d in queued(store, sub) if d["status"] == "pending"] == [
        (other, "eligibility-decided"), (FAMILY, "family-erased")]
    assert FAMILY not in store.registry


async def test_the_subscriptions_told_about_an_erased_family_get_a_notice_without_personal_data(store, handlers):
    told, never_told, deleted = (await subscribe(store, ("pkh",)), await subscribe(store, ("pkh",), area_prefixes=("3171",)),
                                 await subscribe(store, ("pbi_jkn",)))
    await apply(handlers, decided(1, {"pkh": True, "pbi_jkn": True}))
    await store.set_status(deleted, "deleted")
    erasure = erased()

    await apply(handlers, erasure)
    await apply(handlers, erasure)  # redelivered: one notice per subscription and erasure
    assert queued(store, never_told) == [] and [d for d in queued(store, deleted) if d["status"] == "pending"] == []
    (notice,) = [d for d in queued(store, told) if d["status"] == "pending"]
    assert notice["event_id"] == erasure.envelope.id and notice["family_id"] == FAMILY
    assert notice["payload"] == {
        "event_id": erasure.envelope.id, "event_type": erasure.envelope.type, "subject": FAMILY,
        "time": "2022-12-01T00:00:00+00:00",
        "data": {"family_id": FAMILY, "erasure_id": str(erasure.data.erasure_id), "erased_at": "2022-12-01T00:00:00+00:00",
                 "action": "erase", "decisions_withdrawn": True}}
    assert "data_subject_request" not in repr(notice)  # not the erasure's reason


async def test_an_erasure_in_the_same_batch_stops_the_batchs_decisions_about_the_family(store, handlers):
    sub = await subscribe(store, ("pkh",))
    await apply(handlers, decided(1, {"pkh": True}), erased())
    assert queued(store, sub) == [] and store.family_decisions == {}


# ---------------------------------------------------------------- pause and resume


async def test_a_paused_subscription_keeps_receiving_into_its_queue_and_a_deleted_one_does_not(store, handlers):
    paused, deleted = await subscribe(store, ("pkh",)), await subscribe(store, ("pkh",))
    await store.set_status(paused, "paused")
    await store.set_status(deleted, "deleted")
    await apply(handlers, decided(1, {"pkh": True}))
    assert len(queued(store, paused)) == 1 and queued(store, deleted) == []
    await store.set_status(paused, "active")
    await apply(handlers, decided(2, {"pkh": True}))
    assert [d["payload"]["data"]["decision_seq"] for d in queued(store, paused)] == [1, 2]


# ---------------------------------------------------------------- the delivery worker on the same fakes


class FakeRuntime:
    """What the worker uses of the service runtime: a pool (unused: the fake store needs none) and
    units of work (FakeUnitOfWork: what an attempt publishes stays readable)."""

    pool = None

    def __init__(self) -> None:
        self.units: list[FakeUnitOfWork] = []

    @contextlib.asynccontextmanager
    async def unit_of_work(self):
        uow = FakeUnitOfWork("notify")
        yield uow
        await uow.commit()
        self.units.append(uow)


def worker_on(store: InMemoryNotifyStore) -> DeliveryWorker:
    @contextlib.asynccontextmanager
    async def stores(pool, transaction: bool = False):
        yield store

    return DeliveryWorker(NotifySettings(), Publisher(), store_for=lambda uow: store, stores=stores)


def acknowledging_client(posts: list[dict]) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        posts.append(orjson.loads(request.content))
        # streamed as from a network (MockTransport marks `json=` replies as already read)
        return httpx.Response(200, stream=httpx.ByteStream(orjson.dumps({"message": {"ack_status": "ACK"}})))

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def test_pause_holds_deliveries_and_resume_sends_the_queue_and_confirms_it(store, handlers):
    sub = await subscribe(store, ("pkh",))
    await store.set_status(sub, "paused")
    msg = decided(1, {"pkh": True})
    await apply(handlers, msg)
    runtime, posts, worker = FakeRuntime(), [], worker_on(store)

    async with acknowledging_client(posts) as client:
        assert await worker.deliver_batch(runtime, client, sub) is False  # paused: nothing is sent
        assert posts == [] and queued(store, sub)[0]["status"] == "pending"
        await store.set_status(sub, "active")
        assert await worker.deliver_batch(runtime, client, sub) is True

    (body,) = posts
    assert [e["event_id"] for e in body["message"]["notify_event"]] == [msg.envelope.id]
    assert queued(store, sub)[0]["status"] == "delivered"
    (uow,) = runtime.units
    (confirmed,) = uow.events(EligibilityDelivered)
    assert (confirmed.eligibility_event_id, confirmed.subscription_id, confirmed.family_id) == (
        msg.envelope.id, sub, FAMILY)
    assert store.subscriptions[sub]["lease_owner"] is None  # the lease is given back
