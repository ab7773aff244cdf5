"""Encryption at rest of personal data a service must keep (issue 11, item 3).

AES-256-GCM with a key id in every ciphertext, so keys can rotate: new data is sealed under
the *current* key (the first one configured), older ciphertexts open with whichever key they
name, and a rotation command re-seals old rows under the current key (intake:
`python -m intake.rotate_keys`).

Keys come from the environment or a mounted file, never from the repository:

  REGSOSEK_DATA_KEYS=kid2:<base64 32 bytes>,kid1:<base64 32 bytes>     (first = current)
  REGSOSEK_DATA_KEYS_FILE=/run/secrets/data-keys                        (same format, one per line or comma)

`openssl rand -base64 32` makes a key. Every key must be 32 bytes (AES-256) in any environment.
With `REGSOSEK_ENV=production` a missing key set, or the development key published below, stops
the service at start-up (`regsosek.keys.InsecureSecret`; the message never shows a key).

Format of a ciphertext: b"RSE1" | len(kid) (1 byte) | kid (ASCII) | nonce (12 bytes) | AES-GCM
ciphertext and tag. The caller's `aad` (e.g. the row's id) is authenticated, so a ciphertext
copied onto another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from regsosek.keys import InsecureSecret

MAGIC = b"RSE1"
KEY_BYTES = 32
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# The development key set used when none is configured outside production. Public: refused in production.
DEVELOPMENT_DATA_KEY_ID = "dev1"
DEVELOPMENT_DATA_KEY = base64.b64encode(b"regsosek-local-development-key!!").decode()  # 32 bytes
# The identity feed's (regsosek.contracts.identities) development key: a set of its own, so that a
# service holding only data keys cannot open the feed. Public: refused in production.
DEVELOPMENT_IDENTITY_KEY_ID = "dev-identity1"
DEVELOPMENT_IDENTITY_KEY = base64.b64encode(b"regsosek-local-identity-feed-key").decode()  # 32 bytes


class DataKeyError(InsecureSecret):
    """A data key set that cannot be used (malformed, wrong length, development key in production)."""


class CannotOpen(Exception):
    """A ciphertext that names an unknown key, or was altered or moved (never shows its content)."""


@dataclass(frozen=True)
class Keyring:
    keys: tuple[tuple[str, bytes], ...]  # (kid, key), current first

    @property
    def current_kid(self) -> str:
        return self.keys[0][0]

    def _key(self, kid: str) -> bytes | None:
        return next((k for i, k in self.keys if i == kid), None)

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        kid, key = self.keys[0]
        nonce = os.urandom(12)
        return MAGIC + bytes([len(kid)]) + kid.encode() + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        kid = kid_of(blob)
        key = self._key(kid)
        if key is None:
            raise CannotOpen(f"ciphertext under key id {kid!r}, which is not configured")
        start = len(MAGIC) + 1 + len(kid)
        try:
            return AESGCM(key).decrypt(blob[start:start + 12], blob[start + 12:], aad)
        except Exception:  # InvalidTag: altered, moved to another row, or another key of the same id
            raise CannotOpen(f"ciphertext under key id {kid!r} does not authenticate") from None

    def reseal(self, blob: bytes, aad: bytes = b"") -> bytes:
        """The same plaintext under the current key."""
        return self.seal(self.open(blob, aad), aad)


def kid_of(blob: bytes) -> str:
    blob = bytes(blob)
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 1:
        raise CannotOpen("not a sealed value")
    n = blob[len(MAGIC)]
    return blob[len(MAGIC) + 1:len(MAGIC) + 1 + n].decode("ascii", "replace")


def parse_keys(text: str, *, source: str = "REGSOSEK_DATA_KEYS") -> Keyring:
    """`kid:base64,kid:base64` (or one per line); the first is current. Errors never show a key."""
    entries = [e.strip() for e in re.split(r"[,\n]", text) if e.strip() and not e.strip().startswith("#")]
    if not entries:
        raise DataKeyError(f"{source} holds no key")
    keys: list[tuple[str, bytes]] = []
    for n, e in enumerate(entries, 1):
        kid, sep, b64 = e.partition(":")
        if not sep or not _KID.fullmatch(kid):
            raise DataKeyError(f"{source}: entry {n} is not kid:base64key (kid: letters, digits, . _ -)")
        try:
            key = base64.b64decode(b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise DataKeyError(f"{source}: key {kid!r} is not base64") from None
        if len(key) != KEY_BYTES:
            raise DataKeyError(f"{source}: key {kid!r} must be {KEY_BYTES} bytes (AES-256; "
                               "generate one with: openssl rand -base64 32)")
        if any(kid == k for k, _ in keys):
            raise DataKeyError(f"{source}: key id {kid!r} appears twice")
        keys.append((kid, key))
    return Keyring(tuple(keys))


def load_keyring(keys: str, keys_file: str, env: str, *, name: str = "REGSOSEK_DATA_KEYS",
                 development: tuple[str, str] = (DEVELOPMENT_DATA_KEY_ID, DEVELOPMENT_DATA_KEY)) -> Keyring:
    """A key set from `name` or `name`_FILE (not both): the service's data keys (REGSOSEK_DATA_KEYS)
    or another set, such as the identity feed's (REGSOSEK_IDENTITY_KEYS). Outside production, none
    configured means the set's development key; in production it is refused, as is a development
    key among the configured ones."""
    production = env.strip().lower() == "production"
    if keys.strip() and keys_file.strip():
        raise DataKeyError(f"set {name} or {name}_FILE, not both")
    if keys_file.strip():
        try:
            text = Path(keys_file.strip()).read_text(encoding="utf-8")
        except OSError as e:
            raise DataKeyError(f"{name}_FILE cannot be read ({type(e).__name__})") from None
        ring = parse_keys(text, source=f"{name}_FILE")
    elif keys.strip():
        ring = parse_keys(keys, source=name)
    elif production:
        raise DataKeyError(f"{name} (or {name}_FILE) must be set in production")
    else:
        ring = parse_keys(f"{development[0]}:{development[1]}", source=name)
    published = {base64.b64decode(DEVELOPMENT_DATA_KEY), base64.b64decode(development[1])}
    if production and any(k in published for _, k in ring.keys):
        raise DataKeyError(f"a key of {name} is a development key published in this repository; "
                           "set secret ones in production")
    return ring


def identity_keyring(keys: str, keys_file: str, env: str) -> Keyring:
    """The identity feed's key set (regsosek.contracts.identities): REGSOSEK_IDENTITY_KEYS or
    REGSOSEK_IDENTITY_KEYS_FILE, held by intake (seals) and notify (opens) only; the same rules as
    the data keys, with a development key of its own."""
    return load_keyring(keys, keys_file, env, name="REGSOSEK_IDENTITY_KEYS",
                        development=(DEVELOPMENT_IDENTITY_KEY_ID, DEVELOPMENT_IDENTITY_KEY))
