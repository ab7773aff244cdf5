"""The reference receiver with Ed25519 (Standard Webhooks v1a) signatures: a configured public key or
the sender's published key set; bad, missing and stale signatures get 401; an HMAC signature made with
the published development secret is not taken by a receiver set up for Ed25519; a rotation to a key
not seen yet is picked up by fetching the keys again."""

from __future__ import annotations

import json
import time
import uuid

import httpx
from test_receiver import event, message

from regsosek.signing import sign
from regsosek.standard_webhooks import (
    generate_signing_key,
    jwk,
    load_signing_key,
    public_key_text,
    sign_ed25519,
    sign_hmac,
    webhook_headers,
)
from regsosek_tools.receiver import DEFAULT_SECRET, SIGNATURE_HEADER, create_app

KEY = load_signing_key(generate_signing_key())
PUBLIC = public_key_text(KEY.public_key())


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver")


def signed(body: bytes, *, key=KEY, t: int | None = None, msg_id: str | None = None, extra: list[str] = ()) -> dict:
    msg_id = msg_id or str(uuid.uuid4())
    t = int(time.time()) if t is None else t
    return {"content-type": "application/json", "Idempotency-Key": msg_id,
            **webhook_headers(msg_id, t, [sign_ed25519(key, msg_id, t, body), *extra])}


async def stats(c: httpx.AsyncClient) -> dict:
    return (await c.get("/stats")).json()


async def test_configured_public_key_accepts_good_and_refuses_bad_missing_and_stale():
    async with client_for(create_app(public_keys=[PUBLIC], db_path="")) as c:
        mid, body = message(event())
        r = await c.post("/notify", content=body, headers=signed(body))
        assert r.status_code == 200 and r.json()["message"]["ack_status"] == "ACK"

        tampered = body.replace(b'"decile": 3', b'"decile": 9')
        assert tampered != body
        assert (await c.post("/notify", content=tampered, headers=signed(body))).status_code == 401
        other = load_signing_key(generate_signing_key())
        assert (await c.post("/notify", content=body, headers=signed(body, key=other))).status_code == 401
        stale = await c.post("/notify", content=body, headers=signed(body, t=int(time.time()) - 301))
        assert stale.status_code == 401 and stale.json()["message"]["error"] == "timestamp outside tolerance"
        missing = await c.post("/notify", content=body, headers={"content-type": "application/json"})
        assert missing.status_code == 401
        s = await stats(c)
        assert (s["messages"], s["rejected"], s["unique"]) == (1, 4, 1)
        assert s["verified"] == {"ed25519": 1, "hmac": 0}


async def test_a_receiver_set_up_for_ed25519_does_not_take_the_development_hmac_secret():
    async with client_for(create_app(public_keys=[PUBLIC], db_path="")) as c:
        _, body = message(event())
        t, msg_id = int(time.time()), "m-1"
        legacy = {"content-type": "application/json", SIGNATURE_HEADER: sign(DEFAULT_SECRET, t, body)}
        assert (await c.post("/notify", content=body, headers=legacy)).status_code == 401
        v1 = webhook_headers(msg_id, t, [sign_hmac(DEFAULT_SECRET, msg_id, t, body)])
        assert (await c.post("/notify", content=body, headers=v1)).status_code == 401
        assert (await stats(c))["unique"] == 0


async def test_a_receiver_with_both_takes_either_and_counts_which():
    secret = "receiver-secret-0123456789abcdef0123"
    async with client_for(create_app(secret, public_keys=[PUBLIC], db_path="")) as c:
        _, b1 = message(event())
        _, b2 = message(event())
        _, b3 = message(event())
        t = int(time.time())
        assert (await c.post("/notify", content=b1, headers=signed(b1))).status_code == 200
        assert (await c.post("/notify", content=b2, headers=webhook_headers("m2", t, [sign_hmac(secret, "m2", t, b2)]))
                ).status_code == 200
        assert (await c.post("/notify", content=b3, headers={SIGNATURE_HEADER: sign(secret, t, b3)})).status_code == 200
        assert (await stats(c))["verified"] == {"ed25519": 1, "hmac": 2}


def keys_server(*keys) -> tuple[httpx.MockTransport, dict]:
    served = {"keys": list(keys), "fetches": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/webhook-keys"
        served["fetches"] += 1
        if served.get("down"):
            return httpx.Response(503)
        return httpx.Response(200, json={"keys": [
            {**jwk(k.public_key(), f"k{i}"), "status": "current" if i == 0 else "previous"}
            for i, k in enumerate(served["keys"])]})

    return httpx.MockTransport(handler), served


async def test_published_keys_are_fetched_and_a_rotation_is_picked_up_with_one_more_fetch():
    old, new = load_signing_key(generate_signing_key()), load_signing_key(generate_signing_key())
    transport, served = keys_server(old)
    app = create_app(keys_url="http://notify/v1/webhook-keys", keys_transport=transport, db_path="")
    async with client_for(app) as c:
        _, b1 = message(event())
        assert (await c.post("/notify", content=b1, headers=signed(b1, key=old))).status_code == 200
        assert served["fetches"] == 1
        _, b2 = message(event())
        assert (await c.post("/notify", content=b2, headers=signed(b2, key=old))).status_code == 200
        assert served["fetches"] == 1  # cached

        served["keys"] = [new, old]  # notify rotated: new current, old previous
        app.state.published_keys.fetched_at -= 60  # past the minimum wait between early fetches
        _, b3 = message(event())
        assert (await c.post("/notify", content=b3, headers=signed(b3, key=new))).status_code == 200
        assert served["fetches"] == 2

        # a forged signature does not make it fetch again and again
        forged = load_signing_key(generate_signing_key())
        for _ in range(3):
            _, b = message(event())
            assert (await c.post("/notify", content=b, headers=signed(b, key=forged))).status_code == 401
        assert served["fetches"] == 2
        assert (await stats(c))["unique"] == 3


async def test_keys_unavailable_is_503_so_the_sender_retries():
    transport, served = keys_server(KEY)
    served["down"] = True
    async with client_for(create_app(keys_url="http://notify/v1/webhook-keys", keys_transport=transport,
                                     db_path="")) as c:
        _, body = message(event())
        r = await c.post("/notify", content=body, headers=signed(body))
        assert r.status_code == 503
        assert (await stats(c))["unique"] == 0


async def test_the_receiver_verifies_the_raw_bytes_not_a_reserialisation():
    async with client_for(create_app(public_keys=[PUBLIC], db_path="")) as c:
        _, body = message(event())
        spaced = json.dumps(json.loads(body), indent=2).encode()  # same JSON, other bytes
        assert (await c.post("/notify", content=spaced, headers=signed(body))).status_code == 401
        assert (await c.post("/notify", content=spaced, headers=signed(spaced))).status_code == 200
