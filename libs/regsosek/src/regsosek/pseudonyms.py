"""Keyed pseudonyms of the direct identifiers that must still be compared (NIK, KK number).

Issue 11 (privacy by design): NIKs and KK numbers never travel the bus in clear. The producer
(intake, which received them and holds `REGSOSEK_NIK_HASH_KEY`) replaces each by an HMAC-SHA256
under that key; consumers (verify) compare the hashes only and never hold the key.

`nik_hash` is, bit for bit, the function verify used for its nationwide NIK claims before this
change (`hmac(key, nik, sha256)`), so hashes published by intake equal the claims verify already
stores. A KK number is hashed under the same key with a domain prefix, so a KK number and a NIK
with the same digits never give the same pseudonym. On the wire both are 64 lower-case hex digits.
The key is set once and never rotated: rotating it would break every stored claim (re-hashing
needs the clear NIKs, which verify no longer has).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from pydantic import StringConstraints

# verify's former default; published here, so refused in production (regsosek.keys)
DEVELOPMENT_NIK_HASH_KEY = "local-development-nik-key"

HexHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def nik_hash(key: str, nik: str) -> bytes:
    """The NIK's keyed hash (HMAC-SHA256, 32 bytes): verify's `nik_claims.nik_hash`."""
    return hmac.new(key.encode(), nik.encode(), hashlib.sha256).digest()


def kk_hash(key: str, kk_number: str) -> bytes:
    """The KK number's keyed hash (HMAC-SHA256 of "kk:" + the number)."""
    return hmac.new(key.encode(), b"kk:" + kk_number.encode(), hashlib.sha256).digest()


def nik_hash_hex(key: str, nik: str | None) -> str | None:
    return None if nik is None else nik_hash(key, nik).hex()


def kk_hash_hex(key: str, kk_number: str | None) -> str | None:
    return None if kk_number is None else kk_hash(key, kk_number).hex()
