"""Webhook signatures: HMAC-SHA256 over "<unix seconds>." + body.

Header: X-Regsosek-Signature: t=<unix seconds>,v1=<hex digest>. The receiver
rejects a bad digest, and a timestamp outside its tolerance (replay defence).
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Regsosek-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance_s: float = 300) -> str | None:
    """None when valid, else the reason it is not."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, v1 = parts.get("t", ""), parts.get("v1", "")
    if not (t.isascii() and t.isdigit() and len(t) <= 12) or not v1 or not v1.isascii():
        return "malformed signature header"
    if abs(now - int(t)) > tolerance_s:
        return "timestamp outside tolerance"
    expected = sign(secret, int(t), body).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, v1):
        return "signature mismatch"
    return None
