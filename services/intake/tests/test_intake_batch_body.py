"""Through intake's HTTP API: a batch upload's body is read and parsed by the route itself (after the
token is checked, while one of REGSOSEK_MAX_BATCH_UPLOADS places is free), so a body that is not a
batch is still a 422 naming the field, an unauthenticated upload a 401, and the OpenAPI document
still describes the body.

No database is needed: these answers come before anything is stored (no lifespan runs)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from intake.app import create_app
from intake.settings import IntakeSettings
from regsosek.auth import Role, mint


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(IntakeSettings(env="local")))


def officer() -> dict:
    return {"authorization": f"Bearer {mint(subject='T-1', role=Role.OFFICER, areas=['64'])}",
            "content-type": "application/json"}


@pytest.mark.parametrize(("body", "path"), [
    (b'{"interviews": [', "/"),  # not JSON
    (b'{"items": []}', "/interviews"),  # no interviews
    (b'{"interviews": []}', "/interviews"),  # none in it
    (b'{"interviews": [1, "x"]}', "/interviews/0"),  # items that are not objects
])
def test_a_body_that_is_not_a_batch_is_422_at_its_pointer(client, body, path):
    r = client.post("/v1/interviews:batch", content=body, headers=officer())
    assert r.status_code == 422, r.text
    assert path in [e["path"] for e in r.json()["errors"]]


def test_an_upload_without_a_token_is_401_whatever_its_body(client):
    r = client.post("/v1/interviews:batch", content=b'{"interviews": [', headers={"content-type": "application/json"})
    assert r.status_code == 401


def test_too_many_items_is_422(client):
    items = ",".join(["{}"] * (IntakeSettings(env="local").max_batch_items + 1))
    r = client.post("/v1/interviews:batch", content=f'{{"interviews": [{items}]}}'.encode(), headers=officer())
    assert r.status_code == 422
    assert r.json()["errors"][0]["path"] == "/interviews"


def test_openapi_describes_the_batch_body(client):
    op = client.get("/openapi.json").json()["paths"]["/v1/interviews:batch"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["interviews"] and schema["properties"]["interviews"]["type"] == "array"


async def test_at_most_max_batch_uploads_are_handled_at_once(monkeypatch):
    import asyncio

    import httpx

    from intake import api

    busy, most = 0, 0

    async def upload(handlers, settings, request, items, principal):
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await asyncio.sleep(0.05)  # as an upload awaiting the database
        busy -= 1
        return api.JSONResponse({"results": [None] * len(items)})

    monkeypatch.setattr(api, "upload", upload)
    app = create_app(IntakeSettings(env="local", max_batch_uploads=2))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as c:
        answers = await asyncio.gather(*(c.post("/v1/interviews:batch", content=b'{"interviews": [{}]}',
                                                headers=officer()) for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert most == 2
