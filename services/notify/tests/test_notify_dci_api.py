"""The DCI endpoints' shared handling (accept, refuse, answer signed) on the in-memory store, in
milliseconds. The real-stack proof, with the specification's schemas, is tests/integration/test_dci."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from test_notify_handlers import ACCESS, FAMILY, SLS, apply, decided

from notify import dci_domain as dd
from notify.dci import DciApi
from notify.handlers import NotifyHandlers
from notify.settings import NotifySettings
from regsosek.auth import Role, mint

from notify_fakes import InMemoryNotifyStore

SENDER, SUBJECT = "pkh-registry", "PKH-DCI"
KEY = Ed25519PrivateKey.generate()
SETTINGS = NotifySettings()


@pytest.fixture
def store() -> InMemoryNotifyStore:
    return InMemoryNotifyStore()


@pytest.fixture
async def client(store):
    @contextlib.asynccontextmanager
    async def stores(request, transaction: bool = False):
        yield store

    app = FastAPI()
    requesters = {SENDER: dd.Requester(SENDER, SUBJECT, KEY.public_key())}
    app.include_router(DciApi(SETTINGS, ACCESS, requesters, stores=stores).router())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify") as c:
        yield c


def bearer(subject: str = SUBJECT) -> dict[str, str]:
    return {"authorization": "Bearer " + mint(subject=subject, role=Role.PROGRAMME, areas=["6472"],
                                               programmes=["pkh"])}


def signed(action: str, message: dict, **header) -> dict:
    h = {"version": "1.0.0", "message_id": str(uuid.uuid4()), "message_ts": datetime.now(UTC).isoformat(),
         "action": action, "sender_id": SENDER, "receiver_id": "regsosek", "total_count": 1, **header}
    return {"signature": dd.sign_envelope(KEY, SENDER, h, message), "header": h, "message": message}


def search(area: str) -> dict:
    return {"transaction_id": "t-1", "search_request": [{
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
