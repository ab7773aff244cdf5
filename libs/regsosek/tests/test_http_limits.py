"""Request body size limit: 413 with a JSON reason before the body is parsed, by Content-Length
or by counting a streamed (chunked) body; installed on every service by build_app."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from regsosek.http_limits import BodySizeLimit
from regsosek.service import ServiceDefinition, build_app
from regsosek.settings import ServiceSettings

LIMIT = 1000


class Item(BaseModel):
    text: str


def fastapi_app(calls: list) -> FastAPI:
    app = FastAPI()

    @app.post("/items")
    async def items(item: Item):
        calls.append(len(item.text))
        return {"length": len(item.text)}

    return app


def client(calls: list) -> TestClient:
    app = fastapi_app(calls)
    app.add_middleware(BodySizeLimit, max_bytes=LIMIT)
    return TestClient(app)


def body_of(size: int) -> bytes:
    head, tail = b'{"text": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def chunks(data: bytes, n: int = 100):
    for i in range(0, len(data), n):
        yield data[i:i + n]


def assert_413(r) -> None:
    assert r.status_code == 413, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"reason": f"request body too large: at most {LIMIT} bytes"}


def test_at_the_limit_is_accepted():
    calls: list = []
    r = client(calls).post("/items", content=body_of(LIMIT), headers={"content-type": "application/json"})
    assert r.status_code == 200 and calls == [LIMIT - 12]


def test_content_length_over_the_limit_is_413_before_the_app_runs():
    calls: list = []
    r = client(calls).post("/items", content=body_of(LIMIT + 1), headers={"content-type": "application/json"})
    assert_413(r)
    assert calls == []


def test_chunked_body_over_the_limit_is_413_not_400():
    calls: list = []
    r = client(calls).post("/items", content=chunks(body_of(LIMIT + 1)), headers={"content-type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
    assert_413(r)
    assert calls == []


def test_chunked_body_under_the_limit_is_accepted():
    calls: list = []
    r = client(calls).post("/items", content=chunks(body_of(LIMIT)), headers={"content-type": "application/json"})
    assert r.status_code == 200 and calls == [LIMIT - 12]


# ---------------------------------------------------------------- raw ASGI: streamed messages, lies, edge cases

def run_asgi(app, messages: list[dict], headers: list[tuple[bytes, bytes]] = ()) -> list[dict]:
    sent: list[dict] = []
    queue = list(messages)

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}
    asyncio.run(BodySizeLimit(app, LIMIT)(scope, receive, send))
    return sent


async def reads_everything(scope, receive, send):
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def status_of(sent: list[dict]) -> int:
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    return start["status"]


def test_streamed_messages_are_counted_across_chunks():
    msgs = [{"type": "http.request", "body": b"x" * 400, "more_body": True}] * 2 + \
           [{"type": "http.request", "body": b"x" * 201, "more_body": False}]
    assert status_of(run_asgi(reads_everything, msgs)) == 413
    msgs[-1] = {"type": "http.request", "body": b"x" * 200, "more_body": False}
    sent = run_asgi(reads_everything, msgs)
    assert status_of(sent) == 200 and sent[-1]["body"] == b"1000"


def test_a_content_length_that_lies_low_is_still_counted():
    msgs = [{"type": "http.request", "body": b"x" * (LIMIT + 1), "more_body": False}]
    assert status_of(run_asgi(reads_everything, msgs, [(b"content-length", b"10")])) == 413


@pytest.mark.parametrize("value", [b"-1", b"1e9", b"", b" 5", b"\xef\xbc\x95"])
def test_a_malformed_content_length_is_refused(value):
    assert status_of(run_asgi(reads_everything, [], [(b"content-length", value)])) == 413


def test_an_app_that_already_answered_is_cut_short_not_answered_twice():
    async def answers_then_reads(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()

    sent = run_asgi(answers_then_reads, [{"type": "http.request", "body": b"x" * (LIMIT + 1), "more_body": False}])
    assert [m["type"] for m in sent] == ["http.response.start"] and sent[0]["status"] == 200


def test_other_errors_of_the_app_propagate():
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_asgi(broken, [{"type": "http.request", "body": b"x", "more_body": False}])


def test_non_http_scopes_pass_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(BodySizeLimit(app, LIMIT)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        BodySizeLimit(reads_everything, 0)


# ---------------------------------------------------------------- every service gets it from build_app

def test_build_app_installs_the_limit_from_settings():
    calls: list = []
    router = APIRouter()

    @router.post("/items")
    async def items(item: Item):
        calls.append(item.text)
        return {}

    settings = ServiceSettings(service_name="t", http_max_body_bytes=LIMIT)
    app = build_app(ServiceDefinition(name="t", settings=settings, migrations=Path("/nonexistent"), routers=[router]))
    c = TestClient(app)  # no lifespan: no database or broker needed
    assert_413(c.post("/items", content=body_of(LIMIT + 1), headers={"content-type": "application/json"}))
    assert_413(c.post("/items", content=chunks(body_of(LIMIT + 1)), headers={"content-type": "application/json"}))
    assert c.post("/items", content=body_of(LIMIT), headers={"content-type": "application/json"}).status_code == 200
    assert len(calls) == 1
