"""Calling a subscriber, shared by the delivery worker (notify.delivery) and the DCI callbacks
(notify.dci): the signature headers, the idempotency key of a batch, a POST whose reply is read up
to a cap, what a reply means, and callback safety (an http(s) URL; in production a name that
resolves to public addresses only, checked when subscribing, before every delivery and again
when connecting)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit
from uuid import UUID

import httpcore
import httpx
import orjson

from notify.domain import callback_problem, is_public_address
from notify.settings import NotifySettings, SigningKey
from regsosek import standard_webhooks
from regsosek.signing import HEADER, sign

# ---------------------------------------------------------------- the request and its reply


def signature_headers(scheme: str, secret: str | None, keys: Sequence[SigningKey], msg_id: str, timestamp: int,
                      body: bytes) -> dict[str, str]:
    """The signature headers of one POST (README "Programme integration"): always the Standard Webhooks
    webhook-id, webhook-timestamp and webhook-signature; in it a v1a (Ed25519) signature per signing key
    (current first, then the one being rotated out) for ed25519 and both, and a v1 (HMAC-SHA256 with the
    subscription secret) for hmac and both, which also keep the X-Regsosek-Signature header."""
    signatures: list[str] = []
    headers: dict[str, str] = {}
    if scheme in ("hmac", "both"):
        if not secret:
            raise ValueError(f"a {scheme} subscription without a secret")
        signatures.append(standard_webhooks.sign_hmac(secret, msg_id, timestamp, body))
        headers[HEADER] = sign(secret, timestamp, body)
    if scheme in ("ed25519", "both"):
        signatures += [standard_webhooks.sign_ed25519(k.key, msg_id, timestamp, body) for k in keys]
    if not signatures:
        raise ValueError(f"unknown signature scheme {scheme!r}")
    return {**standard_webhooks.webhook_headers(msg_id, timestamp, signatures), **headers}


def batch_key(rows) -> str:
    """Idempotency-Key of a batch: the same for every re-send of the same events. (Each
    event also carries its own event_id, the key by which a subscriber recognises a repeat.)"""
    digest = hashlib.sha256("\n".join(r["event_id"] for r in rows).encode()).hexdigest()
    return str(UUID(digest[:32]))


async def post_capped(client: httpx.AsyncClient, url: str, body: bytes, headers: dict,
                      max_bytes: int) -> tuple[int, str | None, bytes, str | None]:
    """POSTs and reads at most `max_bytes` of the reply: (status, Retry-After, reply, None), or
    (status, Retry-After, b"", why) when the reply is longer (by its Content-Length, or counted while
    it streams: nothing more is read) or compressed (identity was asked for; a compressed reply
    could expand without bound)."""
    async with client.stream("POST", url, content=body, headers={**headers, "accept-encoding": "identity"}) as resp:
        status, retry_after = resp.status_code, resp.headers.get("retry-after")
        too_long = f"reply longer than {max_bytes} bytes (REGSOSEK_MAX_REPLY_BYTES), not read"
        declared = resp.headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
            return status, retry_after, b"", too_long
        encoding = resp.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return status, retry_after, b"", f"reply compressed ({encoding[:40]}) although identity was asked for"
        reply = bytearray()
        async for chunk in resp.aiter_raw():
            reply += chunk
            if len(reply) > max_bytes:
                return status, retry_after, b"", too_long
        return status, retry_after, bytes(reply), None


def err_answer(status: int, reply: bytes) -> str | None:
    """A 2xx reply whose ack_status is ERR (the DCI Response): the subscriber refuses the message
    (bad signature, unknown receiver...); the error it gives, else None."""
    if not 200 <= status < 300:
        return None
    try:
        m = orjson.loads(reply).get("message", {})
        if m.get("ack_status") != "ERR":
            return None
        err = m.get("error") or {}
        return f"ERR {str(err.get('code', ''))[:100]}: {str(err.get('message', ''))[:500]}".strip()
    except (ValueError, AttributeError):
        return None


def acked(status: int, reply: bytes) -> bool:
    if not 200 <= status < 300:
        return False
    try:
        return orjson.loads(reply).get("message", {}).get("ack_status") == "ACK"
    except (ValueError, AttributeError):
        return False


# ---------------------------------------------------------------- callback safety


async def resolve(host: str, timeout_s: float = 5.0) -> list[str]:
    async with asyncio.timeout(timeout_s):
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({i[4][0] for i in infos})


async def callback_problem_now(url: str, production: bool, timeout_s: float) -> str | None:
    """Why the callback may not be called now (None if it may), from what its name resolves to now."""
    if not production:
        return callback_problem(url, [], production=False)
    try:
        addresses = await resolve(urlsplit(url).hostname or "", timeout_s)
    except (OSError, TimeoutError, UnicodeError):
        addresses = []
    return callback_problem(url, addresses, production=True)


class _PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Connects only to public addresses, checked at connect time against the addresses
    it then connects to, so a name that changes between the check and the connection
    (DNS rebinding) cannot reach an internal address. TLS still verifies the name."""

    def __init__(self, timeout_s: float) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.timeout_s = timeout_s

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = await resolve(host, self.timeout_s)
        except (OSError, TimeoutError, UnicodeError) as e:
            raise httpcore.ConnectError(f"callback host does not resolve ({type(e).__name__})") from e
        for addr in addresses:
            if not is_public_address(addr):
                raise httpcore.ConnectError(f"callback resolves to a non-public address ({addr})")
        last: Exception | None = None
        for addr in addresses:
            try:
                return await self.inner.connect_tcp(addr, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except httpcore.ConnectError as e:
                last = e
        raise last or httpcore.ConnectError("callback host does not resolve")

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not callbacks")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _PublicOnlyTransport(httpx.AsyncHTTPTransport):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(trust_env=False)
        # httpx has no public switch for the network backend; its pool is rebuilt the same
        # way with ours (a unit test checks the guard is in the path of a real request).
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            http1=True, network_backend=_PublicOnlyBackend(timeout_s))


def make_client(s: NotifySettings) -> httpx.AsyncClient:
    """The HTTP client for callbacks; in production it can reach public addresses only."""
    transport = _PublicOnlyTransport(s.resolve_timeout_s) if s.env == "production" else None
    return httpx.AsyncClient(timeout=s.delivery_timeout_s, follow_redirects=False, transport=transport,
                             trust_env=s.env != "production")
