"""A subscriber's reply is read up to REGSOSEK_MAX_REPLY_BYTES: a longer (or compressed) one is not
read further and counts as a failed attempt."""

from __future__ import annotations

import httpx
import orjson
import pytest

from notify.callbacks import acked, post_capped

ACK = orjson.dumps({"message": {"ack_status": "ACK", "correlation_id": "m"}})


class _Endless(httpx.AsyncByteStream):
    """A reply body that never ends, without a Content-Length: only the cap stops reading it."""

    def __init__(self) -> None:
        self.sent = 0

    async def __aiter__(self):
        while True:
            self.sent += 4096
            yield b"x" * 4096


def _reply(status: int, body: bytes, **headers: str) -> httpx.Response:
    """A reply streamed as from a network (MockTransport marks `content=` replies as already read)."""
    return httpx.Response(status, stream=httpx.ByteStream(body), headers=headers)


async def _post(handler, cap=1024):
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as c:
        return await post_capped(c, "http://programme.test/notify", b"{}", {"content-type": "application/json"}, cap)


async def test_a_small_reply_is_read_and_acknowledged():
    status, _, reply, why = await _post(lambda r: _reply(200, ACK))
    assert (status, why) == (200, None) and acked(status, reply)


async def test_identity_is_asked_for():
    seen = {}

    def handler(r):
        seen["ae"] = r.headers.get("accept-encoding")
        return _reply(200, ACK)

    await _post(handler)
    assert seen["ae"] == "identity"


async def test_a_declared_long_reply_is_not_read():
    status, _, reply, why = await _post(lambda r: _reply(200, ACK + b" " * 2000, **{"content-length": str(len(ACK) + 2000)}))
    assert status == 200 and reply == b"" and "longer than 1024 bytes" in why


async def test_an_endless_reply_is_cut_at_the_cap():
    stream = _Endless()
    status, _, reply, why = await _post(lambda r: httpx.Response(200, stream=stream))
    assert reply == b"" and "longer than 1024 bytes" in why
    assert stream.sent <= 2 * 4096  # stopped right after the cap, not read to the end


@pytest.mark.parametrize("encoding", ["gzip", "br"])
async def test_a_compressed_reply_is_refused(encoding):
    status, _, _, why = await _post(lambda r: _reply(200, b"\x1f\x8b...", **{"content-encoding": encoding}))
    assert "compressed" in why and encoding in why


def test_ack_needs_2xx_and_ack_status():
    assert not acked(500, ACK) and not acked(200, b"[]") and not acked(200, b"not json")
