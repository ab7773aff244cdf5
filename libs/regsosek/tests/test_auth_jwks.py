"""Tokens from an identity provider: asymmetric signatures (EdDSA, RS256) checked against a JWK Set
from a file or an https URL, issuer, per-service audience, lifetime, algorithm allow-list; the
local key pair; the production refusals of TokenSettings."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from regsosek.auth import Principal, Role, Signer, TokenRefused, TokenVerifier, ensure_local_keypair, mint, refusal_reason
from regsosek.bearer import bearer
from regsosek.jwks import JwksFile, JwksUrl, KeysUnavailable, parse_jwks
from regsosek.keys import InsecureSecret

ISSUER = "https://idp.regsosek.test/realms/census"
ED = Signer(key=ed25519.Ed25519PrivateKey.generate(), kid="ed-1", issuer=ISSUER)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RS = Signer(key=RSA_KEY, kid="rs-1", algorithm="RS256", issuer=ISSUER)


@pytest.fixture
def jwks_file(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [ED.public_jwk(), RS.public_jwk()]}))
    return path


def verifier(path, audience="regsosek-intake", **kw) -> TokenVerifier:
    return TokenVerifier(JwksFile(path), issuer=ISSUER, audience=audience, **kw)


def token(signer=ED, *, audience="regsosek-intake", ttl_s=600, headers=None, **extra) -> str:
    if headers is not None:  # a hand-made header (alg/kid tricks)
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": audience, "sub": "OFC-1", "role": "officer", "areas": ["64"], "iat": now,
                  "exp": now + ttl_s, **extra}
        return jwt.encode(claims, signer.key, algorithm=signer.algorithm, headers=headers)
    return mint(signer, subject="OFC-1", role=Role.OFFICER, areas=["64"], ttl_s=ttl_s, audience=audience,
                extra=extra or None)


def refused(v: TokenVerifier, tok: str) -> str:
    with pytest.raises((jwt.InvalidTokenError, KeysUnavailable)) as e:
        v.verify_sync(tok)
    return refusal_reason(e.value)


@pytest.mark.parametrize("signer", [ED, RS], ids=["EdDSA", "RS256"])
def test_eddsa_and_rs256_tokens_verify_against_a_jwks_file(jwks_file, signer):
    assert verifier(jwks_file).verify_sync(token(signer)) == Principal("OFC-1", Role.OFFICER, ("64",))
    assert asyncio.run(verifier(jwks_file).verify(token(signer))).subject == "OFC-1"


def test_a_token_for_another_service_is_refused(jwks_file):
    tok = token(audience="regsosek-notify")
    assert verifier(jwks_file, audience="regsosek-notify").verify_sync(tok).subject == "OFC-1"
    assert "aud claim does not name this service" in refused(verifier(jwks_file, audience="regsosek-intake"), tok)
    # several audiences: accepted by each service it names
    both = token(audience=["regsosek-intake", "regsosek-verify"])
    assert verifier(jwks_file, audience="regsosek-verify").verify_sync(both).subject == "OFC-1"
    assert "aud claim" in refused(verifier(jwks_file, audience="regsosek-notify"), both)


def test_wrong_issuer_is_refused(jwks_file):
    tok = token(iss="https://evil.example/")
    assert "iss claim is not the configured identity provider" in refused(verifier(jwks_file), tok)


def test_expired_token_is_refused_beyond_the_leeway(jwks_file):
    now = int(time.time())
    assert refused(verifier(jwks_file), token(iat=now - 700, exp=now - 100)) == "token expired"
    # within the leeway (30 s) it still counts as valid: clocks differ a little
    assert verifier(jwks_file).verify_sync(token(iat=now - 700, exp=now - 10)).subject == "OFC-1"


def test_a_token_issued_in_the_future_is_refused(jwks_file):
    now = int(time.time())
    assert "not valid yet" in refused(verifier(jwks_file), token(iat=now + 600, exp=now + 1200))


def test_too_long_lived_token_is_refused(jwks_file):
    v = verifier(jwks_file, max_lifetime_s=12 * 3600)
    assert v.verify_sync(token(ttl_s=12 * 3600)).subject == "OFC-1"  # exactly the maximum
    reason = refused(v, token(ttl_s=12 * 3600 + 1))
    assert "lifetime" in reason and "43200" in reason


@pytest.mark.parametrize("claim", ["exp", "iat"])
def test_exp_and_iat_are_required(jwks_file, claim):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "regsosek-intake", "sub": "O", "role": "officer", "iat": now, "exp": now + 60}
    del claims[claim]
    tok = jwt.encode(claims, ED.key, algorithm="EdDSA", headers={"kid": "ed-1"})
    assert refused(verifier(jwks_file), tok) == f"invalid token: {claim} claim is required"


def test_unknown_kid_is_refused(jwks_file):
    stranger = Signer(key=ed25519.Ed25519PrivateKey.generate(), kid="not-published", issuer=ISSUER)
    assert "unknown signing key id 'not-published'" in refused(verifier(jwks_file), token(stranger))


def test_missing_kid_is_refused(jwks_file):
    assert "no kid" in refused(verifier(jwks_file), token(headers={}))


def test_alg_none_is_refused(jwks_file):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "regsosek-intake", "sub": "O", "role": "admin", "iat": now, "exp": now + 60}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "ed-1"})
    assert "algorithm 'none' is not accepted" in refused(verifier(jwks_file), unsigned)
    # hand-made with a trailing empty signature, as attackers send it
    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    forged = f"{b64({'alg': 'none', 'kid': 'ed-1', 'typ': 'JWT'})}.{b64(claims)}."
    assert "not accepted" in refused(verifier(jwks_file), forged)


def _hs256(secret: bytes, kid: str) -> str:
    """An HS256 token made with `secret`, by hand (PyJWT itself refuses PEM-looking HMAC keys)."""
    import hashlib
    import hmac

    now = int(time.time())
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps({"iss": ISSUER, "aud": "regsosek-intake", "sub": "ATTACKER", "role": "admin",
                           "areas": [], "iat": now, "exp": now + 60}).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


@pytest.mark.parametrize("signer", [ED, RS], ids=["Ed25519", "RSA"])
def test_algorithm_confusion_hs256_signed_with_the_public_key_is_refused(jwks_file, signer):
    pub = signer.key.public_key()
    for secret in (pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
                   json.dumps(signer.public_jwk()).encode(),
                   base64.urlsafe_b64decode(signer.public_jwk().get("x", "AA") + "==")):
        reason = refused(verifier(jwks_file), _hs256(secret, signer.kid))
        assert "algorithm 'HS256' is not accepted" in reason, reason


def test_alg_must_match_the_key(jwks_file):
    # an RS256 header naming the Ed25519 key (and the other way round) is refused before any signature check
    tok = token(RS, headers={"kid": "ed-1"})
    assert "does not match" in refused(verifier(jwks_file), tok)
    tok = token(ED, headers={"kid": "rs-1"})
    assert "does not match" in refused(verifier(jwks_file), tok)


def test_allow_list_narrows_algorithms(jwks_file):
    only_ed = verifier(jwks_file, algorithms=["EdDSA"])
    assert "algorithm 'RS256' is not accepted" in refused(only_ed, token(RS))


@pytest.mark.parametrize("algorithms", [["HS256"], ["EdDSA", "HS512"], ["none"], []])
def test_symmetric_or_none_algorithms_cannot_be_configured(jwks_file, algorithms):
    with pytest.raises(ValueError):
        verifier(jwks_file, algorithms=algorithms)


def test_symmetric_and_private_keys_in_the_jwks_are_never_used(tmp_path):
    oct_key = {"kty": "oct", "kid": "hmac", "k": base64.urlsafe_b64encode(b"s" * 32).rstrip(b"=").decode()}
    private = {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(ED.key)), "kid": "leaked"}
    keys = parse_jwks(json.dumps({"keys": [oct_key, private, ED.public_jwk(), {**RS.public_jwk(), "use": "enc"}]}).encode())
    assert list(keys) == ["ed-1"]
    with pytest.raises(KeysUnavailable):
        parse_jwks(json.dumps({"keys": [oct_key]}).encode())


def test_short_rsa_keys_are_refused(tmp_path):
    weak = Signer(key=rsa.generate_private_key(public_exponent=65537, key_size=1024), kid="weak", algorithm="RS256",
                  issuer=ISSUER)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(weak.jwks()))
    assert "shorter than 2048 bits" in refused(verifier(path), token(weak))


def test_jwks_file_too_large_or_missing_is_a_reason_not_a_crash(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"keys": [ED.public_jwk()], "pad": "x" * 70_000}))
    assert "larger than" in refused(verifier(big), token())
    assert "cannot be read" in refused(verifier(tmp_path / "absent.json"), token())


# ------------------------------------------------------------------ JWKS URL: cache, refresh, bounds

class FakeIdp:
    def __init__(self, *signers: Signer) -> None:
        self.signers = list(signers)
        self.requests = 0
        self.body: bytes | None = None
        self.status = 200

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        assert request.url.path == "/jwks"
        body = self.body if self.body is not None else json.dumps({"keys": [s.public_jwk() for s in self.signers]}).encode()
        return httpx.Response(self.status, content=body, headers={"content-type": "application/json"})


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def url_verifier(idp: FakeIdp, clock: Clock, **kw) -> TokenVerifier:
    source = JwksUrl("https://idp.regsosek.test/jwks", transport=httpx.MockTransport(idp.handler),
                     refresh_s=300, min_refetch_s=10, clock=clock, **kw)
    return TokenVerifier(source, issuer=ISSUER, audience="regsosek-intake")


def test_jwks_url_is_cached_and_refreshed_on_an_unknown_kid():
    idp, clock = FakeIdp(ED), Clock()
    v = url_verifier(idp, clock)

    async def scenario():
        assert (await v.verify(token(ED))).subject == "OFC-1"
        assert (await v.verify(token(ED))).subject == "OFC-1"
        assert idp.requests == 1  # cached
        # the provider rotates: a new key appears; the first token naming it fetches the set again
        new = Signer(key=ed25519.Ed25519PrivateKey.generate(), kid="ed-2", issuer=ISSUER)
        idp.signers.append(new)
        clock.t += 11
        assert (await v.verify(token(new))).subject == "OFC-1"
        assert idp.requests == 2
        # an unknown kid does not hammer the provider: at most one fetch per min_refetch_s
        stranger = Signer(key=ed25519.Ed25519PrivateKey.generate(), kid="nobody", issuer=ISSUER)
        for _ in range(5):
            with pytest.raises(TokenRefused):
                await v.verify(token(stranger))
        assert idp.requests == 2
        clock.t += 11
        with pytest.raises(TokenRefused):
            await v.verify(token(stranger))
        assert idp.requests == 3
        # the refresh interval reloads even known keys (a removed key stops working)
        idp.signers = [new]
        clock.t += 301
        with pytest.raises(TokenRefused, match="unknown signing key"):
            await v.verify(token(ED))
        assert (await v.verify(token(new))).subject == "OFC-1"

    asyncio.run(scenario())


def test_jwks_url_outage_keeps_the_last_good_set_and_a_first_failure_is_a_reason():
    idp, clock = FakeIdp(ED), Clock()
    v = url_verifier(idp, clock)

    async def scenario():
        assert (await v.verify(token(ED))).subject == "OFC-1"
        idp.status = 503
        clock.t += 301
        assert (await v.verify(token(ED))).subject == "OFC-1"  # stale but good
        down = url_verifier(idp, Clock())
        with pytest.raises(KeysUnavailable) as e:
            await down.verify(token(ED))
        assert "answered 503" in refusal_reason(e.value)

    asyncio.run(scenario())


def test_jwks_url_response_size_is_bounded():
    idp = FakeIdp(ED)
    idp.body = json.dumps({"keys": [ED.public_jwk()], "pad": "x" * 5000}).encode()
    v = url_verifier(idp, Clock(), max_bytes=4096)
    with pytest.raises(KeysUnavailable, match="larger than 4096 bytes"):
        asyncio.run(v.verify(token(ED)))


def test_jwks_url_timeout_is_a_reason():
    async def slow(request):
        await asyncio.sleep(5)
        return httpx.Response(200, json={"keys": [ED.public_jwk()]})

    source = JwksUrl("https://idp.regsosek.test/jwks", transport=httpx.MockTransport(slow), timeout_s=0.2)
    v = TokenVerifier(source, issuer=ISSUER, audience="regsosek-intake")
    t0 = time.monotonic()
    with pytest.raises(KeysUnavailable, match="not reachable"):
        asyncio.run(v.verify(token(ED)))
    assert time.monotonic() - t0 < 2


def test_jwks_url_against_a_real_local_http_server():
    """The same through a socket: a tiny HTTP server serving the key set."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    body = json.dumps(RS.jwks()).encode()
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = JwksUrl(f"http://127.0.0.1:{server.server_port}/jwks")
        v = TokenVerifier(source, issuer=ISSUER, audience="regsosek-intake")
        assert asyncio.run(v.verify(token(RS))).subject == "OFC-1"
        assert hits == ["/jwks"]
    finally:
        server.shutdown()


# ------------------------------------------------------------------ the HTTP dependency: 401 with a reason

def test_bearer_gives_401_with_the_reason_never_5xx(jwks_file, tmp_path):
    v = verifier(jwks_file)
    app = FastAPI()

    @app.get("/x")
    async def x(p: Principal = bearer(lambda _r: v, Role.OFFICER)):
        return {"sub": p.subject}

    broken = TokenVerifier(JwksFile(tmp_path / "absent.json"), issuer=ISSUER, audience="regsosek-intake")

    @app.get("/broken")
    async def b(p: Principal = bearer(lambda _r: broken, Role.OFFICER)):
        return {}

    c = TestClient(app)
    now = int(time.time())
    cases = [
        (token(audience="regsosek-notify"), "aud claim"),
        (token(iss="https://other/"), "iss claim"),
        (token(ttl_s=13 * 3600), "lifetime"),
        (token(iat=now - 700, exp=now - 100), "token expired"),
        (_hs256(b"whatever", "ed-1"), "HS256"),
        ("a.b.c", "malformed"),
        ("x" * 33000, "longer than"),
    ]
    for tok, reason in cases:
        r = c.get("/x", headers={"authorization": f"Bearer {tok}"})
        assert r.status_code == 401 and reason in r.json()["detail"]["reason"], (reason, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    r = c.get("/broken", headers={"authorization": f"Bearer {token()}"})
    assert r.status_code == 401 and "signing keys unavailable" in r.text
    assert c.get("/x", headers={"authorization": f"Bearer {token()}"}).json() == {"sub": "OFC-1"}


# ------------------------------------------------------------------ the local key pair

def test_local_key_pair_is_made_once_private_key_0600(tmp_path, monkeypatch):
    monkeypatch.setenv("REGSOSEK_LOCAL_AUTH_DIR", str(tmp_path / "auth"))
    s1 = ensure_local_keypair()
    s2 = ensure_local_keypair()
    key = tmp_path / "auth" / "signing-key.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert s1.kid == s2.kid
    jwks = json.loads((tmp_path / "auth" / "jwks.json").read_text())
    assert [k["kid"] for k in jwks["keys"]] == [s1.kid] and "d" not in jwks["keys"][0]
    tok = mint(subject="OFC-1", role=Role.OFFICER, areas=["64"])  # the local pair, every local audience
    for aud in ("regsosek-intake", "regsosek-verify", "regsosek-notify"):
        v = TokenVerifier(JwksFile(tmp_path / "auth" / "jwks.json"), issuer="regsosek-local", audience=aud)
        assert v.verify_sync(tok).subject == "OFC-1"


def test_cli_keygen_and_ttl_limit(tmp_path, monkeypatch, capsys):
    from regsosek.auth import main

    monkeypatch.setenv("REGSOSEK_LOCAL_AUTH_DIR", str(tmp_path))
    assert main(["--keygen"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "jwks.json")
    with pytest.raises(SystemExit):
        main(["--role", "officer", "--sub", "O", "--area", "64", "--ttl", str(13 * 3600)])
    assert "REGSOSEK_AUTH_MAX_TOKEN_LIFETIME_S" in capsys.readouterr().err
    assert main(["--role", "officer", "--sub", "O", "--area", "64", "--audience", "regsosek-verify"]) == 0
    tok = capsys.readouterr().out.strip()
    assert jwt.decode(tok, options={"verify_signature": False})["aud"] == ["regsosek-verify"]


# ------------------------------------------------------------------ settings: production refusals

PROD = {"REGSOSEK_ENV": "production", "REGSOSEK_AUTH_JWKS_URL": "https://idp.regsosek.test/jwks",
        "REGSOSEK_AUTH_ISSUER": ISSUER, "REGSOSEK_AUTH_AUDIENCE": "regsosek-intake"}


def _settings(monkeypatch, env: dict[str, str | None]):
    from regsosek.settings import TokenSettings

    for k in list(os.environ):
        if k.startswith("REGSOSEK_AUTH_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        if v is not None:
            monkeypatch.setenv(k, v)
    return TokenSettings(service_name="intake")


def test_production_settings_with_jwks_issuer_and_audience_start(monkeypatch):
    s = _settings(monkeypatch, PROD)
    v = s.token_verifier()
    assert isinstance(v.keys, JwksUrl) and v.issuer == ISSUER and v.audience == "regsosek-intake"
    assert v.algorithms == ("EdDSA", "RS256") and v.max_lifetime_s == 12 * 3600


@pytest.mark.parametrize("change,needle", [
    ({"REGSOSEK_AUTH_JWKS_URL": None}, "REGSOSEK_AUTH_JWKS_URL (or REGSOSEK_AUTH_JWKS_FILE) must be set"),
    ({"REGSOSEK_AUTH_ISSUER": None}, "REGSOSEK_AUTH_ISSUER must be set"),
    ({"REGSOSEK_AUTH_AUDIENCE": None}, "REGSOSEK_AUTH_AUDIENCE must be set"),
    ({"REGSOSEK_AUTH_JWKS_URL": "http://idp.regsosek.test/jwks"}, "https"),
    ({"REGSOSEK_AUTH_ISSUER": "regsosek-local"}, "local key pair"),
    ({"REGSOSEK_AUTH_SECRET": "x" * 64}, "every service holding the secret could mint tokens"),
    ({"REGSOSEK_AUTH_ALGORITHMS": "EdDSA,HS256"}, "REGSOSEK_AUTH_ALGORITHMS"),
    ({"REGSOSEK_AUTH_JWKS_FILE": "/etc/jwks.json"}, "not both"),
])
def test_production_refusals(monkeypatch, change, needle):
    with pytest.raises(InsecureSecret) as e:
        _settings(monkeypatch, {**PROD, **change})
    assert needle in str(e.value)
    assert "x" * 64 not in str(e.value)


def test_local_defaults_use_the_local_key_pair(monkeypatch, tmp_path):
    monkeypatch.setenv("REGSOSEK_LOCAL_AUTH_DIR", str(tmp_path))
    s = _settings(monkeypatch, {"REGSOSEK_ENV": "local"})
    v = s.token_verifier()
    assert isinstance(v.keys, JwksFile) and v.keys.path == tmp_path / "jwks.json"
    assert (v.issuer, v.audience) == ("regsosek-local", "regsosek-intake")
    assert v.verify_sync(mint(subject="OFC-1", role=Role.OFFICER, areas=["64"])).subject == "OFC-1"
