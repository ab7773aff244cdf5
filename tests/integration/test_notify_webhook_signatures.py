"""Asymmetric webhook signatures on the real broker and database.

Notify signs with a key from its environment and publishes the public half at GET /v1/webhook-keys.
The reference receiver, given only that URL (no shared secret), verifies every delivery with the
published key; a proxy between them that alters a delivery gets it refused (401, so dead letters),
and once it stops altering, the re-sent dead letters are taken. The headers that crossed the wire
also verify by hand with `cryptography` (Ed25519) and with the off-the-shelf `standardwebhooks`
package (the v1 HMAC form of a "both" subscription).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook
from test_notify_delivery import NOTIFY_ENV, NotifyApi, Receiver, area, families, feed

from regsosek.auth import Role, mint
from regsosek.signing import HEADER as LEGACY_HEADER
from regsosek.signing import verify as verify_legacy
from regsosek.standard_webhooks import generate_signing_key, load_signing_key, public_key_text, whsec_form

from itkit import LOG_DIR, ServiceProcess, World, eventually, free_port

pytestmark = pytest.mark.integration

SIGNING_KEY = generate_signing_key()
KEY_ID = "it-" + uuid.uuid4().hex[:8]


class TamperingProxy:
    """Forwards notify's POSTs to the receiver, keeping what crossed; when `tamper` is set it changes
    the first family's welfare group in the body (still valid JSON) before forwarding."""

    def __init__(self, target: str) -> None:
        self.target, self.tamper, self.seen = target, False, []
        self.port = free_port()
        app = FastAPI()

        @app.post("/notify")
        async def forward(request: Request) -> Response:
            body = await request.body()
            headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
            if self.tamper:
                body = re.sub(rb'"welfare_group":(\d)', lambda m: b'"welfare_group":%d' % (int(m[1]) % 4 + 1), body,
                              count=1)
            self.seen.append((headers, body, self.tamper))
            async with httpx.AsyncClient(timeout=10) as c:
                r = await c.post(self.target, content=body, headers=headers)
            return Response(r.content, status_code=r.status_code, media_type="application/json")

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    async def __aenter__(self) -> TamperingProxy:
        self.task = asyncio.create_task(self.server.serve())
        await eventually(lambda: self.server.started, timeout=10, interval=0.05, what="the proxy to listen")
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 10)


@pytest.fixture(scope="module")
async def signing_world(stack):
    world = await World(["notify"]).setup()
    try:
        (notify,) = await world.start("notify", **NOTIFY_ENV, REGSOSEK_WEBHOOK_SIGNING_KEY=SIGNING_KEY,
                                      REGSOSEK_WEBHOOK_SIGNING_KEY_ID=KEY_ID)
        yield world, notify
    finally:
        await world.teardown()


def programme_api(notify: ServiceProcess, subject: str) -> NotifyApi:
    """A programme's client whose token names programmes and areas (subscriptions are scoped to them)."""
    api = NotifyApi(notify.url, subject=subject)
    tok = mint(subject=subject, role=Role.PROGRAMME, areas=["64"], programmes=["pkh", "sembako"])
    api.client.headers["authorization"] = f"Bearer {tok}"
    return api


async def start_receiver(world: World, **env: str) -> Receiver:
    port = free_port()
    proc = ServiceProcess("receiver", {"REGSOSEK_HTTP_HOST": "127.0.0.1", "REGSOSEK_HTTP_PORT": str(port), **env},
                          port, LOG_DIR / f"{world.tag}-receiver-sig-{uuid.uuid4().hex[:6]}.log")
    world.processes.append(proc)
    proc.start()
    await proc.wait_ready()
    return Receiver(proc)


async def published_keys(notify: ServiceProcess) -> list[dict]:
    async with httpx.AsyncClient(timeout=5) as c:  # no token: the keys are public
        r = await c.get(notify.url + "/v1/webhook-keys")
    assert r.status_code == 200, r.text
    return r.json()["keys"]


def ed25519_verifies(public: Ed25519PublicKey, headers: dict, body: bytes) -> bool:
    """The spec by hand: each v1a signature over "{webhook-id}.{webhook-timestamp}.{body}"."""
    content = f'{headers["webhook-id"]}.{headers["webhook-timestamp"]}.'.encode() + body
    for entry in headers["webhook-signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1a":
            try:
                public.verify(base64.b64decode(sig), content)
                return True
            except Exception:  # noqa: BLE001 - InvalidSignature: try the next one
                pass
    return False


async def test_ed25519_delivery_verified_with_the_published_key_and_a_tampered_one_refused(signing_world, producer):
    world, notify = signing_world

    keys = await published_keys(notify)
    assert [(k["kid"], k["status"], k["kty"], k["crv"]) for k in keys] == [(KEY_ID, "current", "OKP", "Ed25519")]
    assert keys[0]["whpk"] == public_key_text(load_signing_key(SIGNING_KEY).public_key())
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(keys[0]["x"] + "=="))

    # The receiver knows notify's key-set URL and nothing else: no shared secret.
    receiver = await start_receiver(world, REGSOSEK_RECEIVER_SECRET="",
                                    REGSOSEK_RECEIVER_WEBHOOK_KEYS_URL=notify.url + "/v1/webhook-keys")
    api = programme_api(notify, "PKH-SIG-" + uuid.uuid4().hex[:6])
    prefix = area()
    async with TamperingProxy(receiver.proc.url + "/notify") as proxy:
        try:
            # an ed25519 subscription keeps no secret, and refuses one
            r = await api.client.post("/v1/subscriptions", json={
                "callback_url": proxy.url, "signature": "ed25519", "secret": "s" * 40,
                "filters": {"area_prefixes": [prefix]}})
            assert r.status_code == 422, r.text
            r = await api.client.post("/v1/subscriptions", json={"callback_url": proxy.url,
                                                                  "filters": {"area_prefixes": [prefix]}})
            assert r.status_code == 201, r.text
            sub = r.json()
            assert sub["signature"] == "ed25519" and "secret" not in sub  # the default without a secret
            sub_id = sub["id"]

            fams = families(prefix, 4)
            ids = await feed(producer, world, fams, range(1, 3))
            await receiver.wait_unique(len(ids))
            stats = await receiver.stats()
            assert stats["rejected"] == 0 and stats["verified"]["ed25519"] >= 1 and stats["verified"]["hmac"] == 0

            headers, body, _ = proxy.seen[0]
            assert headers["webhook-id"] == headers["idempotency-key"]
            assert abs(int(headers["webhook-timestamp"]) - time.time()) < 120
            assert LEGACY_HEADER.lower() not in headers  # nothing symmetric for an ed25519 subscription
            assert ed25519_verifies(public, headers, body)
            assert not ed25519_verifies(public, headers, body + b" ")

            # A delivery altered on the way is refused by the receiver: 401, so notify keeps it as dead letters.
            proxy.tamper = True
            more = await feed(producer, world, fams, range(3, 4))

            async def all_dead():
                dead = await api.deliveries(sub_id, "dead")
                return dead if len(dead) == len(more) else None

            dead = await eventually(all_dead, timeout=30, what="the tampered deliveries to become dead letters")
            assert {d["event_id"] for d in dead} == set(more) and all(d["last_status"] == 401 for d in dead)
            tampered = [(h, b) for h, b, t in proxy.seen if t]
            assert tampered and not any(ed25519_verifies(public, h, b) for h, b in tampered)
            stats = await receiver.stats()
            assert stats["rejected"] >= 1 and stats["unique"] == len(ids)

            # Untouched again, the re-sent dead letters verify and arrive.
            proxy.tamper = False
            assert (await api.post(f"/v1/subscriptions/{sub_id}/redeliver", {"dead_letters": True}))["requeued"] \
                == len(more)
            await receiver.wait_unique(len(ids) + len(more))
            assert {e["event_id"] for e in await receiver.events()} == set(ids) | set(more)
        finally:
            await api.client.aclose()
            await receiver.client.aclose()
            await receiver.proc.stop()


async def test_both_carries_hmac_forms_an_off_the_shelf_verifier_accepts(signing_world, producer):
    world, notify = signing_world
    secret = "receiver-secret-" + uuid.uuid4().hex
    receiver = await start_receiver(world, REGSOSEK_RECEIVER_SECRET=secret)
    api = programme_api(notify, "SEMBAKO-SIG-" + uuid.uuid4().hex[:6])
    prefix = area()
    async with TamperingProxy(receiver.proc.url + "/notify") as proxy:
        try:
            r = await api.client.post("/v1/subscriptions", json={
                "callback_url": proxy.url, "secret": secret, "signature": "both", "filters": {"area_prefixes": [prefix]}})
            assert r.status_code == 201, r.text
            sub = r.json()
            assert sub["signature"] == "both" and sub["secret_whsec"] == whsec_form(secret)
            ids = await feed(producer, world, families(prefix, 2), range(1, 2))
            await receiver.wait_unique(len(ids))

            headers, body, _ = proxy.seen[0]
            assert [s.split(",")[0] for s in headers["webhook-signature"].split(" ")] == ["v1", "v1a"]
            assert Webhook(sub["secret_whsec"]).verify(body, headers, json_parse=False) is None
            assert verify_legacy(secret, headers[LEGACY_HEADER.lower()], body, now=time.time()) is None
            key = (await published_keys(notify))[0]
            assert ed25519_verifies(Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "==")),
                                    headers, body)
        finally:
            await api.client.aclose()
            await receiver.client.aclose()
            await receiver.proc.stop()
