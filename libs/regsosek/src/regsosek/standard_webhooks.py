"""Webhook signatures in the Standard Webhooks form (standardwebhooks.com, spec 1.0.0), so that
off-the-shelf verifiers accept notify's deliveries.

Headers (lower case, as the spec names them):

    webhook-id         the message id: here the batch's Idempotency-Key, the same on every re-send
    webhook-timestamp  integer unix seconds of this attempt
    webhook-signature  space-separated signatures, each "<version>,<base64 signature>"

Both schemes sign the same content, ``"{webhook-id}.{webhook-timestamp}." + raw body``:

- ``v1a``: Ed25519 (asymmetric). The secret key travels as ``whsk_<base64 32-byte seed>``, the
  public key as ``whpk_<base64 32-byte key>``; receivers need no shared secret. During a key
  rotation a message carries one ``v1a`` signature per key (current first).
- ``v1``: HMAC-SHA256 (symmetric). The key is the subscription secret's UTF-8 bytes, which an
  off-the-shelf verifier takes as ``whsec_`` + base64 of those bytes (``whsec_form``).

Keys are never logged nor put in exception messages. Key-format errors are `MalformedKey`, not a
`ValueError`, for the reason given in regsosek.keys (pydantic would repeat the input).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
SECRET_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
SYMMETRIC_PREFIX = "whsec_"
ED25519 = "v1a"
HMAC_SHA256 = "v1"

# Published here, so refused in production (regsosek.keys.DEVELOPMENT_KEYS); base64 of the 32 bytes
# b"regsosek-local-dev-webhook-key!!". Local runs and tests sign with it when no key is configured.
LOCAL_DEVELOPMENT_SIGNING_KEY = "whsk_cmVnc29zZWstbG9jYWwtZGV2LXdlYmhvb2sta2V5ISE="


class MalformedKey(RuntimeError):
    """A key that is not in the expected form; the message never contains the key."""


# ---------------------------------------------------------------- keys


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text.strip(), validate=True)


def generate_signing_key() -> str:
    """A new Ed25519 secret key as ``whsk_<base64 seed>``."""
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return SECRET_KEY_PREFIX + base64.b64encode(seed).decode()


def load_signing_key(text: str, name: str = "signing key") -> Ed25519PrivateKey:
    """``whsk_<base64 32-byte seed>`` (the prefix may be left out) to a private key."""
    raw = text.strip().removeprefix(SECRET_KEY_PREFIX)
    try:
        seed = _b64decode(raw)
    except (binascii.Error, ValueError):
        raise MalformedKey(f"{name} is not base64 (expected whsk_<base64 of a 32-byte Ed25519 seed>)") from None
    if len(seed) != 32:
        raise MalformedKey(f"{name} must be a 32-byte Ed25519 seed, base64 encoded with prefix whsk_")
    return Ed25519PrivateKey.from_private_bytes(seed)


def load_public_key(text: str, name: str = "public key") -> Ed25519PublicKey:
    """``whpk_<base64 32-byte key>`` (the prefix may be left out) to a public key."""
    raw = text.strip().removeprefix(PUBLIC_KEY_PREFIX)
    try:
        key = _b64decode(raw)
    except (binascii.Error, ValueError):
        raise MalformedKey(f"{name} is not base64 (expected whpk_<base64 of a 32-byte Ed25519 key>)") from None
    if len(key) != 32:
        raise MalformedKey(f"{name} must be a 32-byte Ed25519 public key, base64 encoded with prefix whpk_")
    return Ed25519PublicKey.from_public_bytes(key)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(key: Ed25519PublicKey) -> str:
    """The public key as ``whpk_<base64>``, the form Standard Webhooks verifiers take."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(_raw_public(key)).decode()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def thumbprint(key: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url): the key id when none is configured."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(key))},
                           separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def jwk(key: Ed25519PublicKey, kid: str) -> dict:
    """The public key as a JWK (RFC 8037: kty OKP, crv Ed25519, x = base64url of the raw key), with
    its Standard Webhooks form beside it."""
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(_raw_public(key)), "kid": kid, "use": "sig",
            "alg": "EdDSA", "whpk": public_key_text(key)}


def public_key_from_jwk(d: Mapping) -> Ed25519PublicKey:
    if d.get("kty") != "OKP" or d.get("crv") != "Ed25519" or not isinstance(d.get("x"), str):
        raise MalformedKey("not an Ed25519 JWK (kty OKP, crv Ed25519, x)")
    try:
        raw = base64.urlsafe_b64decode(d["x"] + "=" * (-len(d["x"]) % 4))
    except (binascii.Error, ValueError):
        raise MalformedKey("JWK x is not base64url") from None
    if len(raw) != 32:
        raise MalformedKey("JWK x must be a 32-byte Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def whsec_form(secret: str) -> str:
    """A subscription's HMAC secret as an off-the-shelf verifier takes it: the HMAC key is the
    secret's UTF-8 bytes, which ``whsec_`` + base64 decodes to."""
    return SYMMETRIC_PREFIX + base64.b64encode(secret.encode()).decode()


# ---------------------------------------------------------------- signing


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """``"{msg_id}.{timestamp}." + body``; the id and timestamp may not contain a full stop."""
    if not msg_id or "." in msg_id:
        raise ValueError("webhook id must be non-empty and contain no '.'")
    return f"{msg_id}.{int(timestamp)}.".encode() + body


def sign_ed25519(key: Ed25519PrivateKey, msg_id: str, timestamp: int, body: bytes) -> str:
    return f"{ED25519},{base64.b64encode(key.sign(signed_content(msg_id, timestamp, body))).decode()}"


def sign_hmac(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), signed_content(msg_id, timestamp, body), hashlib.sha256).digest()
    return f"{HMAC_SHA256},{base64.b64encode(digest).decode()}"


def webhook_headers(msg_id: str, timestamp: int, signatures: Sequence[str]) -> dict[str, str]:
    if not signatures:
        raise ValueError("a webhook needs at least one signature")
    return {HEADER_ID: msg_id, HEADER_TIMESTAMP: str(int(timestamp)), HEADER_SIGNATURE: " ".join(signatures)}


# ---------------------------------------------------------------- verifying


def parse_signatures(header: str) -> list[tuple[str, bytes]]:
    """``"v1a,AAA= v1,BBB="`` to [(version, raw signature)]; malformed entries are left out."""
    out = []
    for entry in header.split(" "):
        version, sep, sig = entry.partition(",")
        if not sep or not version or not sig:
            continue
        try:
            out.append((version, _b64decode(sig)))
        except (binascii.Error, ValueError):
            continue
    return out


def verify(body: bytes, headers: Mapping[str, str], *, now: float, public_keys: Iterable[Ed25519PublicKey] = (),
           secret: str | None = None, tolerance_s: float = 300) -> str | None:
    """None when one signature in ``webhook-signature`` verifies with a trusted key (a ``v1a`` one with
    any of ``public_keys``, a ``v1`` one with ``secret``) and the timestamp is within ``tolerance_s``
    of ``now``; else the reason. Header names are case-insensitive."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sig_header = h.get(HEADER_ID, ""), h.get(HEADER_TIMESTAMP, ""), h.get(HEADER_SIGNATURE, "")
    if not (msg_id and ts and sig_header):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    if not (ts.isascii() and ts.isdigit()) or "." in msg_id:
        return "malformed webhook headers"
    if abs(now - int(ts)) > tolerance_s:
        return "timestamp outside tolerance"
    keys = list(public_keys)
    content = signed_content(msg_id, int(ts), body)
    expected_hmac = hmac.new(secret.encode(), content, hashlib.sha256).digest() if secret else None
    for version, sig in parse_signatures(sig_header):
        if version == ED25519:
            for key in keys:
                try:
                    key.verify(sig, content)
                    return None
                except InvalidSignature:
                    pass
        elif version == HMAC_SHA256 and expected_hmac is not None and hmac.compare_digest(expected_hmac, sig):
            return None
    return "signature mismatch"


def main() -> None:
    """Print a new signing key (whsk_...) on stdout, for a secret store; its public key and key id on
    stderr: ``python -m regsosek.standard_webhooks > signing-key``."""
    import sys

    key = generate_signing_key()
    public = load_signing_key(key).public_key()
    print(key)
    print(f"public key {public_key_text(public)}, key id {thumbprint(public)}", file=sys.stderr)


if __name__ == "__main__":
    main()
