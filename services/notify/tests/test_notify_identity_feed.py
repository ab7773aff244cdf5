"""Member-level decisions by name (issue 11, item 1: "member NIKs only for programmes configured to
receive them by name"): notify keeps intake's sealed identity lists (member-identities) and puts each
member's NIK into the member-level decisions of a programme granted `member_identifiers`, at sending
time. The real handlers and delivery worker on the in-memory store; the real-stack proof is
tests/integration/test_member_decisions.py."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import orjson
import pytest
import yaml

from notify.delivery import DeliveryWorker
from notify.domain import Filters, name_members, parse_access
from notify.handlers import NotifyHandlers
from notify.publisher import Publisher
from notify.settings import NotifySettings
from regsosek.contracts import EligibilityDecided, FamilyErased, MemberIdentities
from regsosek.contracts.identities import b64, identity_aad, identity_plaintext
from regsosek.crypto import CannotOpen, parse_keys
from regsosek.envelope import new_envelope
from regsosek.messaging import Incoming
from regsosek.programmes import PROGRAMME_CODES
from regsosek.testing import FakeUnitOfWork

from notify_fakes import InMemoryNotifyStore

ACCESS_FILE = Path(__file__).resolve().parents[1] / "src" / "notify" / "data" / "programme-access-2022.1.yaml"
ACCESS = parse_access(yaml.safe_load(ACCESS_FILE.read_text(encoding="utf-8")), PROGRAMME_CODES)
KEY = "feed1:" + base64.b64encode(b"k" * 32).decode()
FEED = parse_keys(KEY)
SLS = "64720100010001"
FAMILY = SLS + "-0001-001"
NIKS = {1: "6472010101800001", 3: "6472014101150003"}  # line 2 has no NIK (a newborn)


def identities(family: str, submission: UUID, niks: dict[int, str], *, keys=FEED, aad_of: str | None = None) -> Incoming:
    sealed = keys.seal(identity_plaintext(niks), identity_aad(aad_of or family, submission))
    data = MemberIdentities(family_id=family, sls_id=family.split("-")[0], submission_id=submission,
                            members=len(niks), sealed=b64(sealed))
    return Incoming(new_envelope(data, source="/regsosek/intake", subject=family), data, None)


def decided(family: str, submission: UUID) -> Incoming:
    data = EligibilityDecided.model_validate({
        "family_id": family, "sls_id": family.split("-")[0], "submission_id": str(submission), "version": 1,
        "decision_seq": 1, "welfare_group": 1, "decile": 1, "model_version": "pmt-test", "rule_version": "rules-test",
        "decisions": [{"programme": p, "eligible": True, "rule_version": "rules-test", "reasons": ["r"]}
                      for p in ("pkh", "pbi_jkn")],
        "member_decisions": [{"line_no": n, "programme": "pbi_jkn", "eligible": True, "rule_version": "rules-test",
                              "reasons": ["r"]} for n in (1, 2, 3)],
        "decided_at": datetime(2022, 11, 1, tzinfo=UTC).isoformat()})
    return Incoming(new_envelope(data, source="/regsosek/classify", subject=family), data, None)


@pytest.fixture
def store() -> InMemoryNotifyStore:
    return InMemoryNotifyStore()


@pytest.fixture
def handlers(store) -> NotifyHandlers:
    return NotifyHandlers(ACCESS, store_for=lambda uow: store, identity_keys=FEED)


async def apply(handlers: NotifyHandlers, *messages: Incoming) -> None:
    uow = FakeUnitOfWork("notify")
    routes = handlers.handlers()
    for m in messages:
        await routes[type(m.data)](uow, m)
    await uow.commit()


async def subscribe(store: InMemoryNotifyStore, programme: str) -> UUID:
    sub_id = uuid4()
    await store.create_subscription(sub_id=sub_id, owner=programme, callback_url="http://receiver/hook", secret=None,
                                    signature="ed25519", scope=(programme,), filters=Filters(),
                                    limit_problem=lambda counts: None)
    return sub_id


class FakeRuntime:
    pool = None

    @contextlib.asynccontextmanager
    async def unit_of_work(self):
        uow = FakeUnitOfWork("notify")
        yield uow
        await uow.commit()


def worker_on(store: InMemoryNotifyStore, **settings) -> DeliveryWorker:
    @contextlib.asynccontextmanager
    async def stores(pool, transaction: bool = False):
        yield store

    return DeliveryWorker(NotifySettings(identity_keys=KEY, **settings), Publisher(),
                          store_for=lambda uow: store, stores=stores)


async def deliver(store: InMemoryNotifyStore, sub: UUID, **settings) -> list[dict]:
    posts: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posts.append(orjson.loads(request.content))
        return httpx.Response(200, stream=httpx.ByteStream(orjson.dumps({"message": {"ack_status": "ACK"}})))

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        await worker_on(store, **settings).deliver_batch(FakeRuntime(), client, sub)
    return [e for p in posts for e in p["message"]["notify_event"]]


async def test_a_by_name_programme_receives_each_members_nik_and_others_receive_none(store, handlers):
    pbi, pkh = await subscribe(store, "pbi_jkn"), await subscribe(store, "pkh")
    submission = uuid4()
    await apply(handlers, identities(FAMILY, submission, NIKS), decided(FAMILY, submission))

    (event,) = await deliver(store, pbi)
    assert [(m["line_no"], m["nik"]) for m in event["data"]["member_decisions"]] == [
        (1, NIKS[1]), (2, None), (3, NIKS[3])]
    (other,) = await deliver(store, pkh)
    assert "member_decisions" not in other["data"] and NIKS[1] not in orjson.dumps(other).decode()
    # the stored payload never holds a NIK: it is put in at sending time only
    assert all(NIKS[1] not in orjson.dumps(d["payload"]).decode() for d in store.deliveries)


async def test_a_decision_that_arrives_before_its_identity_list_waits_for_it(store, handlers):
    pbi = await subscribe(store, "pbi_jkn")
    submission = uuid4()
    await apply(handlers, decided(FAMILY, submission))  # the decision first (topics are read independently)

    assert await deliver(store, pbi) == []  # held, not sent without its NIKs
    assert store.deliveries[0]["status"] == "pending" and store.subscriptions[pbi]["lease_owner"] is None
    store.subscriptions[pbi]["next_attempt_at"] = datetime.now(UTC)
    await apply(handlers, identities(FAMILY, submission, NIKS))
    (event,) = await deliver(store, pbi)
    assert event["data"]["member_decisions"][0]["nik"] == NIKS[1]


async def test_after_the_wait_a_decision_goes_without_nik_rather_than_never(store, handlers):
    pbi = await subscribe(store, "pbi_jkn")
    await apply(handlers, decided(FAMILY, uuid4()))  # an interview from before the feed: no list will come

    (event,) = await deliver(store, pbi, identity_wait_s=0)
    assert [m["nik"] for m in event["data"]["member_decisions"]] == [None, None, None]


def test_a_waiting_delivery_holds_back_the_later_ones_of_its_subscription():
    """Order per subscription: the batch is cut before the first delivery still waiting."""
    now = datetime(2022, 11, 1, tzinfo=UTC)
    s1, s2 = uuid4(), uuid4()

    def row(family: str, submission: UUID) -> dict:
        return {"payload": {"data": {"family_id": family, "submission_id": str(submission),
                                     "member_decisions": [{"line_no": 1, "programme": "pbi_jkn"}]}}, "created_at": now}

    plain = {"payload": {"data": {"family_id": FAMILY, "submission_id": str(s1)}}, "created_at": now}
    rows = [plain, row(FAMILY, s1), row(f"{SLS}-0002-001", s2), plain]
    batch = name_members(rows, {(FAMILY, s1): {1: NIKS[1]}}, now=now + timedelta(seconds=1), wait_s=60)
    assert (len(batch.payloads), batch.wait) == (2, False)
    assert batch.payloads[1]["data"]["member_decisions"][0]["nik"] == NIKS[1]
    first_waits = name_members(rows[2:], {}, now=now, wait_s=60)
    assert (first_waits.payloads, first_waits.wait) == ([], True)


async def test_an_identity_list_that_does_not_open_is_refused_for_the_dead_letter_topic(store, handlers):
    other_key = parse_keys("feed1:" + base64.b64encode(b"x" * 32).decode())
    with pytest.raises(CannotOpen) as e:  # sealed under a key of the same id that notify does not hold
        await apply(handlers, identities(FAMILY, uuid4(), NIKS, keys=other_key))
    assert "feed1" in str(e.value) and NIKS[1] not in str(e.value)
    with pytest.raises(CannotOpen):  # a list copied onto another family does not open either
        await apply(handlers, identities(FAMILY, uuid4(), NIKS, aad_of=f"{SLS}-0009-001"))
    assert store.identities == {}


async def test_erasure_deletes_the_familys_identity_lists_and_a_late_list_is_not_kept(store, handlers):
    await apply(handlers, identities(FAMILY, uuid4(), NIKS), identities(f"{SLS}-0002-001", uuid4(), NIKS))
    erasure = FamilyErased(erasure_id=uuid4(), family_id=FAMILY, sls_id=SLS, reason="data_subject_request",
                           erased_at=datetime(2022, 12, 1, tzinfo=UTC))
    await apply(handlers, Incoming(new_envelope(erasure, source="/regsosek/intake", subject=FAMILY), erasure, None))
    assert {k[0] for k in store.identities} == {f"{SLS}-0002-001"}
    assert store.audit[-1].detail["identity_lists"] == 1
    await apply(handlers, identities(FAMILY, uuid4(), NIKS))  # a list arriving after the erasure
    assert {k[0] for k in store.identities} == {f"{SLS}-0002-001"}


async def test_key_rotation_reseals_the_kept_lists_under_the_new_key_and_they_still_open(store, handlers):
    submission = uuid4()
    await apply(handlers, identities(FAMILY, submission, NIKS))
    rotated = parse_keys("feed2:" + base64.b64encode(b"n" * 32).decode() + "," + KEY)  # the new key first
    assert await store.reseal_identity_batch(rotated, 10) == 1
    assert await store.count_identities_not_under("feed2") == 0
    (kept,) = store.identities.values()
    assert kept.kid == "feed2"
    new_only = parse_keys("feed2:" + base64.b64encode(b"n" * 32).decode())  # the old key can go
    opened = new_only.open(kept.sealed, identity_aad(FAMILY, submission))
    assert orjson.loads(opened) == [{"line_no": n, "nik": nik} for n, nik in sorted(NIKS.items())]
