"""Request body size limit for every service's HTTP app (ASGI middleware).

A request whose `Content-Length` is over the limit is answered 413 before any of its body is
read; a request without one (chunked) is counted as it streams, and refused with 413 as soon as
the running total passes the limit. The limit is `REGSOSEK_HTTP_MAX_BODY_BYTES`
(`ServiceSettings.http_max_body_bytes`); `build_app` installs this on every service.

Over the limit mid-stream, the application's own reaction to the interrupted read (FastAPI turns
any body-read failure into a 400) is discarded and the client gets the 413, unless the application
had already started its response, in which case that response is simply cut short.
"""

from __future__ import annotations

import json


class _BodyTooLarge(Exception):
    pass


def _too_large_body(limit: int) -> bytes:
    return json.dumps({"reason": f"request body too large: at most {limit} bytes"}).encode()


class BodySizeLimit:
    """ASGI middleware: 413 with a JSON `reason` for request bodies over `max_bytes`."""

    def __init__(self, app, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", ()):
            # the server has already refused a malformed Content-Length; be safe anyway
            if k.lower() == b"content-length" and not (v.isdigit() and int(v) <= self.max_bytes):
                return await self._refuse(send)
        seen = 0
        exceeded = False
        started = False

        async def counting_receive():
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to the interrupted read; the 413 replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = _too_large_body(self.max_bytes)
        await send({"type": "http.response.start", "status": 413,
                    # no "connection: close": the server would drop the connection while the client is still
                    # sending, and the client would see a reset instead of this answer
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
