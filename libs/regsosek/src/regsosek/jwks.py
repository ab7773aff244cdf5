"""Public keys of the identity provider that signs bearer tokens: a JWK Set (RFC 7517) from a
file or an https URL, cached, refreshed every `refresh_s` and fetched again (at most every
`min_refetch_s`) when a token names a key id the cached set does not hold (a key rotation).

Only asymmetric public keys are kept: a symmetric (`oct`) key, a key with `use` other than `sig`
or a private key member in the set is skipped, so a verifier never holds anything that can sign.
Responses and files larger than `max_bytes` are refused; a URL fetch has a `timeout_s` and does
not follow redirects. Keys are never logged; only key ids and counts are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


log = logging.getLogger("regsosek.jwks")

MAX_JWKS_BYTES = 64 * 1024
KEY_TYPES = frozenset({"OKP", "RSA", "EC"})
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class KeysUnavailable(Exception):
    """The key set could not be read or fetched and no usable copy is cached; `reason` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_jwks(raw: bytes, *, max_bytes: int = MAX_JWKS_BYTES) -> dict[str, dict[str, Any]]:
    """kid -> public JWK of a JWK Set document. Raises KeysUnavailable when it is not one."""
    if len(raw) > max_bytes:
        raise KeysUnavailable(f"JWKS larger than {max_bytes} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise KeysUnavailable("JWKS is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise KeysUnavailable("JWKS has no keys list")
    keys: dict[str, dict[str, Any]] = {}
    for k in doc["keys"]:
        if not isinstance(k, dict) or k.get("kty") not in KEY_TYPES:
            continue  # symmetric (oct) and unknown key types are never used
        if PRIVATE_MEMBERS & k.keys():
            continue  # a private key published by mistake: not used (nor echoed)
        if k.get("use", "sig") != "sig":
            continue
        kid = k.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 200:
            continue
        keys[kid] = k
    if not keys:
        raise KeysUnavailable("JWKS holds no usable public signing key with a kid")
    return keys


class JwksSource:
    """A cached key set; subclasses read it (`_load`)."""

    def __init__(self, *, refresh_s: float = 300.0, min_refetch_s: float = 10.0, max_bytes: int = MAX_JWKS_BYTES,
                 clock=time.monotonic) -> None:
        self.refresh_s, self.min_refetch_s, self.max_bytes = refresh_s, min_refetch_s, max_bytes
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] | None = None
        self._loaded_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self.loads = 0  # successful loads (tests, metrics)

    def describe(self) -> str:
        raise NotImplementedError

    async def _load(self) -> bytes:
        raise NotImplementedError

    async def _refresh(self) -> None:
        asked = self._clock()
        async with self._lock:
            if self._attempted_at >= asked:
                return  # another request fetched while this one waited: one fetch for all of them
            self._attempted_at = self._clock()
            try:
                keys = parse_jwks(await self._load(), max_bytes=self.max_bytes)
            except KeysUnavailable as e:
                log.warning("token signing keys from %s not loaded: %s", self.describe(), e.reason)
                if self._keys is None:
                    raise
                return  # keep the last good set
            if self._keys is None or keys.keys() != self._keys.keys():
                log.info("token signing keys from %s: %d key(s), ids %s", self.describe(), len(keys),
                         ", ".join(sorted(keys)))
            self._keys, self._loaded_at = keys, self._clock()
            self.loads += 1

    async def key(self, kid: str) -> dict[str, Any] | None:
        """The public JWK with this id, or None when the set (refreshed if due) has none."""
        now = self._clock()
        due = self._keys is None or now - self._loaded_at >= self.refresh_s
        if due and now - self._attempted_at >= self.min_refetch_s:
            await self._refresh()
        if self._keys is None:
            raise KeysUnavailable("token signing keys not loaded (the last attempt failed; retried shortly)")
        if kid in self._keys:
            return self._keys[kid]
        # an unknown key id: perhaps the provider rotated; fetch again, but not more often than min_refetch_s
        if self._clock() - self._attempted_at >= self.min_refetch_s:
            await self._refresh()
        return self._keys.get(kid)


class JwksFile(JwksSource):
    """A JWK Set in a file (a mounted ConfigMap, or the local key pair's jwks.json)."""

    def __init__(self, path: str | os.PathLike, **kw) -> None:
        super().__init__(**kw)
        self.path = Path(path)

    def describe(self) -> str:
        return f"file {self.path}"

    async def _load(self) -> bytes:
        return self.read()

    def read(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                return f.read(self.max_bytes + 1)
        except OSError as e:
            raise KeysUnavailable(f"JWKS file cannot be read ({type(e).__name__})") from None

    def key_sync(self, kid: str) -> dict[str, Any] | None:
        """For synchronous callers (tools, tests): read the file now."""
        return parse_jwks(self.read(), max_bytes=self.max_bytes).get(kid)


class JwksUrl(JwksSource):
    """A JWK Set at an https URL (the identity provider's jwks_uri)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, transport: httpx.AsyncBaseTransport | None = None,
                 **kw) -> None:
        super().__init__(**kw)
        self.url, self.timeout_s, self._transport = url, timeout_s, transport

    def describe(self) -> str:
        return f"URL {self.url}"

    async def _load(self) -> bytes:
        import httpx  # here, not at the top: what only reads the settings (a command) does not need it

        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False,
                                         transport=self._transport) as client:
                async with asyncio.timeout(self.timeout_s):
                    headers = {"accept": "application/json", "accept-encoding": "identity"}
                    async with client.stream("GET", self.url, headers=headers) as r:
                        if r.status_code != 200:
                            raise KeysUnavailable(f"JWKS URL answered {r.status_code}")
                        if r.headers.get("content-encoding", "identity").strip().lower() not in ("identity", ""):
                            raise KeysUnavailable("JWKS URL answered with a compressed body")
                        length = r.headers.get("content-length")
                        if length and length.isdigit() and int(length) > self.max_bytes:
                            raise KeysUnavailable(f"JWKS larger than {self.max_bytes} bytes")
                        body = bytearray()
                        async for chunk in r.aiter_bytes():  # content-encoding refused above
                            body += chunk
                            if len(body) > self.max_bytes:
                                raise KeysUnavailable(f"JWKS larger than {self.max_bytes} bytes")
                        return bytes(body)
        except (httpx.HTTPError, TimeoutError) as e:
            raise KeysUnavailable(f"JWKS URL not reachable ({type(e).__name__})") from None
