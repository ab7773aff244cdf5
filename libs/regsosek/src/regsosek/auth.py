"""Bearer tokens: JWTs from an identity provider, signed with an asymmetric key (EdDSA or RS256),
verified against the provider's published keys (a JWK Set), with a role and an assigned area.

Roles: officer (petugas), supervisor (pengawas), village_official (FKP),
programme (a subscribing programme system), admin. `areas` holds SLS id prefixes
(province, regency, village or a full SLS id) the holder may act for. `programmes`
(programme tokens) holds the codes of the programmes the holder acts for
(regsosek.programmes.PROGRAMME_CODES); notify gives it those programmes' decisions only.
There is no wildcard: a national programme's token lists every province code it serves.

A token is accepted only when (`TokenVerifier`): its `alg` is on the allow-list (asymmetric
algorithms only: never `none`, never HS*, so a public key can never be used as an HMAC secret);
its `kid` names a key of the JWK Set whose type fits that algorithm; the signature verifies;
`iss` is the configured issuer and `aud` holds this service's audience (`regsosek-intake`,
`regsosek-verify`, `regsosek-notify`: a token for notify is refused by intake); `exp` and `iat`
are present, `exp - iat` is at most the maximum lifetime, and the time is within them (small
leeway); and the claims are well formed (`principal_of`). Anything else is a 401 with the reason.

A token that passed every check is remembered (a bounded LRU, keyed by the SHA-256 of the whole
token, signature included) until its `exp`: a device sends the same token with every request, and
the signature check is the costly part. A remembered token is accepted again only while its key is
still in the key set unchanged; an expired one goes through every check again (and is refused).

Only the identity provider holds a private key; services hold public keys, so no service can mint
a token (which any holder of an HS256 shared secret could: hence no HS256).

Local use: `ensure_local_keypair()` makes an Ed25519 key pair under `.local/auth/` of the checkout
(private key mode 0600, `jwks.json` beside it) on first use; local services verify against that
`jwks.json` by default, and this command mints with the private key:

    python -m regsosek.auth --role officer --sub OFC-1 --area 6472
    python -m regsosek.auth --role programme --sub PKH --programme pkh --area 64
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from regsosek.contracts.identifiers import is_ascii_digits
from regsosek.jwks import JwksFile, JwksSource, KeysUnavailable
from regsosek.programmes import PROGRAMME_CODES, is_programme_code

# Asymmetric JWS algorithms a verifier may be configured to accept (REGSOSEK_AUTH_ALGORITHMS);
# HS256/384/512 and none are not among them and cannot be configured.
ASYMMETRIC_ALGORITHMS = ("EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
DEFAULT_ALGORITHMS = ("EdDSA", "RS256")
_ALGORITHMS_OF_KEY_TYPE = {"OKP": {"EdDSA"}, "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
                           "EC": {"ES256", "ES384", "ES512"}}
MIN_RSA_BITS = 2048
MAX_TOKEN_BYTES = 32 * 1024  # room for MAX_AREAS full SLS ids
DEFAULT_MAX_LIFETIME_S = 12 * 3600
DEFAULT_LEEWAY_S = 30
DEFAULT_TOKEN_CACHE_SIZE = 4096  # verified tokens remembered (REGSOSEK_AUTH_TOKEN_CACHE_SIZE)
CACHED_AREAS_MAX = 100  # a token with more areas is verified every time (bounds the cache's memory)

LOCAL_ISSUER = "regsosek-local"
TOKEN_SERVICES = ("intake", "verify", "notify")


def audience_of(service_name: str) -> str:
    """A service's default audience: regsosek-intake, regsosek-verify, regsosek-notify."""
    return f"regsosek-{service_name}"


LOCAL_AUDIENCES = tuple(audience_of(s) for s in TOKEN_SERVICES)


class Role(StrEnum):
    OFFICER = "officer"
    SUPERVISOR = "supervisor"
    VILLAGE_OFFICIAL = "village_official"
    PROGRAMME = "programme"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    areas: tuple[str, ...]
    programmes: tuple[str, ...] = ()  # programme codes the holder acts for (programme tokens)

    def may_act_for(self, sls_id: str) -> bool:
        return self.role is Role.ADMIN or any(sls_id.startswith(a) for a in self.areas)


MAX_AREAS = 1000
MAX_SUBJECT_CHARS = 128


class InvalidClaims(jwt.InvalidTokenError, ValueError):
    """A correctly signed token whose claims are malformed; `reason` says which (never its value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def principal_of(claims: dict[str, Any]) -> Principal:
    """The principal of a verified token's claims. Malformed claims are refused, never coerced or
    widened: `sub` a non-empty printable string, `role` one of `Role`, `areas` absent (no areas) or
    a list of SLS id prefixes, each a string of 2-14 ASCII digits, `programmes` absent (none) or a
    list of distinct known programme codes."""
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUBJECT_CHARS or not sub.isprintable():
        raise InvalidClaims(f"sub claim must be a non-empty printable string of at most {MAX_SUBJECT_CHARS} characters")
    role = claims["role"]
    if not isinstance(role, str) or role not in Role._value2member_map_:
        raise InvalidClaims(f"role claim must be one of {', '.join(r.value for r in Role)}")
    areas = claims.get("areas", [])
    if not isinstance(areas, list):
        raise InvalidClaims("areas claim must be a list of SLS id prefixes")
    if len(areas) > MAX_AREAS:
        raise InvalidClaims(f"areas claim may hold at most {MAX_AREAS} prefixes")
    for a in areas:
        if not (isinstance(a, str) and is_ascii_digits(a, 2, 14)):
            raise InvalidClaims("areas claim elements must be strings of 2 to 14 ASCII digits (0-9)")
    programmes = claims.get("programmes", [])
    if not isinstance(programmes, list):
        raise InvalidClaims("programmes claim must be a list of programme codes")
    if not all(is_programme_code(c) for c in programmes):
        raise InvalidClaims(f"programmes claim elements must be programme codes: {', '.join(PROGRAMME_CODES)}")
    if len(set(programmes)) != len(programmes):
        raise InvalidClaims("programmes claim must not repeat a programme")
    return Principal(sub, Role(role), tuple(areas), tuple(programmes))


class TokenRefused(jwt.InvalidTokenError):
    """A token refused before or after its signature was checked; `reason` says why (never a key)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _safe(value: Any) -> str:
    """A header value fit to repeat in a reason: short printable strings only."""
    return repr(value) if isinstance(value, str) and len(value) <= 32 and value.isprintable() else "(unprintable)"


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token that passed every check: its principal, the key it was verified with, its `exp`."""

    principal: Principal
    kid: str
    jwk: dict
    expires: float


class TokenVerifier:
    """Verifies bearer tokens against a JWK Set (see the module docstring for every check); remembers
    up to `cache_size` verified tokens (0: none) until they expire."""

    def __init__(self, keys: JwksSource, *, issuer: str, audience: str,
                 algorithms: Iterable[str] = DEFAULT_ALGORITHMS, max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S,
                 leeway_s: int = DEFAULT_LEEWAY_S, cache_size: int = DEFAULT_TOKEN_CACHE_SIZE,
                 clock: Callable[[], float] = time.time) -> None:
        self.algorithms = tuple(algorithms)
        bad = [a for a in self.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if not self.algorithms or bad:
            raise ValueError(f"token algorithms must be among {', '.join(ASYMMETRIC_ALGORITHMS)} "
                             f"(symmetric HS* and none are never accepted); got {', '.join(bad) or 'none'}")
        if not issuer or not audience:
            raise ValueError("a token verifier needs an issuer and an audience")
        if max_lifetime_s <= 0 or leeway_s < 0 or cache_size < 0:
            raise ValueError("max_lifetime_s must be positive, leeway_s and cache_size not negative")
        self.keys, self.issuer, self.audience = keys, issuer, audience
        self.max_lifetime_s, self.leeway_s = max_lifetime_s, leeway_s
        self._jwk_cache: dict[tuple[str, str], tuple[dict, jwt.PyJWK]] = {}
        self.cache_size, self._clock = cache_size, clock
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()
        self.cache_hits = 0  # tokens accepted from the cache (tests, metrics)

    def _header(self, token: str) -> tuple[str, str]:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRefused(f"token longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenRefused("malformed token (not a signed JWT)") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise TokenRefused(f"algorithm {_safe(alg)} is not accepted; accepted: {', '.join(self.algorithms)}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 200:
            raise TokenRefused("token header has no kid (key id)")
        return alg, kid

    def _key(self, alg: str, kid: str, jwk: dict | None) -> Any:
        if jwk is None:
            raise TokenRefused(f"unknown signing key id {_safe(kid)}: not in the identity provider's key set")
        cached = self._jwk_cache.get((kid, alg))
        if cached is not None and cached[0] is jwk:
            return cached[1].key
        if alg not in _ALGORITHMS_OF_KEY_TYPE.get(str(jwk.get("kty")), ()) or jwk.get("alg", alg) != alg:
            raise TokenRefused(f"algorithm {alg} does not match the type or algorithm of key {_safe(kid)}")
        try:
            pyjwk = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            raise TokenRefused(f"signing key {_safe(kid)} in the key set is unusable") from None
        if isinstance(pyjwk.key, rsa.RSAPublicKey) and pyjwk.key.key_size < MIN_RSA_BITS:
            raise TokenRefused(f"signing key {_safe(kid)} is an RSA key shorter than {MIN_RSA_BITS} bits")
        self._jwk_cache[(kid, alg)] = (jwk, pyjwk)
        return pyjwk.key

    def _claims(self, token: str, alg: str, key: Any) -> tuple[Principal, float]:
        claims = jwt.decode(token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                            leeway=self.leeway_s,
                            options={"require": ["exp", "iat", "iss", "aud", "sub", "role"]})
        try:
            lifetime = float(claims["exp"]) - float(claims["iat"])
        except (TypeError, ValueError):
            raise TokenRefused("exp and iat must be numbers") from None
        if lifetime > self.max_lifetime_s:
            raise TokenRefused(f"token lifetime (exp - iat) {lifetime:.0f}s exceeds the maximum of "
                               f"{self.max_lifetime_s}s")
        if lifetime <= 0:
            raise TokenRefused("token exp is not after its iat")
        return principal_of(claims), float(claims["exp"])

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; raises jwt.InvalidTokenError (reason in TokenRefused and
        InvalidClaims) or KeysUnavailable (the key set cannot be read or fetched)."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest() \
            if self.cache_size and len(token) <= MAX_TOKEN_BYTES else None
        if digest is not None and (known := self._verified.get(digest)) is not None:
            if self._clock() < known.expires and await self.keys.key(known.kid) == known.jwk:
                self._verified.move_to_end(digest)
                self.cache_hits += 1
                return known.principal
            self._verified.pop(digest, None)  # expired, or its key left or changed: every check again
        alg, kid = self._header(token)
        jwk = await self.keys.key(kid)
        principal, expires = self._claims(token, alg, self._key(alg, kid, jwk))
        if digest is not None and jwk is not None and len(principal.areas) <= CACHED_AREAS_MAX:
            self._verified[digest] = _Verified(principal, kid, jwk, expires)
            if len(self._verified) > self.cache_size:
                self._verified.popitem(last=False)
        return principal

    def verify_sync(self, token: str) -> Principal:
        """`verify` for synchronous callers (tools, tests); a key set from a file only."""
        if not isinstance(self.keys, JwksFile):
            raise TypeError("verify_sync needs a JWKS file; use `await verify(token)`")
        alg, kid = self._header(token)
        return self._claims(token, alg, self._key(alg, kid, self.keys.key_sync(kid)))[0]


def refusal_reason(e: Exception) -> str:
    """The reason a 401 gives for a refused token: names the check, never a key or a claim's value."""
    if isinstance(e, KeysUnavailable):
        return f"token signing keys unavailable, cannot verify tokens now: {e.reason}"
    if isinstance(e, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(e, (InvalidClaims, TokenRefused)):
        return f"invalid token: {e.reason}"
    if isinstance(e, jwt.MissingRequiredClaimError):
        return f"invalid token: {e.claim} claim is required"
    if isinstance(e, jwt.InvalidAudienceError):
        return "invalid token: aud claim does not name this service (a token for another service)"
    if isinstance(e, jwt.InvalidIssuerError):
        return "invalid token: iss claim is not the configured identity provider"
    if isinstance(e, jwt.ImmatureSignatureError):
        return "invalid token: not valid yet (iat or nbf in the future)"
    if isinstance(e, jwt.InvalidIssuedAtError):
        return "invalid token: iat claim must be a number"
    if isinstance(e, jwt.exceptions.InvalidSubjectError):
        return "invalid token: sub claim must be a string"
    if isinstance(e, jwt.InvalidSignatureError):
        return "invalid token: signature does not verify"
    return "invalid token"


# ------------------------------------------------------------------ signing (local use and tests)

@dataclass(frozen=True)
class Signer:
    """A private signing key with its key id: the local key pair, or a test's identity provider."""

    key: Any  # Ed25519PrivateKey or RSAPrivateKey
    kid: str
    algorithm: str = "EdDSA"
    issuer: str = LOCAL_ISSUER

    def public_jwk(self) -> dict[str, Any]:
        pub = self.key.public_key()
        if isinstance(pub, ed25519.Ed25519PublicKey):
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(pub.public_bytes_raw())}
        else:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(pub))
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def okp_thumbprint(pub: ed25519.Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint of an Ed25519 public key: the local key's id."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(pub.public_bytes_raw())},
                           separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def mint(signer: Signer | None = None, *, subject: str, role: Role, areas: list[str], ttl_s: int = 12 * 3600,
         programmes: list[str] | None = None, audience: str | Sequence[str] | None = None,
         issuer: str | None = None, extra: dict[str, Any] | None = None) -> str:
    """A signed token; without `signer`, with the local key pair (made on first use) for every local
    service's audience. `extra` adds or overrides claims (tests)."""
    signer = signer or local_signer()
    now = int(time.time())
    aud = list(LOCAL_AUDIENCES) if audience is None else audience if isinstance(audience, str) else list(audience)
    claims: dict[str, Any] = {"iss": issuer or signer.issuer, "aud": aud, "sub": subject, "role": role.value,
                              "areas": areas, "iat": now, "exp": now + ttl_s}
    if programmes is not None:
        claims["programmes"] = programmes
    claims.update(extra or {})
    return jwt.encode(claims, signer.key, algorithm=signer.algorithm, headers={"kid": signer.kid})


# ------------------------------------------------------------------ the local key pair (.local/auth/)

LOCAL_KEY_FILE = "signing-key.pem"
LOCAL_JWKS_FILE = "jwks.json"


def _checkout_root() -> Path:
    """The checkout this library runs from (it holds libs/regsosek), else the working directory."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "libs" / "regsosek" / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def local_auth_dir() -> Path:
    """REGSOSEK_LOCAL_AUTH_DIR, else .local/auth/ of the checkout."""
    return Path(os.environ.get("REGSOSEK_LOCAL_AUTH_DIR") or _checkout_root() / ".local" / "auth")


def local_jwks_file() -> Path:
    """The local key pair's JWK Set, made first if missing: what local services verify against."""
    ensure_local_keypair()
    return local_auth_dir() / LOCAL_JWKS_FILE


def ensure_local_keypair(directory: Path | None = None) -> Signer:
    """The local Ed25519 signing key, generated on first use: `signing-key.pem` (PKCS#8, mode 0600)
    and `jwks.json` (its public half) in `directory` (default `local_auth_dir()`). Safe when several
    processes call it at once (a lock file); never prints or logs the key."""
    d = Path(directory or local_auth_dir())
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, jwks_path = d / LOCAL_KEY_FILE, d / LOCAL_JWKS_FILE
    import fcntl

    with open(d / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ed25519.Ed25519PrivateKey):
                raise ValueError(f"{key_path} is not an Ed25519 private key")
        else:
            key = ed25519.Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            tmp = key_path.with_suffix(".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            os.replace(tmp, key_path)
        signer = Signer(key=key, kid=okp_thumbprint(key.public_key()))
        text = json.dumps(signer.jwks(), indent=1) + "\n"
        if not jwks_path.exists() or jwks_path.read_text() != text:
            tmp = jwks_path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, jwks_path)
    return signer


_local_signers: dict[Path, Signer] = {}


def local_signer() -> Signer:
    """The local key pair's signer (made on first use), read once per process and folder."""
    d = local_auth_dir()
    if d not in _local_signers or not (d / LOCAL_KEY_FILE).exists():
        _local_signers[d] = ensure_local_keypair(d)
    return _local_signers[d]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m regsosek.auth",
        description="Mint a bearer token for local use, signed with the local key pair (.local/auth/, "
                    "made on first use); production tokens come from the identity provider")
    p.add_argument("--role", choices=[r.value for r in Role])
    p.add_argument("--sub")
    p.add_argument("--area", action="append", default=[],
                   help="SLS id prefix; repeat (or separate with commas or spaces) for several")
    p.add_argument("--programme", action="append", default=[],
                   help=f"programme code ({', '.join(PROGRAMME_CODES)}); repeat or separate with commas for several")
    p.add_argument("--audience", action="append", default=[],
                   help=f"aud claim; repeat for several (default: {' '.join(LOCAL_AUDIENCES)})")
    p.add_argument("--ttl", type=int, default=DEFAULT_MAX_LIFETIME_S,
                   help="seconds; at most REGSOSEK_AUTH_MAX_TOKEN_LIFETIME_S (default 43200)")
    p.add_argument("--keygen", action="store_true",
                   help="only make sure the local key pair exists; print the path of its jwks.json")
    a = p.parse_args(argv)
    if a.keygen:
        print(local_jwks_file())
        return 0
    if not a.role or not a.sub:
        p.error("--role and --sub are required")
    areas = [x for v in a.area for x in v.replace(",", " ").split()]
    programmes = list(dict.fromkeys(x for v in a.programme for x in v.replace(",", " ").split()))
    if bad := [x for x in areas if not is_ascii_digits(x, 2, 14)]:
        p.error(f"--area must be 2 to 14 ASCII digits (an SLS id prefix); got {len(bad)} that are not")
    if bad := [x for x in programmes if not is_programme_code(x)]:
        p.error(f"--programme must be one of {', '.join(PROGRAMME_CODES)}; got {', '.join(bad)}")
    if programmes and a.role != Role.PROGRAMME.value:
        p.error("--programme is for programme tokens (--role programme)")
    limit = int(os.environ.get("REGSOSEK_AUTH_MAX_TOKEN_LIFETIME_S") or DEFAULT_MAX_LIFETIME_S)
    if not 0 < a.ttl <= limit:
        p.error(f"--ttl must be between 1 and {limit} seconds (REGSOSEK_AUTH_MAX_TOKEN_LIFETIME_S): "
                "services refuse longer-lived tokens")
    print(mint(subject=a.sub, role=Role(a.role), areas=areas, ttl_s=a.ttl, audience=a.audience or None,
               programmes=programmes if a.role == Role.PROGRAMME.value else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
