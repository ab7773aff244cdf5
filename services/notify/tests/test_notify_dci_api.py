"""The DCI endpoints' shared handling (accept, refuse, answer signed) on the in-memory store, in
milliseconds. The real-stack proof, with the specification's schemas, is tests/integration/test_dci."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from test_notify_handlers import ACCESS, FAMILY, SLS, apply, decided, erased

from notify import dci_domain as dd
from notify.dci import DciApi, DciCallbackWorker
from notify.handlers import NotifyHandlers
from notify.settings import NotifySettings
from regsosek.auth import Role, mint

from notify_fakes import InMemoryNotifyStore

_spec_file = Path(__file__).resolve().parents[3] / "tests" / "dci_spec.py"
if "dci_spec" not in sys.modules:
    _s = importlib.util.spec_from_file_location("dci_spec", _spec_file)
    sys.modules["dci_spec"] = importlib.util.module_from_spec(_s)
    _s.loader.exec_module(sys.modules["dci_spec"])
dci_spec = sys.modules["dci_spec"]

SENDER, SUBJECT = "pkh-registry", "PKH-DCI"
KEY = Ed25519PrivateKey.generate()
# another programme system: its own sender, token subject, key, programme and area
OTHER_SENDER, OTHER_SUBJECT, OTHER_SLS = "sembako-mis", "SEMBAKO-DCI", "31710100010001"
OTHER_KEY = Ed25519PrivateKey.generate()
SETTINGS = NotifySettings(retry_base_s=0.01, retry_cap_s=0.02, dci_callback_attempts=3)
URI = "http://programme.example/dci"
# the registry's decryption key, and requester A's encryption key (B registered none)
REGISTRY_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ENCRYPTION_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
REQUESTERS = {SENDER: dd.Requester(SENDER, SUBJECT, KEY.public_key(), ENCRYPTION_KEY.public_key()),
              OTHER_SENDER: dd.Requester(OTHER_SENDER, OTHER_SUBJECT, OTHER_KEY.public_key())}


@pytest.fixture
def store() -> InMemoryNotifyStore:
    return InMemoryNotifyStore()


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> NotifySettings:
    """SETTINGS with the registry's decryption key (same signing key and retries)."""
    pem = tmp_path_factory.mktemp("dci") / "registry-encryption-key.pem"
    pem.write_bytes(REGISTRY_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return NotifySettings(retry_base_s=0.01, retry_cap_s=0.02, dci_callback_attempts=3,
                          dci_encryption_key_file=str(pem))


@pytest.fixture
async def client(store, settings):
    @contextlib.asynccontextmanager
    async def stores(request, transaction: bool = False):
        yield store

    app = FastAPI()
    app.include_router(DciApi(settings, ACCESS, REQUESTERS, stores=stores).router())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify") as c:
        yield c


def bearer(subject: str = SUBJECT) -> dict[str, str]:
    return {"authorization": "Bearer " + mint(subject=subject, role=Role.PROGRAMME, areas=["6472"],
                                               programmes=["pkh"])}


def other_bearer() -> dict[str, str]:
    return {"authorization": "Bearer " + mint(subject=OTHER_SUBJECT, role=Role.PROGRAMME, areas=["3171"],
                                               programmes=["sembako"])}


def signed(action: str, message: dict, key: Ed25519PrivateKey = KEY, **header) -> dict:
    h = {"version": "1.0.0", "message_id": str(uuid.uuid4()), "message_ts": datetime.now(UTC).isoformat(),
         "action": action, "sender_id": SENDER, "receiver_id": "regsosek", "total_count": 1, **header}
    return {"signature": dd.sign_envelope(key, h["sender_id"], h, message), "header": h, "message": message}


def other_signed(action: str, message: dict, **header) -> dict:
    return signed(action, message, OTHER_KEY, sender_id=OTHER_SENDER, **header)


def search(area: str, tid: str = "t-1") -> dict:
    return {"transaction_id": tid, "search_request": [{
        "reference_id": "ref-0", "timestamp": datetime.now(UTC).isoformat(), "search_criteria": {
            "reg_type": dd.REG_TYPE, "reg_record_type": "Group", "query_type": "expression",
            "query": {"type": "expression", "value": {"expression": {
                "collection": "Group", "query": {"area_code": {"$eq": area}}}}}}}]}


def notify_verifies(body: dict) -> bool:
    key = SETTINGS.webhook_signing_keys()[0].key.public_key()
    return dd.verify_envelope(key, body["signature"], body["header"], body.get("message", {}))


async def test_sync_search_answers_signed_with_the_tokens_programme_only_and_is_kept_and_audited(client, store):
    await apply(NotifyHandlers(ACCESS, store_for=lambda uow: store), decided(1, {"pkh": True, "pbi_jkn": True}))
    r = await client.post("/dci/registry/sync/search", json=signed("search", search(SLS[:4])), headers=bearer())
    assert r.status_code == 200, r.text
    body = r.json()
    assert notify_verifies(body) and body["header"]["receiver_id"] == SENDER
    (item,) = body["message"]["search_response"]
    (record,) = item["data"]["reg_records"]
    assert record["group_identifier"][0]["identifier_value"] == FAMILY
    assert [d["programme"] for d in record["programme_decisions"]] == ["pkh"]  # never pbi_jkn's
    (txn,) = store.dci_transactions.values()
    assert (txn["kind"], txn["status"], txn["requester"]) == ("search", "succ", SUBJECT)
    assert [(e.action, e.detail) for e in store.audit] == [("dci.search", {"rows": 1})]


async def test_every_endpoint_refuses_through_the_shared_handling(client, store):
    r = await client.post("/dci/registry/search", json=signed("search", search("6472")))  # no token
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "err.request.unauthorized"

    r = await client.post("/dci/registry/subscribe", content=b"not json", headers=bearer())
    assert r.status_code == 400 and r.json()["message"]["ack_status"] == "ERR"
    assert r.json()["message"]["error"]["code"] == "err.request.bad"

    r = await client.post("/dci/registry/sync/search", json=signed("subscribe", search("6472")), headers=bearer())
    assert r.status_code == 400 and notify_verifies(r.json())  # a sync endpoint's refusal is a signed rjct answer
    assert (r.json()["header"]["status"], r.json()["header"]["status_reason_code"]) == ("rjct", "rjct.action.invalid")

    r = await client.post("/dci/registry/sync/search", json=signed("search", search("6472")),
                          headers=bearer("SOMEONE-ELSE"))
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "err.sender_id.invalid"

    # an asynchronous search without a sender_uri has nowhere to call back: refused before anything is kept
    r = await client.post("/dci/registry/search", json=signed("search", search("6472")), headers=bearer())
    assert r.status_code == 400 and r.json()["message"]["error"]["code"] == "err.sender_uri.invalid"
    assert store.dci_transactions == {} and store.audit == []


# ---------------------------------------------------------------- replay protection


async def test_a_repeated_message_id_or_a_stale_or_future_timestamp_is_refused(client, store):
    body = signed("search", search("6472"))
    assert (await client.post("/dci/registry/sync/search", json=body, headers=bearer())).status_code == 200
    r = await client.post("/dci/registry/sync/search", json=body, headers=bearer())  # the same message again
    assert r.status_code == 409 and notify_verifies(r.json())
    assert (r.json()["header"]["status"], r.json()["header"]["status_reason_code"]) == ("rjct", "rjct.message_id.duplicate")

    body = signed("search", search("6472"), sender_uri=URI)
    r = await client.post("/dci/registry/search", json=body, headers=bearer())
    again = await client.post("/dci/registry/search", json=body, headers=bearer())
    assert r.status_code == 200 and again.status_code == 409
    assert again.json()["message"]["ack_status"] == "ERR" and "rjct.message_id.duplicate" in again.json()[
        "message"]["error"]["message"]

    for skew in (timedelta(minutes=-6), timedelta(minutes=6)):
        r = await client.post("/dci/registry/sync/search", headers=bearer(), json=signed(
            "search", search("6472"), message_ts=(datetime.now(UTC) + skew).isoformat()))
        assert r.status_code == 400 and r.json()["header"]["status_reason_code"] == "rjct.message_ts.invalid"

    # another sender may use the same message_id: ids are the sender's own
    r = await client.post("/dci/registry/sync/search", headers=other_bearer(), json=other_signed(
        "search", search("3171"), message_id=body["header"]["message_id"]))
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- callbacks: queued, retried, given up


class Receiver:
    """A programme system's callback endpoint (httpx MockTransport): answers each POST with the next
    of `answers` (status, ack_status), the last one repeating."""

    def __init__(self, *answers: tuple[int, str | None]) -> None:
        self.answers, self.received = list(answers), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.received.append((request.url.path, orjson.loads(request.read())))
        status, ack = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        message = {"ack_status": ack, "timestamp": datetime.now(UTC).isoformat(), "correlation_id": "c"}
        if ack == "ERR":
            message["error"] = {"code": "err.signature.invalid", "message": "we do not know your key"}
        # streamed as from a network (MockTransport marks `json=` replies as already read)
        return httpx.Response(status, stream=httpx.ByteStream(orjson.dumps({"message": message} if ack else {})))


async def send_due(store, receiver: Receiver, rounds: int = 1) -> None:
    """`rounds` passes of a fresh callback worker (as after a restart) over the queue, each once the
    retry waits of the pass before are over."""
    @contextlib.asynccontextmanager
    async def stores(pool, transaction: bool = False):
        yield store

    for _ in range(rounds):
        for c in store.dci_callbacks:  # the backoff waits are the worker's business, not this test's
            c["next_attempt_at"] = min(c["next_attempt_at"], datetime.now(UTC))
        async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as http:
            await DciCallbackWorker(SETTINGS, REQUESTERS, stores=stores).deliver_due(None, http)


async def async_search(client, store) -> tuple[str, str]:
    await apply(NotifyHandlers(ACCESS, store_for=lambda uow: store), decided(1, {"pkh": True}))
    message = search(SLS[:4])
    r = await client.post("/dci/registry/search", json=signed("search", message, sender_uri=URI), headers=bearer())
    assert r.status_code == 200 and r.json()["message"]["ack_status"] == "ACK", r.text
    return message["transaction_id"], r.json()["message"]["correlation_id"]


async def test_async_search_is_queued_with_its_transaction_and_sent_signed_when_the_worker_runs(client, store):
    tid, cid = await async_search(client, store)
    (cb,) = store.dci_callbacks
    assert (cb["status"], cb["url"], cb["action"]) == ("pending", URI + "/registry/on-search", "on-search")
    assert store.dci_transactions[cid]["status"] == "pdng"

    receiver = Receiver((200, "ACK"))
    await send_due(store, receiver)
    ((path, body),) = receiver.received
    assert path == "/dci/registry/on-search" and notify_verifies(body)
    dci_spec.request("/registry/on-search", body)
    assert (body["message"]["transaction_id"], body["message"]["correlation_id"]) == (tid, cid)
    assert body["message"]["search_response"][0]["data"]["reg_records"][0]["group_identifier"][0][
        "identifier_value"] == FAMILY
    assert (cb["status"], cb["message"]) == ("delivered", None)  # the results are not kept once acknowledged
    assert store.dci_transactions[cid]["status"] == "succ"


async def test_a_family_erased_before_its_on_search_callback_is_sent_is_not_in_it(client, store):
    await async_search(client, store)
    await apply(NotifyHandlers(ACCESS, store_for=lambda uow: store), erased())
    receiver = Receiver((200, "ACK"))
    await send_due(store, receiver)
    ((_, body),) = receiver.received
    assert notify_verifies(body)  # signed as sent, without the family
    (item,) = body["message"]["search_response"]
    assert item["data"]["reg_records"] == [] and item["pagination"]["total_count"] == 0
    assert FAMILY not in orjson.dumps(body).decode()


async def test_a_failing_callback_is_retried_with_the_same_message_id_then_given_up(client, store):
    _, cid = await async_search(client, store)
    receiver = Receiver((503, None), (200, None), (500, None))
    await send_due(store, receiver)
    (cb,) = store.dci_callbacks
    assert (cb["status"], cb["attempts"], cb["last_status"]) == ("pending", 1, 503)
    await send_due(store, receiver, rounds=2)
    assert (cb["status"], cb["attempts"]) == ("dead", SETTINGS.dci_callback_attempts)
    assert "given up after 3 attempts" in cb["last_error"] and cb["message"] is None
    assert len({b["header"]["message_id"] for _, b in receiver.received}) == 1  # one message, sent three times
    txn = store.dci_transactions[cid]
    assert txn["status"] == "rjct" and "HTTP 500" in txn["detail"]["callback_error"]


async def test_an_err_answer_gives_the_callback_up_at_once(client, store):
    _, cid = await async_search(client, store)
    receiver = Receiver((200, "ERR"))
    await send_due(store, receiver, rounds=3)
    (cb,) = store.dci_callbacks
    assert (cb["status"], cb["attempts"], len(receiver.received)) == ("dead", 1, 1)
    assert cb["last_error"].startswith("ERR err.signature.invalid")
    assert store.dci_transactions[cid]["status"] == "rjct"


async def test_txn_status_tells_a_pending_then_a_given_up_search(client, store):
    tid, cid = await async_search(client, store)

    async def status() -> dict:
        r = await client.post("/dci/registry/sync/txn/status", headers=bearer(), json=signed("txn-status", {
            "transaction_id": "st-" + str(uuid.uuid4())[:8], "txnstatus_request": {
                "reference_id": "r", "txn_type": "search", "attribute_type": "transaction_id",
                "attribute_value": tid}}))
        assert r.status_code == 200, r.text
        return r.json()["message"]["txnstatus_response"]["txn_status"]["search_response"][0]

    assert (await status())["status"] == "pdng"
    await send_due(store, Receiver((200, "ERR")))
    item = await status()
    assert item["status"] == "rjct" and "ERR err.signature.invalid" in item["status_reason_message"]

    # the asynchronous form queues the same answer for txn/on-status
    r = await client.post("/dci/registry/txn/status", headers=bearer(), json=signed("txn-status", {
        "transaction_id": "st-async", "txnstatus_request": {
            "reference_id": "r", "txn_type": "search", "attribute_type": "correlation_id", "attribute_value": cid}},
        sender_uri=URI))
    assert r.status_code == 200 and r.json()["message"]["ack_status"] == "ACK", r.text
    (queued,) = [c for c in store.dci_callbacks if c["action"] == "txn-on-status"]
    assert queued["url"] == URI + "/registry/txn/on-status"
    assert queued["message"]["txnstatus_response"]["txn_status"]["search_response"][0]["status"] == "rjct"


# ---------------------------------------------------------------- one requester never sees another's


async def test_requesters_are_isolated(client, store):
    handlers = NotifyHandlers(ACCESS, store_for=lambda uow: store)
    await apply(handlers, decided(1, {"pkh": True, "sembako": True}),
                decided(1, {"pkh": True, "sembako": True}, family=OTHER_SLS + "-0001-001"))
    # A (pkh, 6472) subscribes and searches asynchronously
    r = await client.post("/dci/registry/subscribe", headers=bearer(), json=signed("subscribe", {
        "transaction_id": "a-sub", "subscribe_request": [{"reference_id": "s", "timestamp": datetime.now(UTC).isoformat(),
                                                          "subscribe_criteria": {
            "notify_record_type": "Group", "filter_type": "predicate", "filter": [{"expression1": {
                "attribute_name": "area_code", "operator": "eq", "attribute_value": "6472"}}]}}]}, sender_uri=URI))
    assert r.status_code == 200, r.text
    a_search_tid, a_search_cid = await async_search(client, store)
    (a_code,) = [str(s["id"]) for s in store.subscriptions.values() if s["format"] == "dci"]

    # B (sembako, 3171) sees only its own area's family, and only its programme's decision of it
    r = await client.post("/dci/registry/sync/search", headers=other_bearer(),
                          json=other_signed("search", search("3171", "b-t")))
    (record,) = r.json()["message"]["search_response"][0]["data"]["reg_records"]
    assert record["group_identifier"][0]["identifier_value"] == OTHER_SLS + "-0001-001"
    assert [d["programme"] for d in record["programme_decisions"]] == ["sembako"]
    r = await client.post("/dci/registry/sync/search", headers=other_bearer(),
                          json=other_signed("search", search("6472", "b-t2")))  # A's area: refused for B's token
    assert r.json()["message"]["search_response"][0]["status_reason_code"] == "rjct.search_criteria.invalid"

    # B cannot read A's transactions, by transaction id or correlation id
    for attr, value in (("transaction_id", a_search_tid), ("correlation_id", a_search_cid),
                        ("transaction_id", "a-sub")):
        for txn_type in ("search", "subscribe"):
            r = await client.post("/dci/registry/sync/txn/status", headers=other_bearer(), json=other_signed(
                "txn-status", {"transaction_id": "b-st", "txnstatus_request": {
                    "reference_id": "r", "txn_type": txn_type, "attribute_type": attr, "attribute_value": value}},
                message_id=str(uuid.uuid4())))
            assert r.json()["message"]["txnstatus_response"]["txn_status"]["search_response"] == []

    # B cannot unsubscribe A's subscription; it stays live
    r = await client.post("/dci/registry/unsubscribe", headers=other_bearer(), json=other_signed(
        "unsubscribe", {"transaction_id": "b-unsub", "subscription_codes": [a_code]}, sender_uri=URI + "/b"))
    assert r.status_code == 200
    assert store.subscriptions[uuid.UUID(a_code)]["status"] == "active"

    # each requester's callbacks go to its own sender_uri, and no callback of B's carries A's data
    by = {c["requester"]: c for c in store.dci_callbacks if c["action"] == "on-unsubscribe"}
    assert by[OTHER_SUBJECT]["message"]["status_reason_code"] == "rjct.subscription_code.invalid"
    assert by[OTHER_SUBJECT]["url"] == URI + "/b/registry/on-unsubscribe"
    a_callbacks = [c for c in store.dci_callbacks if c["requester"] == SUBJECT]
    assert {c["action"] for c in a_callbacks} == {"on-subscribe", "on-search"}
    assert all(c["url"].startswith(URI + "/registry/") for c in a_callbacks)
    assert all(FAMILY not in orjson.dumps(c["message"]).decode()
               for c in store.dci_callbacks if c["requester"] == OTHER_SUBJECT)
    assert [(c["requester"], c["url"]) for c in store.dci_callbacks
            if c["requester"] == OTHER_SUBJECT] == [(OTHER_SUBJECT, URI + "/b/registry/on-unsubscribe")]


# ---------------------------------------------------------------- encrypted messages


def encrypted(action: str, message: dict, registry_jwk: dict, key: Ed25519PrivateKey = KEY, **header) -> dict:
    """A request whose message is encrypted to the registry's published key, signed as sent."""
    sealed = dd.encrypt_message(dd.rsa_public_key(registry_jwk), message)
    h = {"version": "1.0.0", "message_id": str(uuid.uuid4()), "message_ts": datetime.now(UTC).isoformat(),
         "action": action, "sender_id": SENDER, "receiver_id": "regsosek", "total_count": 1, "is_msg_encrypted": True,
         **header}
    return {"signature": dd.sign_envelope(key, h["sender_id"], h, sealed), "header": h, "message": sealed}


async def test_an_encrypted_request_is_answered_encrypted_to_the_requester(client, store):
    await apply(NotifyHandlers(ACCESS, store_for=lambda uow: store), decided(1, {"pkh": True}))
    (jwk,) = (await client.get("/dci/registry/encryption-keys")).json()["keys"]
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RSA-OAEP-256", "enc") and "d" not in jwk
    body = encrypted("search", search(SLS[:4]), jwk)
    dci_spec.request("/registry/sync/search", body)
    r = await client.post("/dci/registry/sync/search", json=body, headers=bearer())
    assert r.status_code == 200, r.text
    answer = r.json()
    dci_spec.response("/registry/sync/search", 200, answer)
    assert answer["header"]["is_msg_encrypted"] is True and notify_verifies(answer)  # signed over the sealed form
    assert FAMILY not in r.text
    message = dd.decrypt_message(ENCRYPTION_KEY, answer["message"])
    assert message["search_response"][0]["data"]["reg_records"][0]["group_identifier"][0][
        "identifier_value"] == FAMILY


async def test_an_encrypted_async_search_is_called_back_encrypted(client, store):
    await apply(NotifyHandlers(ACCESS, store_for=lambda uow: store), decided(1, {"pkh": True}))
    (jwk,) = (await client.get("/dci/registry/encryption-keys")).json()["keys"]
    r = await client.post("/dci/registry/search", json=encrypted("search", search(SLS[:4], "t-enc"), jwk,
                                                                 sender_uri=URI), headers=bearer())
    assert r.status_code == 200 and r.json()["message"]["ack_status"] == "ACK", r.text
    receiver = Receiver((200, "ACK"))
    await send_due(store, receiver)
    ((_, body),) = receiver.received
    assert body["header"]["is_msg_encrypted"] is True and notify_verifies(body)
    dci_spec.request("/registry/on-search", body)
    message = dd.decrypt_message(ENCRYPTION_KEY, body["message"])
    assert message["transaction_id"] == "t-enc" and FAMILY in orjson.dumps(message).decode()


async def test_encrypted_requests_are_refused_with_why(client, store):
    (jwk,) = (await client.get("/dci/registry/encryption-keys")).json()["keys"]
    # B registered no encryption key: it could not read an encrypted answer
    r = await client.post("/dci/registry/sync/search", headers=other_bearer(), json=encrypted(
        "search", search("3171"), jwk, OTHER_KEY, sender_id=OTHER_SENDER))
    assert r.status_code == 400 and "register an encryption_key" in r.json()["header"]["status_reason_message"]
    # made to another key
    elsewhere = dd.rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    r = await client.post("/dci/registry/search", headers=bearer(), json=encrypted(
        "search", search("6472"), elsewhere, sender_uri=URI))
    assert r.status_code == 400 and r.json()["message"]["error"]["code"] == "err.encryption.invalid"
    # a ciphertext changed after signing: the signature refuses it first
    body = encrypted("search", search("6472"), jwk, sender_uri=URI)
    sealed = body["message"]["ciphertext"]
    body["message"]["ciphertext"] = ("B" if sealed[0] == "A" else "A") + sealed[1:]  # changed, whatever it began with
    r = await client.post("/dci/registry/search", headers=bearer(), json=body)
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "err.signature.invalid"
    assert store.dci_callbacks == [] and store.dci_transactions == {}


async def test_a_registry_without_a_decryption_key_refuses_encrypted_messages(store):
    @contextlib.asynccontextmanager
    async def stores(request, transaction: bool = False):
        yield store

    app = FastAPI()
    app.include_router(DciApi(SETTINGS, ACCESS, REQUESTERS, stores=stores).router())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify") as c:
        assert (await c.get("/dci/registry/encryption-keys")).json() == {"keys": []}
        jwk = dd.rsa_jwk(REGISTRY_KEY.public_key())
        r = await c.post("/dci/registry/search", headers=bearer(), json=encrypted("search", search("6472"), jwk,
                                                                                  sender_uri=URI))
        assert r.status_code == 400 and r.json()["message"]["error"]["code"] == "err.encryption.invalid"
        assert "no encryption key configured" in r.json()["message"]["error"]["message"]

