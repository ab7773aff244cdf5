"""The reference receiver: signatures, ACK, de-duplication, ordering, faults, persistence."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from regsosek.signing import sign
from regsosek_tools.receiver import ELIGIBILITY_TYPE, SIGNATURE_HEADER, create_app

SECRET = "test-receiver-secret-0123456789abcdef"


def event(family_id: str = "64720100010001-0001-001", *, version: int = 1, decided_at: str = "2022-11-01T10:00:00+00:00",
          event_id: str | None = None, eligible: tuple[str, ...] = ("pkh", "sembako")) -> dict:
    programmes = ("pkh", "sembako", "pbi_jkn", "blt_desa", "pip")
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": ELIGIBILITY_TYPE,
        "subject": family_id,
        "time": decided_at,
        "data": {
            "family_id": family_id, "sls_id": family_id[:14], "submission_id": str(uuid.uuid4()), "version": version,
            "welfare_group": 2, "decile": 3, "model_version": "pmt-illustrative-2022.1", "rule_version": "rules-2022.1",
            "decisions": [{"programme": p, "eligible": p in eligible, "rule_version": "rules-2022.1", "reasons": []}
                          for p in programmes],
            "decided_at": decided_at,
        },
    }


def message(*events: dict) -> tuple[str, bytes]:
    message_id = str(uuid.uuid4())
    body = {
        "header": {"version": "1.0.0", "message_id": message_id, "message_ts": "2022-11-01T10:00:01+00:00",
                   "action": "notify", "sender_id": "regsosek", "receiver_id": "sub-1", "total_count": len(events)},
        "message": {"transaction_id": str(uuid.uuid4()), "notify_event": list(events)},
    }
    return message_id, json.dumps(body).encode()


def make_client(**kw) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(SECRET, **kw)), base_url="http://receiver")


async def post(client: httpx.AsyncClient, body: bytes, *, secret: str = SECRET, t: int | None = None, message_id: str = "m"):
    headers = {"content-type": "application/json", "Idempotency-Key": message_id,
               "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
               SIGNATURE_HEADER: sign(secret, int(time.time()) if t is None else t, body)}
    return await client.post("/notify", content=body, headers=headers)


@pytest.fixture
async def client():
    async with make_client(db_path="") as c:
        yield c


async def test_good_signature_is_acknowledged(client):
    mid, body = message(event())
    r = await post(client, body, message_id=mid)
    assert r.status_code == 200
    assert r.json() == {"message": {"ack_status": "ACK", "correlation_id": mid}}
    s = (await client.get("/stats")).json()
    assert (s["received"], s["unique"], s["duplicates"], s["families"]) == (1, 1, 0, 1)
    assert s["by_programme_eligible"] == {"pkh": 1, "sembako": 1}


async def test_bad_signature_is_refused(client):
    _, body = message(event())
    assert (await post(client, body, secret="another-secret-0123456789abcdef0123")).status_code == 401
    tampered = body.replace(b'"decile": 3', b'"decile": 9')
    headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(SECRET, int(time.time()), body)}
    assert (await client.post("/notify", content=tampered, headers=headers)).status_code == 401
    assert (await client.post("/notify", content=body, headers={"content-type": "application/json"})).status_code == 401
    s = (await client.get("/stats")).json()
    assert (s["received"], s["rejected"]) == (0, 3)


async def test_stale_timestamp_is_refused(client):
    _, body = message(event())
    r = await post(client, body, t=int(time.time()) - 301)
    assert r.status_code == 401
    assert "tolerance" in r.json()["message"]["error"]
    assert (await post(client, body, t=int(time.time()) - 200)).status_code == 200


async def test_duplicate_event_is_counted_once(client):
    e = event()
    for _ in range(2):
        mid, body = message(e)
        assert (await post(client, body, message_id=mid)).status_code == 200
    mid, body = message(e, event("64720100010001-0002-002"))  # a batch with one repeat, one new
    assert (await post(client, body, message_id=mid)).status_code == 200
    s = (await client.get("/stats")).json()
    assert (s["received"], s["unique"], s["duplicates"], s["families"]) == (4, 2, 2, 2)
    got = (await client.get("/events", params={"family_id": e["subject"]})).json()
    assert got["count"] == 1 and got["events"][0]["event_id"] == e["event_id"]
    assert got["events"][0]["traceparent"].startswith("00-0af7651916cd43dd")


async def test_older_event_of_a_family_is_out_of_order(client):
    fid = "64720100010001-0003-003"
    _, b2 = message(event(fid, version=2, decided_at="2022-11-02T10:00:00+00:00", eligible=("sembako",)))
    _, b1 = message(event(fid, version=1, decided_at="2022-11-01T10:00:00+00:00"))
    assert (await post(client, b2)).status_code == 200
    assert (await post(client, b1)).status_code == 200
    s = (await client.get("/stats")).json()
    assert (s["unique"], s["out_of_order"], s["families"]) == (2, 1, 1)
    assert s["by_programme_eligible"] == {"sembako": 1}  # the newest decision counts
    assert (await client.get("/families")).json()["families"][fid]["version"] == 2


async def test_malformed_message_is_400(client):
    body = b'{"header": {}}'
    assert (await post(client, body)).status_code == 400


async def test_injected_faults(client):
    assert (await client.post("/control", json={"status_429_rate": 1, "retry_after_s": 7})).status_code == 200
    _, body = message(event())
    r = await post(client, body)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    await client.post("/control", json={"status_429_rate": 0, "fail_rate": 1})
    assert (await post(client, body)).status_code == 500
    await client.post("/control", json={"fail_rate": 0, "fail_after_rate": 1})
    assert (await post(client, body)).status_code == 500  # processed, but the sender is told otherwise
    await client.post("/control", json={"fail_after_rate": 0})
    assert (await post(client, body)).status_code == 200
    s = (await client.get("/stats")).json()
    assert (s["received"], s["unique"], s["duplicates"]) == (2, 1, 1)
    assert s["injected_faults"] == {"429": 1, "500": 1, "500_after_processing": 1}
    assert (await client.post("/control", json={"nonsense": 1})).status_code == 422
    await client.post("/control", json={"reset": True})
    assert (await client.get("/stats")).json()["received"] == 0


async def test_dedup_survives_a_restart_with_sqlite(tmp_path):
    db = str(tmp_path / "receiver.sqlite")
    e = event()
    _, body = message(e)
    async with make_client(db_path=db) as first:
        assert (await post(first, body)).status_code == 200
    async with make_client(db_path=db) as again:  # a restart: state comes back from the file
        assert (await post(again, body)).status_code == 200
        s = (await again.get("/stats")).json()
    assert (s["received"], s["unique"], s["duplicates"]) == (2, 1, 1)
