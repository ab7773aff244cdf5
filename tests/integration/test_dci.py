"""Notify's DCI Social Registry API (/dci) on the real broker and database, with a callback receiver
(an in-process HTTP server standing for a programme system): eligibility-decided records fed into a
notify-only world's topic build the read model; sync search with pagination, sorting and the token's
scope; refusals (token, signature, malformed) never 5xx; async search -> on-search with matching
transaction_id and correlation_id; subscribe -> /registry/notify events through the delivery queue;
unsubscribe stops them; txn status of each kind; a callback answering ERR is dead-lettered.
Every request and response here is validated against vendor/dci/social_api_v1.0.0.yaml."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import random
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from regsosek.contracts import EligibilityDecided
from regsosek.envelope import encode, new_envelope
from regsosek.topics import Topic

from itkit import ROOT, World, eventually, free_port, token

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dci_spec  # noqa: E402

from notify import dci_domain as dd  # noqa: E402

pytestmark = pytest.mark.integration

SUBJECT = "PKH-MIS-IT"
SENDER = "pkh-mis-it"
PROGRAMMES = ("pkh", "sembako", "pbi_jkn", "blt_desa", "pip")
KEY = Ed25519PrivateKey.generate()
# a second programme system (requester B): its own sender, token subject and key
OTHER_SUBJECT, OTHER_SENDER = "SEMBAKO-MIS-IT", "sembako-mis-it"
OTHER_KEY = Ed25519PrivateKey.generate()
# encrypted messages: the registry's decryption key, and A's (B registered none)
REGISTRY_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ENCRYPTION_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_districts = itertools.count(random.randint(100, 600))


def area() -> str:
    return f"6472{next(_districts) % 1000:03d}"


def decision(sls: str, fid: str, seq: int, group: int, decile: int) -> EligibilityDecided:
    return EligibilityDecided.model_validate({
        "family_id": fid, "sls_id": sls, "submission_id": str(uuid.uuid4()), "version": seq, "decision_seq": seq,
        "welfare_group": group, "decile": decile, "model_version": "pmt-it", "rule_version": "rules-it",
        "decisions": [{"programme": p, "eligible": p in ("pkh", "pbi_jkn"), "rule_version": "rules-it",
                       "reasons": [f"{p} reason"]} for p in PROGRAMMES],
        "decided_at": (datetime(2022, 11, 1, tzinfo=UTC) + timedelta(minutes=seq)).isoformat()})


async def feed(producer, world: World, decisions: list[EligibilityDecided]) -> None:
    for d in decisions:
        env = new_envelope(d, source="/regsosek/classify", subject=d.family_id)
        await producer.send_and_wait(world.topic(Topic.ELIGIBILITY_DECIDED), encode(d), key=d.sls_id.encode(),
                                     headers=env.headers())


# ---------------------------------------------------------------- the programme system's callback receiver


class Callbacks:
    """Records every DCI callback POSTed to it (by path); answers ACK, or ERR on /registry/notify
    when told to."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.err_on_notify = False
        self.unavailable = False  # every POST answered 503 (a programme system that is down)
        self.app = FastAPI()

        @self.app.post("/{path:path}")
        async def receive(path: str, request: Request):
            body = await request.json()
            if self.unavailable:
                return JSONResponse({"detail": "down"}, status_code=503)
            self.received.append(("/" + path, body))
            cid = body.get("header", {}).get("message_id", "x")
            if path.endswith("registry/notify") and self.err_on_notify:
                return {"message": {"ack_status": "ERR", "timestamp": datetime.now(UTC).isoformat(),
                                    "correlation_id": cid,
                                    "error": {"code": "err.receiver_id.invalid", "message": "not for us"}}}
            return {"message": {"ack_status": "ACK", "timestamp": datetime.now(UTC).isoformat(), "correlation_id": cid}}

    def of(self, path: str) -> list[dict]:
        return [b for p, b in self.received if p.endswith(path)]

    async def wait(self, path: str, pred=lambda b: True, timeout: float = 30) -> dict:
        async def probe():
            return next((b for b in self.of(path) if pred(b)), None)
        return await eventually(probe, timeout=timeout, what=f"a callback on {path}")


@pytest.fixture(scope="module")
async def dci_world(stack, tmp_path_factory):
    def x(key: Ed25519PrivateKey) -> str:
        return base64.urlsafe_b64encode(key.public_key().public_bytes_raw()).rstrip(b"=").decode()
    folder = tmp_path_factory.mktemp("dci")
    requesters, registry_key = folder / "requesters.yaml", folder / "registry-encryption-key.pem"
    registry_key.write_bytes(REGISTRY_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    requesters.write_text(yaml.safe_dump({"requesters": {
        SENDER: {"subject": SUBJECT, "public_key": x(KEY), "encryption_key": dd.rsa_jwk(ENCRYPTION_KEY.public_key())},
        OTHER_SENDER: {"subject": OTHER_SUBJECT, "public_key": x(OTHER_KEY)}}}))
    callbacks = Callbacks()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(callbacks.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    serving = asyncio.create_task(server.serve())
    world = await World(["notify"]).setup()
    try:
        (notify,) = await world.start("notify", REGSOSEK_DCI_REQUESTERS_FILE=str(requesters),
                                      REGSOSEK_RETRY_BASE_S="0.05", REGSOSEK_RETRY_CAP_S="1.0",
                                      REGSOSEK_RETRY_MAX_S="1.0", REGSOSEK_DELIVERY_TIMEOUT_S="2.0",
                                      REGSOSEK_DCI_CALLBACK_ATTEMPTS="30",
                                      REGSOSEK_DCI_ENCRYPTION_KEY_FILE=str(registry_key),
                                      REGSOSEK_RETENTION_INTERVAL_S="0.5")
        async with httpx.AsyncClient(base_url=notify.url, timeout=10) as client:
            keys = (await client.get("/v1/webhook-keys")).json()["keys"]
            notify_key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(keys[0]["x"] + "=="))
            yield world, notify, client, callbacks, f"http://127.0.0.1:{port}/prog", notify_key
    finally:
        server.should_exit = True
        await serving
        await world.teardown()


def bearer(**kw) -> dict:
    kw.setdefault("programmes", ("pkh",))
    return {"authorization": "Bearer " + token("programme", SUBJECT, **kw)}


def signed(action: str, message: dict, sender_uri: str | None = None, key=KEY, **header) -> dict:
    h = {"version": "1.0.0", "message_id": str(uuid.uuid4()), "message_ts": datetime.now(UTC).isoformat(),
         "action": action, "sender_id": SENDER, "receiver_id": "regsosek", "total_count": 1, "is_msg_encrypted": False,
         **({"sender_uri": sender_uri} if sender_uri else {}), **header}
    return {"signature": dd.sign_envelope(key, h["sender_id"], h, message), "header": h, "message": message}


def other_bearer(**kw) -> dict:
    kw.setdefault("programmes", ("sembako",))
    return {"authorization": "Bearer " + token("programme", OTHER_SUBJECT, **kw)}


def other_signed(action: str, message: dict, sender_uri: str | None = None) -> dict:
    return signed(action, message, sender_uri, OTHER_KEY, sender_id=OTHER_SENDER)


def search_message(*criteria: dict, tid: str | None = None) -> dict:
    return {"transaction_id": tid or str(uuid.uuid4()), "search_request": [
        {"reference_id": f"ref-{i}", "timestamp": datetime.now(UTC).isoformat(), "search_criteria": c}
        for i, c in enumerate(criteria)]}


def area_query(prefix: str, **more) -> dict:
    return {"reg_type": dd.REG_TYPE, "reg_record_type": "Group", "query_type": "expression",
            "query": {"type": "expression", "value": {"expression": {"collection": "Group",
                                                                       "query": {"area_code": {"$eq": prefix}}}}},
            **more}


async def post(client, path: str, body: dict, headers: dict, status: int = 200, *, valid: bool = True) -> dict:
    """POSTs, checking the request against the specification (valid, or for a deliberately malformed
    one, invalid) and the answer always."""
    spec_path = path.removeprefix("/dci")
    if valid:
        dci_spec.request(spec_path, body)
    else:
        with pytest.raises(AssertionError):
            dci_spec.request(spec_path, body)
    r = await client.post(path, json=body, headers=headers)
    assert r.status_code == status, r.text
    dci_spec.response(spec_path, r.status_code, r.json())
    return r.json()


def verified(body: dict, key: Ed25519PublicKey) -> dict:
    assert dd.verify_envelope(key, body["signature"], body["header"], body.get("message", {})), "bad notify signature"
    return body


# ---------------------------------------------------------------- sync search


async def test_sync_search_scope_pagination_sorting(dci_world, producer):
    world, notify, client, callbacks, uri, notify_key = dci_world
    prefix = area()
    fams = [(f"{prefix}{i:03d}0001", f"{prefix}{i:03d}0001-0001-001") for i in range(1, 4)]
    await feed(producer, world, [decision(s, f, 5, group=1 + i, decile=2 + 3 * i) for i, (s, f) in enumerate(fams)])
    # newer decision for the first family, then a stale one: the newest stays
    await feed(producer, world, [decision(*fams[0], 9, group=1, decile=1), decision(*fams[0], 3, group=4, decile=10)])

    async def all_three():
        b = await post(client, "/dci/registry/sync/search", signed("search", search_message(area_query(prefix))),
                       bearer())
        item = b["message"]["search_response"][0]
        return b if item["pagination"]["total_count"] == 3 and any(
            r["decision_seq"] == 9 for r in item["data"]["reg_records"]) else None
    body = verified(await eventually(all_three, timeout=30, what="3 families searchable"), notify_key)
    assert body["header"]["action"] == "on-search" and body["header"]["receiver_id"] == SENDER
    records = body["message"]["search_response"][0]["data"]["reg_records"]
    assert [r["group_identifier"][0]["identifier_value"] for r in records] == [f for _, f in fams]
    first = records[0]
    assert (first["decision_seq"], first["welfare_group"], first["decile"]) == (9, 1, 1)
    # only the token's programme (pkh): no other programme's decision or reasons, no member identifiers
    assert all([d["programme"] for d in r["programme_decisions"]] == ["pkh"] for r in records)
    assert "pbi_jkn reason" not in str(body) and "member" not in str(records).lower()

    page2 = await post(client, "/dci/registry/sync/search", signed("search", search_message(
        area_query(prefix, pagination={"page_size": 2, "page_number": 2},
                   sort=[{"attribute_name": "decile", "sort_order": "desc"}]))), bearer())
    item = page2["message"]["search_response"][0]
    assert item["pagination"] == {"page_size": 2, "page_number": 2, "total_count": 3}
    assert [r["decile"] for r in item["data"]["reg_records"]] == [1]  # deciles 8, 5 | 1

    by_id = await post(client, "/dci/registry/sync/search", signed("search", search_message(
        {"query_type": "idtype-value", "query": {"type": "family_id", "value": fams[1][1]}},
        {"query_type": "predicate", "query": [
            {"expression1": {"attribute_name": "area_code", "operator": "eq", "attribute_value": prefix},
             "condition": "and",
             "expression2": {"attribute_name": "welfare_group", "operator": "ge", "attribute_value": "2"}}]},
        area_query("31"))), bearer())
    one, pred, outside = by_id["message"]["search_response"]
    assert [r["group_identifier"][0]["identifier_value"] for r in one["data"]["reg_records"]] == [fams[1][1]]
    assert [r["group_identifier"][0]["identifier_value"] for r in pred["data"]["reg_records"]] == [fams[1][1],
                                                                                                    fams[2][1]]
    assert (outside["status"], outside["status_reason_code"]) == ("rjct", "rjct.search_criteria.invalid")

    # a token for another province sees none of them
    elsewhere = await post(client, "/dci/registry/sync/search", signed("search", search_message(
        {"query_type": "idtype-value", "query": {"type": "family_id", "value": fams[1][1]}})), bearer(areas=("31",)))
    assert elsewhere["message"]["search_response"][0]["pagination"]["total_count"] == 0


async def test_refusals_are_the_specs_answers_never_5xx(dci_world):
    world, notify, client, callbacks, uri, notify_key = dci_world
    good = signed("search", search_message(area_query("6472")))
    # no token, a bad token
    r = await client.post("/dci/registry/sync/search", json=good)
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "err.request.unauthorized"
    dci_spec.response("/registry/sync/search", 401, r.json())
    r = await client.post("/dci/registry/search", json=good, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401
    # a signature by another key, a tampered message, none at all
    forged = signed("search", search_message(area_query("6472")), key=Ed25519PrivateKey.generate())
    b = await post(client, "/dci/registry/sync/search", forged, bearer(), 401)
    assert b["errors"][0]["code"] == "err.signature.invalid"
    tampered = {**good, "message": {**good["message"], "transaction_id": "other"}}
    assert (await post(client, "/dci/registry/search", tampered, bearer(), 401))["errors"][0]["code"] == \
        "err.signature.invalid"
    unsigned = {k: v for k, v in good.items() if k != "signature"}
    assert (await post(client, "/dci/registry/sync/search", unsigned, bearer(), 401))["errors"][0]["code"] == \
        "err.signature.missing"
    # a sender registered for another subject
    r = await client.post("/dci/registry/sync/search", json=good,
                          headers={"authorization": "Bearer " + token("programme", "SOMEONE-ELSE")})
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "err.sender_id.invalid"
    # malformed: not JSON, wrong action, no items, no sender_uri for an async call
    r = await client.post("/dci/registry/search", content=b"{", headers=bearer())
    assert r.status_code == 400 and r.json()["message"]["error"]["code"] == "err.request.bad"
    dci_spec.response("/registry/search", 400, r.json())
    b = await post(client, "/dci/registry/sync/search", signed("subscribe", good["message"]), bearer(), 400,
                   valid=False)
    assert b["header"]["status"] == "rjct" and b["header"]["status_reason_code"] == "rjct.action.invalid"
    b = await post(client, "/dci/registry/search", signed("search", {"transaction_id": "t", "search_request": []}),
                   bearer(), 400)
    assert b["message"]["ack_status"] == "ERR" and "search_request" in b["message"]["error"]["message"]
    b = await post(client, "/dci/registry/search", good, bearer(), 400)
    assert b["message"]["error"]["code"] == "err.sender_uri.invalid"
    # a bad criterion is that item's rjct, with the field
    b = await post(client, "/dci/registry/sync/search", signed("search", search_message(
        area_query("6472", pagination={"page_size": 0}))), bearer())
    item = b["message"]["search_response"][0]
    assert (item["status"], item["status_reason_code"]) == ("rjct", "rjct.pagination.invalid")
    assert "page_size" in item["status_reason_message"]


# ---------------------------------------------------------------- async search, txn status


async def test_async_search_calls_back_on_search_and_txn_status(dci_world, producer):
    world, notify, client, callbacks, uri, notify_key = dci_world
    prefix = area()
    await feed(producer, world, [decision(f"{prefix}0010001", f"{prefix}0010001-0001-001", 1, 1, 1)])
    await eventually(lambda: world.fetchval("notify", "select count(*) from registry_families where sls_id like $1",
                                            prefix + "%"), timeout=30, what="the family in the read model")
    tid = "txn-" + uuid.uuid4().hex
    ack = await post(client, "/dci/registry/search", signed("search", search_message(area_query(prefix), tid=tid),
                                                            sender_uri=uri), bearer())
    assert ack["message"]["ack_status"] == "ACK"
    cid = ack["message"]["correlation_id"]
    body = verified(await callbacks.wait("/registry/on-search", lambda b: b["message"].get("transaction_id") == tid),
                    notify_key)
    dci_spec.request("/registry/on-search", body)
    assert body["message"]["correlation_id"] == cid
    assert body["message"]["search_response"][0]["pagination"]["total_count"] == 1

    status_msg = {"transaction_id": "st-" + uuid.uuid4().hex, "txnstatus_request": {
        "reference_id": "s1", "txn_type": "search", "attribute_type": "transaction_id", "attribute_value": tid}}

    async def done():
        b = await post(client, "/dci/registry/sync/txn/status", signed("txn-status", status_msg), bearer())
        st = b["message"]["txnstatus_response"]["txn_status"]
        return b if st["search_response"] and st["search_response"][0]["status"] == "succ" else None
    b = verified(await eventually(done, timeout=15, what="search txn succ"), notify_key)
    assert b["message"]["txnstatus_response"]["txn_status"]["correlation_id"] == cid
    # the async form answers on txn/on-status
    ack = await post(client, "/dci/registry/txn/status", signed("txn-status", status_msg, sender_uri=uri), bearer())
    on_status = await callbacks.wait("/registry/txn/on-status",
                                     lambda b: b["message"].get("transaction_id") == status_msg["transaction_id"])
    dci_spec.request("/registry/txn/on-status", verified(on_status, notify_key))
    assert on_status["message"]["correlation_id"] == ack["message"]["correlation_id"]
    assert on_status["message"]["txnstatus_response"]["txn_status"]["search_response"][0]["reference_id"] == "ref-0"


# ---------------------------------------------------------------- subscribe, notify, unsubscribe, ERR


def subscribe_message(prefix: str) -> dict:
    return {"transaction_id": "sub-" + uuid.uuid4().hex, "subscribe_request": [
        {"reference_id": "s-1", "timestamp": datetime.now(UTC).isoformat(), "subscribe_criteria": {
            "reg_event_type": "REGISTER", "notify_record_type": "Group", "filter_type": "predicate",
            "filter": [{"expression1": {"attribute_name": "area_code", "operator": "eq", "attribute_value": prefix}}]}}]}


async def subscribe(client, callbacks, uri, prefix, notify_key) -> tuple[str, dict]:
    msg = subscribe_message(prefix)
    ack = await post(client, "/dci/registry/subscribe", signed("subscribe", msg, sender_uri=uri), bearer())
    assert ack["message"]["ack_status"] == "ACK"
    on_sub = verified(await callbacks.wait("/registry/on-subscribe",
                                           lambda b: b["message"].get("transaction_id") == msg["transaction_id"]),
                      notify_key)
    dci_spec.request("/registry/on-subscribe", on_sub)
    assert on_sub["message"]["correlation_id"] == ack["message"]["correlation_id"]
    item = on_sub["message"]["subscribe_response"][0]
    assert item["status"] == "succ", item
    return item["subscriptions"][0]["code"], msg


async def test_subscribe_notify_unsubscribe(dci_world, producer):
    world, notify, client, callbacks, uri, notify_key = dci_world
    prefix = area()
    code, msg = await subscribe(client, callbacks, uri, prefix, notify_key)
    fid = f"{prefix}0020001-0001-001"
    await feed(producer, world, [decision(f"{prefix}0020001", fid, 1, 2, 3)])

    def for_family(b):
        return any(e["data"]["reg_records"]["group_identifier"][0]["identifier_value"] == fid
                   for e in b["message"]["notify_event"])
    note = verified(await callbacks.wait("/registry/notify", for_family), notify_key)
    dci_spec.request("/registry/notify", note)
    rec = note["message"]["notify_event"][0]["data"]["reg_records"]
    assert [d["programme"] for d in rec["programme_decisions"]] == ["pkh"]  # the token's programmes only

    # txn status of the subscribe transaction
    b = await post(client, "/dci/registry/sync/txn/status", signed("txn-status", {
        "transaction_id": "st-" + uuid.uuid4().hex, "txnstatus_request": {
            "reference_id": "s", "txn_type": "subscribe", "attribute_type": "transaction_id",
            "attribute_value": msg["transaction_id"]}}), bearer())
    items = b["message"]["txnstatus_response"]["txn_status"]["search_response"]
    assert items and items[0]["status"] == "succ" and code in items[0]["status_reason_message"]

    # unsubscribe: on-unsubscribe, then nothing more arrives
    umsg = {"transaction_id": "uns-" + uuid.uuid4().hex, "timestamp": datetime.now(UTC).isoformat(),
            "subscription_codes": [code]}
    ack = await post(client, "/dci/registry/unsubscribe", signed("unsubscribe", umsg, sender_uri=uri), bearer())
    on_uns = verified(await callbacks.wait("/registry/on-unsubscribe",
                                           lambda b: b["message"].get("transaction_id") == umsg["transaction_id"]),
                      notify_key)
    dci_spec.request("/registry/on-unsubscribe", on_uns)
    assert on_uns["message"]["status"] == "succ"
    assert on_uns["message"]["subscription_status"] == [{"code": code, "status": "unsubscribe"}]
    assert on_uns["message"]["correlation_id"] == ack["message"]["correlation_id"]
    before = len(callbacks.of("/registry/notify"))
    fid2 = f"{prefix}0030001-0001-001"
    await feed(producer, world, [decision(f"{prefix}0030001", fid2, 1, 2, 3)])
    await eventually(lambda: world.fetchval("notify", "select 1 from registry_families where family_id = $1", fid2),
                     timeout=30, what="the later decision consumed")
    # a decision's deliveries are queued in the transaction that adds it to the registry: none was
    # queued for the later one (the earlier one was queued for the subscription, and delivered)
    deliveries = "select count(*) from deliveries where family_id = $1"
    assert (await world.fetchval("notify", deliveries, fid), await world.fetchval("notify", deliveries, fid2)) == (1, 0)
    assert len(callbacks.of("/registry/notify")) == before
    # a second unsubscribe: already unsubscribed
    umsg2 = {**umsg, "transaction_id": "uns-" + uuid.uuid4().hex}
    await post(client, "/dci/registry/unsubscribe", signed("unsubscribe", umsg2, sender_uri=uri), bearer())
    again = await callbacks.wait("/registry/on-unsubscribe",
                                 lambda b: b["message"].get("transaction_id") == umsg2["transaction_id"])
    assert again["message"]["status_reason_code"] == "rjct.event.already_unsubscribed"


async def test_an_err_answer_dead_letters_without_retrying(dci_world, producer):
    world, notify, client, callbacks, uri, notify_key = dci_world
    prefix = area()
    code, _ = await subscribe(client, callbacks, uri, prefix, notify_key)
    callbacks.err_on_notify = True
    try:
        await feed(producer, world, [decision(f"{prefix}0040001", f"{prefix}0040001-0001-001", 1, 1, 1)])
        row = await eventually(lambda: world.fetch(
            "notify", "select status, attempts, last_error from deliveries where subscription_id = $1::uuid "
                      "and status = 'dead'", code), timeout=30, what="the delivery dead-lettered")
    finally:
        callbacks.err_on_notify = False
    assert row[0]["attempts"] == 1 and row[0]["last_error"] == "ERR err.receiver_id.invalid: not for us"
    log = await world.fetch("notify", "select outcome, error from delivery_attempts where subscription_id = $1::uuid",
                            code)
    assert [r["outcome"] for r in log] == ["refused"]


# ---------------------------------------------------------------- or / not, replay, isolation, restart


def family_ids(item: dict) -> list[str]:
    return [r["group_identifier"][0]["identifier_value"] for r in item["data"]["reg_records"]]


async def three_families(world, producer) -> tuple[str, list[str]]:
    """Three families in a new area: welfare groups 1, 2, 3 and deciles 2, 5, 8; once searchable."""
    prefix = area()
    fams = [(f"{prefix}{i:03d}0001", f"{prefix}{i:03d}0001-0001-001") for i in range(1, 4)]
    await feed(producer, world, [decision(s, f, 1, group=1 + i, decile=2 + 3 * i) for i, (s, f) in enumerate(fams)])
    await eventually(lambda: world.fetchval(
        "notify", "select nullif(count(*), 0) from registry_families where sls_id like $1 having count(*) = 3",
        prefix + "%"), timeout=30, what="3 families in the read model")
    return prefix, [f for _, f in fams]


async def test_or_and_not_in_expression_and_predicate_queries(dci_world, producer):
    world, notify, client, callbacks, uri, notify_key = dci_world
    prefix, fams = await three_families(world, producer)

    def expression(q: dict) -> dict:
        return {"reg_type": dd.REG_TYPE, "reg_record_type": "Group", "query_type": "expression",
                "query": {"type": "expression", "value": {"expression": {"collection": "Group", "query": q}}}}

    def e(attr: str, op: str, value) -> dict:
        return {"attribute_name": attr, "operator": op, "attribute_value": value}

    b = await post(client, "/dci/registry/sync/search", signed("search", search_message(
        expression({"area_code": prefix, "$or": [{"decile": {"$le": 2}}, {"decile": {"$ge": 8}}]}),
        expression({"area_code": prefix, "$nor": [{"welfare_group": 1}]}),
        expression({"area_code": prefix, "decile": {"$not": {"$in": ["2", "8"]}}}),
        {"query_type": "predicate", "query": [
            {"seq_num": 1, "expression1": e("area_code", "eq", prefix)},
            {"seq_num": 2, "expression1": e("welfare_group", "ge", "1"), "condition": "not",
             "expression2": e("decile", "eq", "5")}]},
        {"query_type": "predicate", "query": [
            {"seq_num": 1, "expression1": e("area_code", "eq", prefix)},
            {"seq_num": 2, "expression1": e("welfare_group", "eq", "1"), "condition": "or",
             "expression2": e("decile", "eq", "5")}]},
        {"query_type": "predicate", "query": [
            {"seq_num": 1, "expression1": e("area_code", "eq", prefix)},
            {"seq_num": 2, "condition": "not", "expression1": e("welfare_group", "le", "2")}]},
    )), bearer())
    or_, nor, not_in, and_not, pred_or, pred_not = b["message"]["search_response"]
    assert family_ids(or_) == [fams[0], fams[2]]
    assert family_ids(nor) == [fams[1], fams[2]]
    assert family_ids(not_in) == [fams[1]]
    assert family_ids(and_not) == [fams[0], fams[2]]
    assert family_ids(pred_or) == [fams[0], fams[1]]
    assert family_ids(pred_not) == [fams[2]]


async def test_a_replayed_or_stale_message_is_refused(dci_world):
    world, notify, client, callbacks, uri, notify_key = dci_world
    once = signed("search", search_message(area_query("6472")))
    await post(client, "/dci/registry/sync/search", once, bearer())
    again = verified(await post(client, "/dci/registry/sync/search", once, bearer(), 409), notify_key)
    assert (again["header"]["status"], again["header"]["status_reason_code"]) == ("rjct", "rjct.message_id.duplicate")

    async_once = signed("search", search_message(area_query("6472")), sender_uri=uri)
    assert (await post(client, "/dci/registry/search", async_once, bearer()))["message"]["ack_status"] == "ACK"
    refused = await post(client, "/dci/registry/search", async_once, bearer(), 409)
    assert refused["message"]["ack_status"] == "ERR" and "rjct.message_id.duplicate" in refused["message"]["error"][
        "message"]

    stale = signed("search", search_message(area_query("6472")),
                   message_ts=(datetime.now(UTC) - timedelta(minutes=10)).isoformat())
    b = await post(client, "/dci/registry/sync/search", stale, bearer(), 400)
    assert b["header"]["status_reason_code"] == "rjct.message_ts.invalid"


async def test_one_requester_never_sees_anothers_subscriptions_results_or_callbacks(dci_world, producer):
    world, notify, client, callbacks, uri, notify_key = dci_world
    prefix = area()
    code, sub_msg = await subscribe(client, callbacks, uri, prefix, notify_key)  # A (pkh, areas 64)
    tid = "txn-" + uuid.uuid4().hex
    await post(client, "/dci/registry/search", signed("search", search_message(area_query(prefix), tid=tid),
                                                      sender_uri=uri), bearer())
    await callbacks.wait("/prog/registry/on-search", lambda b: b["message"].get("transaction_id") == tid)
    b_uri, b_token = uri + "/b", other_bearer(areas=("31",))  # B (sembako, areas 31)

    # B cannot read A's transactions
    for txn_type, value in (("search", tid), ("subscribe", sub_msg["transaction_id"])):
        b = await post(client, "/dci/registry/sync/txn/status", other_signed("txn-status", {
            "transaction_id": "st-" + uuid.uuid4().hex, "txnstatus_request": {
                "reference_id": "r", "txn_type": txn_type, "attribute_type": "transaction_id",
                "attribute_value": value}}), b_token)
        assert b["message"]["txnstatus_response"]["txn_status"]["search_response"] == []
    # B cannot search A's area, nor unsubscribe A's subscription
    b = await post(client, "/dci/registry/sync/search", other_signed("search", search_message(area_query(prefix))),
                   b_token)
    assert b["message"]["search_response"][0]["status_reason_code"] == "rjct.search_criteria.invalid"
    umsg = {"transaction_id": "uns-" + uuid.uuid4().hex, "timestamp": datetime.now(UTC).isoformat(),
            "subscription_codes": [code]}
    await post(client, "/dci/registry/unsubscribe", other_signed("unsubscribe", umsg, sender_uri=b_uri), b_token)
    on_uns = await callbacks.wait("/prog/b/registry/on-unsubscribe",
                                  lambda b: b["message"].get("transaction_id") == umsg["transaction_id"])
    assert on_uns["message"]["status_reason_code"] == "rjct.subscription_code.invalid"
    assert on_uns["header"]["receiver_id"] == OTHER_SENDER

    # A's subscription still delivers, to A; none of A's callbacks reached B's address
    fid = f"{prefix}0050001-0001-001"
    await feed(producer, world, [decision(f"{prefix}0050001", fid, 1, 2, 3)])
    await callbacks.wait("/prog/registry/notify", lambda b: fid in str(b["message"]))
    to_b = [b for p, b in callbacks.received if p.startswith("/prog/b/")]
    assert to_b and all(b["header"]["receiver_id"] == OTHER_SENDER for b in to_b)
    assert not any(prefix in str(b) for b in to_b)


async def test_encrypted_search_answered_and_called_back_encrypted(dci_world, producer):
    world, notify, client, callbacks, uri, notify_key = dci_world
    prefix = area()
    fid = f"{prefix}0070001-0001-001"
    await feed(producer, world, [decision(f"{prefix}0070001", fid, 1, 1, 1)])
    await eventually(lambda: world.fetchval("notify", "select 1 from registry_families where family_id = $1", fid),
                     timeout=30, what="the family in the read model")
    (jwk,) = (await client.get("/dci/registry/encryption-keys")).json()["keys"]
    assert dd.rsa_jwk(REGISTRY_KEY.public_key()) == jwk

    def sealed(message: dict, **header) -> dict:
        enc = dd.encrypt_message(dd.rsa_public_key(jwk), message)
        body = signed("search", message, is_msg_encrypted=True, **header)
        h = body["header"]
        return {"signature": dd.sign_envelope(KEY, SENDER, h, enc), "header": h, "message": enc}

    answer = verified(await post(client, "/dci/registry/sync/search", sealed(search_message(area_query(prefix))),
                                 bearer()), notify_key)
    assert answer["header"]["is_msg_encrypted"] is True and fid not in str(answer)
    found = dd.decrypt_message(ENCRYPTION_KEY, answer["message"])
    assert family_ids(found["search_response"][0]) == [fid]

    tid = "txn-" + uuid.uuid4().hex
    ack = await post(client, "/dci/registry/search", sealed(search_message(area_query(prefix), tid=tid),
                                                            sender_uri=uri), bearer())
    cid = ack["message"]["correlation_id"]

    def ours(b: dict) -> bool:
        return b["header"].get("is_msg_encrypted") and dd.decrypt_message(
            ENCRYPTION_KEY, b["message"])["transaction_id"] == tid
    body = verified(await callbacks.wait("/prog/registry/on-search", ours), notify_key)
    dci_spec.request("/registry/on-search", body)
    message = dd.decrypt_message(ENCRYPTION_KEY, body["message"])
    assert message["correlation_id"] == cid and family_ids(message["search_response"][0]) == [fid]


async def test_finished_dci_bookkeeping_is_pruned_after_its_retention(dci_world):
    world, notify, client, callbacks, uri, notify_key = dci_world
    tag = uuid.uuid4().hex[:8]
    OLD, RECENT = timedelta(days=100), timedelta(days=1)  # the default retention is 90 days
    for name, status, age in (("old-done", "delivered", OLD), ("old-dead", "dead", OLD),
                              ("new-done", "delivered", RECENT), ("old-pending", "pending", OLD)):
        # not due (next_attempt_at ahead): the callback worker leaves these rows alone
        await world.fetch("notify", "insert into dci_callbacks (correlation_id, requester, url, action, header, status, "
                                    "created_at, finished_at, next_attempt_at) values ($1, 'IT', "
                                    "'http://127.0.0.1:9/x', 'on-search', '{}', $2, now() - interval '100 days', "
                                    "now() - $3::interval, now() + interval '1 day')",
                          f"{tag}-{name}", status, age)
    for name, status, age in (("old-succ", "succ", OLD), ("new-succ", "succ", RECENT),
                              ("old-pdng", "pdng", OLD)):
        await world.fetch("notify", "insert into dci_transactions (correlation_id, requester, kind, transaction_id, "
                                    "status, updated_at) values ($1, 'IT', 'search', 't', $2, now() - $3::interval)",
                          f"{tag}-{name}", status, age)

    async def left() -> set[str] | None:
        rows = await world.fetch("notify", "select correlation_id from dci_callbacks where correlation_id like $1 "
                                           "union all select correlation_id from dci_transactions "
                                           "where correlation_id like $1", tag + "-%")
        names = {r["correlation_id"].removeprefix(tag + "-") for r in rows}
        return names if not names & {"old-done", "old-dead", "old-succ"} else None
    # what is still pending stays, however old its times
    assert await eventually(left, timeout=30, what="the retention task") == {
        "new-done", "old-pending", "new-succ", "old-pdng"}


async def test_a_callback_queued_while_the_requester_is_down_arrives_after_notify_restarts(dci_world, producer):
    world, notify, client, callbacks, uri, notify_key = dci_world
    prefix = area()
    await feed(producer, world, [decision(f"{prefix}0060001", f"{prefix}0060001-0001-001", 1, 1, 1)])
    await eventually(lambda: world.fetchval("notify", "select 1 from registry_families where sls_id like $1",
                                            prefix + "%"), timeout=30, what="the family in the read model")
    tid = "txn-" + uuid.uuid4().hex
    callbacks.unavailable = True
    try:
        ack = await post(client, "/dci/registry/search", signed(
            "search", search_message(area_query(prefix), tid=tid), sender_uri=uri), bearer())
        cid = ack["message"]["correlation_id"]
        await eventually(lambda: world.fetchval(
            "notify", "select 1 from dci_callbacks where correlation_id = $1 and status = 'pending' "
                      "and attempts >= 1 and last_status = 503", cid), timeout=30, what="a failed callback attempt")
        await notify.stop()
    finally:
        callbacks.unavailable = False
        if not notify.alive:
            notify.start()
            await notify.wait_ready()
    # Stopped while an attempt was in flight, notify left that callback leased: the next instance sends
    # it once the lease ends (notify.delivery.lease_for: the 2 s delivery timeout + 5 s resolution + 30 s
    # here), so the wait allows for the lease (CI once stopped it mid-attempt and 30 s were not enough).
    body = verified(await callbacks.wait("/prog/registry/on-search", lambda b: b["message"].get("transaction_id") == tid,
                                         timeout=90), notify_key)
    dci_spec.request("/registry/on-search", body)
    assert body["message"]["correlation_id"] == cid
    assert family_ids(body["message"]["search_response"][0]) == [f"{prefix}0060001-0001-001"]
    (row,) = await eventually(lambda: world.fetch(
        "notify", "select status, attempts, message from dci_callbacks where correlation_id = $1 "
                  "and status = 'delivered'", cid), timeout=15, what="the callback marked delivered")
    assert row["attempts"] >= 2 and row["message"] is None


# ---------------------------------------------------------------- a family found by a member's NIK


async def test_a_by_name_requester_finds_a_family_by_a_members_nik_and_others_cannot(dci_world, producer):
    """A requester whose programme is granted member identifiers (PBI-JKN) searches by a member's NIK
    (issue 14 item 2): notify's member index (keyed hashes of intake's sealed identity feed) finds the
    family, and the record carries its own programme's member-level decisions with each member's NIK.
    A PKH requester's search by NIK is refused, and a NIK of no current member finds nothing."""
    from regsosek.contracts import MemberIdentities
    from regsosek.contracts.identities import b64, identity_aad, identity_plaintext
    from regsosek.crypto import identity_keyring

    world, notify, client, callbacks, uri, notify_key = dci_world
    prefix = area()
    sls, fid = f"{prefix}0010001", f"{prefix}0010001-0001-001"
    d = EligibilityDecided.model_validate({**decision(sls, fid, 1, group=1, decile=1).model_dump(mode="json"),
                                           "member_decisions": [
        {"line_no": n, "programme": "pbi_jkn", "eligible": True, "rule_version": "rules-it", "reasons": ["r"]}
        for n in (1, 2)]})
    niks = {1: f"{prefix}0101800001"[:16], 2: f"{prefix}0101900002"[:16]}
    sealed = identity_keyring("", "", "local").seal(identity_plaintext(niks), identity_aad(fid, d.submission_id))
    ids = MemberIdentities(family_id=fid, sls_id=sls, submission_id=d.submission_id, members=2, sealed=b64(sealed))
    env = new_envelope(ids, source="/regsosek/intake", subject=fid)
    await producer.send_and_wait(world.topic(Topic.MEMBER_IDENTITIES), encode(ids), key=sls.encode(),
                                 headers=env.headers())
    await feed(producer, world, [d])

    def by_nik(nik: str) -> dict:
        return {"query_type": "idtype-value", "query": {"type": "NIK", "value": nik}}

    async def found():
        b = await post(client, "/dci/registry/sync/search", signed("search", search_message(by_nik(niks[2]))),
                       bearer(programmes=("pbi_jkn",)))
        return b if b["message"]["search_response"][0]["pagination"]["total_count"] == 1 else None

    body = verified(await eventually(found, timeout=30, what="the family found by a member's NIK"), notify_key)
    (record,) = body["message"]["search_response"][0]["data"]["reg_records"]
    assert record["group_identifier"][0]["identifier_value"] == fid
    assert [(m["line_no"], m["member_identifier"][0]["identifier_value"], m["programme"])
            for m in record["member_decisions"]] == [(1, niks[1], "pbi_jkn"), (2, niks[2], "pbi_jkn")]

    nobody = await post(client, "/dci/registry/sync/search", signed("search", search_message(
        by_nik(f"{prefix}9999999999"[:16]))), bearer(programmes=("pbi_jkn",)))
    assert nobody["message"]["search_response"][0]["pagination"]["total_count"] == 0

    pkh = await post(client, "/dci/registry/sync/search", signed("search", search_message(by_nik(niks[2]))), bearer())
    item = pkh["message"]["search_response"][0]
    assert (item["status"], item["status_reason_code"]) == ("rjct", "rjct.search_criteria.invalid")
    assert niks[2] not in str(pkh)


# ---------------------------------------------------------------- fuzzed from the specification

FUZZED = ["/registry/search", "/registry/sync/search", "/registry/subscribe", "/registry/unsubscribe",
          "/registry/txn/status", "/registry/sync/txn/status"]


async def test_generated_requests_signed_by_a_requester_are_answered_as_the_spec_says(dci_world):
    """schemathesis draws requests for every endpoint a requester calls from the DCI specification;
    dci_fuzz_hooks.py gives each the envelope and signature of the registered requester, so they
    reach the endpoints' own handling of the message. No answer may be 5xx, every answer must be
    one the specification describes, and no 4xx may repeat a value of the request
    (api_fuzz_checks.py; a 200 that rejects an item may name the caller's own reference or
    subscription codes, as the specification has it)."""
    world, notify, client, callbacks, uri, notify_key = dci_world
    raw_key = KEY.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": "dci_fuzz_hooks",
           "REGSOSEK_FUZZ_DCI_SENDER": SENDER, "REGSOSEK_FUZZ_DCI_KEY": base64.b64encode(raw_key).decode(),
           "REGSOSEK_FUZZ_DCI_CALLBACK": uri,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "integration"), os.environ.get("PYTHONPATH", "")])}
    run = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).with_name("st")), "run", str(ROOT / "vendor" / "dci" / "social_api_v1.0.0.yaml"),
         "--url", f"{notify.url}/dci", "--include-path-regex", "^(" + "|".join(map(re.escape, FUZZED)) + ")$",
         "--checks", "not_a_server_error,no_request_value_in_errors,response_schema_conformance",
         "-H", f"Authorization: {bearer()['authorization']}", "--max-examples", "40", "--seed", "2022",
         "--request-timeout", "20", "--no-color"],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    tail = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, f"the DCI fuzz found failures:\n{tail}"
    generated = re.search(r"(\d+) generated", run.stdout)
    assert generated and int(generated.group(1)) >= 100, tail
