"""Bearer tokens: minting, verification against a JWK Set, area scoping, the FastAPI dependency."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI
from fastapi.testclient import TestClient

from regsosek.auth import InvalidClaims, Principal, Role, Signer, TokenVerifier, mint
from regsosek.bearer import bearer
from regsosek.jwks import JwksFile

ISSUER = "https://idp.regsosek.test"
AUDIENCE = "regsosek-intake"
SIGNER = Signer(key=ed25519.Ed25519PrivateKey.generate(), kid="ed-test-1", issuer=ISSUER)
JWKS_PATH = Path(tempfile.mkdtemp(prefix="regsosek-auth-test-")) / "jwks.json"
JWKS_PATH.write_text(json.dumps(SIGNER.jwks()))
VERIFIER = TokenVerifier(JwksFile(JWKS_PATH), issuer=ISSUER, audience=AUDIENCE)


def verify(token: str) -> Principal:
    return VERIFIER.verify_sync(token)


def sign(**kw) -> str:
    return mint(SIGNER, audience=AUDIENCE, **kw)


def test_mint_verify_round_trip():
    tok = sign(subject="OFC-1", role=Role.OFFICER, areas=["6472", "640101"])
    p = verify(tok)
    assert p == Principal("OFC-1", Role.OFFICER, ("6472", "640101"))
    assert p.role is Role.OFFICER


def test_claims_include_expiry_from_ttl_issuer_audience_and_kid():
    before = int(time.time())
    tok = sign(subject="S", role=Role.SUPERVISOR, areas=[], ttl_s=600)
    claims = jwt.decode(tok, options={"verify_signature": False})
    assert claims["role"] == "supervisor" and claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert before + 600 <= claims["exp"] <= int(time.time()) + 600
    assert claims["exp"] - claims["iat"] == 600
    assert jwt.get_unverified_header(tok) == {"alg": "EdDSA", "kid": "ed-test-1", "typ": "JWT"}


def test_another_key_with_the_same_kid_does_not_verify():
    other = Signer(key=ed25519.Ed25519PrivateKey.generate(), kid=SIGNER.kid, issuer=ISSUER)
    tok = mint(other, subject="OFC-1", role=Role.OFFICER, areas=["6472"], audience=AUDIENCE)
    with pytest.raises(jwt.InvalidSignatureError):
        verify(tok)


def test_expired_token():
    tok = sign(subject="OFC-1", role=Role.OFFICER, areas=["6472"], ttl_s=600,
               extra={"iat": int(time.time()) - 1200, "exp": int(time.time()) - 600})
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(tok)


def test_unknown_role_rejected():
    with pytest.raises(ValueError):
        verify(_token(role="superuser"))


def test_missing_areas_claim_means_no_areas():
    p = verify(_token(areas=_DROP))
    assert p.areas == ()
    assert not p.may_act_for("64720100010001")


SLS = "64720100010001"


@pytest.mark.parametrize(
    "role,areas,sls,expected",
    [
        (Role.OFFICER, ("64",), SLS, True),  # province
        (Role.OFFICER, ("6472",), SLS, True),  # regency
        (Role.OFFICER, ("6472010001",), SLS, True),  # village
        (Role.OFFICER, (SLS,), SLS, True),  # the SLS itself
        (Role.OFFICER, ("6471",), SLS, False),
        (Role.OFFICER, ("6472010002",), SLS, False),
        (Role.OFFICER, ("6471", "6472"), SLS, True),
        (Role.OFFICER, (), SLS, False),
        (Role.SUPERVISOR, ("65",), SLS, False),
        (Role.VILLAGE_OFFICIAL, ("6472010001",), "64720100020001", False),
        (Role.ADMIN, (), SLS, True),
        (Role.ADMIN, ("11",), SLS, True),
    ],
)
def test_may_act_for(role, areas, sls, expected):
    assert Principal("P", role, areas).may_act_for(sls) is expected


def _client() -> TestClient:
    app = FastAPI()

    @app.get("/officer-only")
    async def officer_only(p: Principal = bearer(lambda _request: VERIFIER, Role.OFFICER)):
        return {"sub": p.subject, "role": p.role.value}

    return TestClient(app)


EXPIRED = {'iat': int(time.time()) - 700, 'exp': int(time.time()) - 100}


@pytest.mark.parametrize(
    "header,status,reason",
    [
        (None, 401, "missing bearer token"),
        ("Basic abc", 401, "missing bearer token"),
        ("Bearer not-a-jwt", 401, "invalid token"),
        (f"Bearer {sign(subject='O', role=Role.OFFICER, areas=[], extra=EXPIRED)}", 401, "token expired"),
        (f"Bearer {sign(subject='P', role=Role.PROGRAMME, areas=[])}", 403, "may not do this"),
    ],
)
def test_bearer_dependency_refusals(header, status, reason):
    headers = {"authorization": header} if header else {}
    r = _client().get("/officer-only", headers=headers)
    assert r.status_code == status
    assert reason in r.text


@pytest.mark.parametrize("role", [Role.OFFICER, Role.ADMIN])
def test_bearer_dependency_accepts_role_and_admin(role):
    tok = sign(subject="S1", role=role, areas=["6472"])
    r = _client().get("/officer-only", headers={"authorization": f"Bearer {tok}"})
    assert r.status_code == 200
    assert r.json() == {"sub": "S1", "role": role.value}


# ------------------------------------------------------------------ malformed claims: refused, never widened

def _token(*, signer: Signer = SIGNER, headers: dict | None = None, **claims) -> str:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "OFC-1", "role": "officer", "areas": ["6472"], "iat": now,
            "exp": now + 60}
    base.update(claims)
    payload = json.dumps({k: v for k, v in base.items() if v is not _DROP}).encode()  # any claim value, as sent
    return jwt.api_jws.PyJWS().encode(payload, signer.key, algorithm=signer.algorithm,
                                      headers={"kid": signer.kid, "typ": "JWT", **(headers or {})})


_DROP = object()


@pytest.mark.parametrize("areas", [
    "6472",  # a string: used to be iterated per character, i.e. prefixes "6", "4", "7", "2" (most of the country)
    "",
    None,
    {"6472": True},
    6472,
    [6472],
    ["6"],  # shorter than a province code: acts for a whole range of provinces
    [""],  # the empty prefix matches every SLS
    ["647201000100011"],  # longer than an SLS id
    ["64 72"], ["64x2"], ["６４７２"], ["٦٤"], ["६४"],
    [["6472"]], [None],
    ["6472", 64],
    ["64"] * 1001,
], ids=repr)
def test_malformed_areas_claim_is_refused(areas):
    with pytest.raises(InvalidClaims) as e:
        verify(_token(areas=areas))
    assert "areas claim" in e.value.reason


@pytest.mark.parametrize("sub", [5, ["OFC-1"], {"id": "OFC-1"}, None, True])
def test_non_string_sub_is_refused(sub):
    with pytest.raises(jwt.InvalidTokenError):
        verify(_token(sub=sub))


@pytest.mark.parametrize("sub", ["", "   ", "x" * 129, "OFC\n1", "OFC\x001"])
def test_empty_overlong_or_unprintable_sub_is_refused(sub):
    with pytest.raises(InvalidClaims) as e:
        verify(_token(sub=sub))
    assert "sub claim" in e.value.reason


@pytest.mark.parametrize("role", ["superuser", "", "Officer", "OFFICER", 1, ["officer"], {"officer": 1}])
def test_unknown_or_non_string_role_is_refused(role):
    with pytest.raises(InvalidClaims) as e:
        verify(_token(role=role))
    assert "role claim" in e.value.reason


@pytest.mark.parametrize("drop", ["sub", "role", "exp", "iat", "iss", "aud"])
def test_missing_claims_are_refused(drop):
    with pytest.raises(jwt.MissingRequiredClaimError):
        verify(_token(**{drop: _DROP}))


@pytest.mark.parametrize("claim", ["sub", "role", "exp", "iat", "iss", "aud"])
def test_null_required_claims_count_as_missing(claim):
    with pytest.raises(jwt.MissingRequiredClaimError):
        verify(_token(**{claim: None}))


def test_non_numeric_exp_is_refused():
    with pytest.raises(jwt.InvalidTokenError):
        verify(_token(exp="tomorrow"))


def test_well_formed_claims_still_verify():
    p = verify(_token(areas=["64", "6472", "6472010", "6472010001", "64720100010001"]))
    assert p.areas == ("64", "6472", "6472010", "6472010001", "64720100010001")
    assert verify(_token(areas=[], role="admin")).role is Role.ADMIN


@pytest.mark.parametrize("claims,reason", [
    ({"areas": "6472"}, "invalid token: areas claim"),
    ({"areas": ["６４"]}, "ASCII digits"),
    ({"role": "root"}, "invalid token: role claim"),
    ({"sub": ""}, "invalid token: sub claim"),
    ({"sub": 7}, "invalid token: sub claim must be a string"),
    ({"exp": _DROP}, "invalid token: exp claim is required"),
    ({"sub": _DROP}, "invalid token: sub claim is required"),
])
def test_bearer_dependency_names_the_bad_claim(claims, reason):
    r = _client().get("/officer-only", headers={"authorization": f"Bearer {_token(**claims)}"})
    assert r.status_code == 401, r.text
    assert reason in r.json()["detail"]["reason"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_cli_refuses_areas_that_are_not_ascii_digit_prefixes(capsys):
    from regsosek.auth import main

    with pytest.raises(SystemExit) as e:
        main(["--role", "officer", "--sub", "OFC-1", "--area", "６４"])
    assert e.value.code == 2 and "ASCII digits" in capsys.readouterr().err


# ------------------------------------------------------------------ programmes claim

def test_programmes_round_trip_and_absent_means_none():
    tok = sign(subject="PKH", role=Role.PROGRAMME, areas=["64"], programmes=["pkh", "pip"])
    assert verify(tok) == Principal("PKH", Role.PROGRAMME, ("64",), ("pkh", "pip"))
    assert verify(_token(role="programme")).programmes == ()


@pytest.mark.parametrize("programmes", [
    "pkh",  # a string, not a list: never iterated per character
    "", None, {"pkh": True}, 1, [1], [None], [["pkh"]],
    ["PKH"], ["pkh "], ["ｐｋｈ"], ["all"], ["*"], [""],  # unknown codes: no wildcard, no case folding
    ["pkh", "pkh"],  # repeated
    ["pkh", "pbi-jkn"],  # one bad element spoils the claim, it is not dropped
    ["pkh"] * 6,
], ids=repr)
def test_malformed_programmes_claim_is_refused(programmes):
    with pytest.raises(InvalidClaims) as e:
        verify(_token(role="programme", programmes=programmes))
    assert "programmes claim" in e.value.reason


def test_malformed_programmes_claim_is_a_401_with_the_reason():
    r = _client().get("/officer-only", headers={"authorization": f"Bearer {_token(programmes=['everything'])}"})
    assert r.status_code == 401 and "programmes claim" in r.text and "everything" not in r.text


def test_mint_command_takes_programmes(capsys, monkeypatch, tmp_path):
    from regsosek.auth import main

    monkeypatch.setenv("REGSOSEK_LOCAL_AUTH_DIR", str(tmp_path))
    assert main(["--role", "programme", "--sub", "PKH", "--programme", "pkh,pip", "--area", "64 65"]) == 0
    local = TokenVerifier(JwksFile(tmp_path / "jwks.json"), issuer="regsosek-local", audience="regsosek-notify")
    p = local.verify_sync(capsys.readouterr().out.strip())
    assert p.programmes == ("pkh", "pip") and p.areas == ("64", "65")
    with pytest.raises(SystemExit):
        main(["--role", "programme", "--sub", "PKH", "--programme", "health"])


# ------------------------------------------------------------------ verified tokens remembered


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _caching(path: Path = JWKS_PATH, size: int = 16) -> tuple[TokenVerifier, Clock]:
    clock = Clock()
    return TokenVerifier(JwksFile(path), issuer=ISSUER, audience=AUDIENCE, cache_size=size, clock=clock), clock


async def test_a_verified_token_is_accepted_again_without_its_signature_checked(monkeypatch):
    v, _ = _caching()
    tok = sign(subject="OFC-1", role=Role.OFFICER, areas=["6472"])
    first = await v.verify(tok)
    decoded = []
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append(a) or pytest.fail("signature checked again"))
    assert await v.verify(tok) == first == Principal("OFC-1", Role.OFFICER, ("6472",))
    assert v.cache_hits == 1 and decoded == []


async def test_a_remembered_token_is_not_taken_from_the_cache_past_its_exp(monkeypatch):
    v, clock = _caching()
    tok = sign(subject="OFC-1", role=Role.OFFICER, areas=["6472"], ttl_s=600)
    await v.verify(tok)
    clock.now = jwt.decode(tok, options={"verify_signature": False})["exp"]  # the verifier's clock reaches exp
    checked = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: checked.append(1) or real_decode(*a, **k))
    await v.verify(tok)  # every check again (the signature library's clock, still before exp, accepts it)
    assert checked == [1] and v.cache_hits == 0


async def test_a_remembered_token_is_refused_once_its_key_leaves_the_key_set(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(SIGNER.jwks()))
    clock = Clock()
    v = TokenVerifier(JwksFile(path, refresh_s=0.0, min_refetch_s=0.0), issuer=ISSUER, audience=AUDIENCE,
                      clock=clock)
    tok = sign(subject="OFC-1", role=Role.OFFICER, areas=["6472"])
    await v.verify(tok)
    other = Signer(key=ed25519.Ed25519PrivateKey.generate(), kid="ed-test-2", issuer=ISSUER)
    path.write_text(json.dumps(other.jwks()))  # the provider rotated: ed-test-1 is gone
    with pytest.raises(jwt.InvalidTokenError, match="unknown signing key"):
        await v.verify(tok)
    assert v.cache_hits == 0


async def test_a_forged_signature_is_refused_while_the_genuine_token_is_remembered():
    v, _ = _caching()
    tok = sign(subject="OFC-1", role=Role.OFFICER, areas=["6472"])
    await v.verify(tok)
    head, body, sig = tok.split(".")
    forged = ".".join((head, body, ("A" if sig[0] != "A" else "B") + sig[1:]))
    with pytest.raises(jwt.InvalidSignatureError):
        await v.verify(forged)


async def test_the_cache_is_bounded_least_recently_used_first():
    v, _ = _caching(size=2)
    a, b, c = (sign(subject=f"OFC-{i}", role=Role.OFFICER, areas=["6472"]) for i in range(3))
    for t in (a, b, a, c):  # a used again, so b is the least recently used when c arrives
        await v.verify(t)
    assert len(v._verified) == 2 and v.cache_hits == 1
    await v.verify(a)
    assert v.cache_hits == 2
    await v.verify(b)  # forgotten: verified again
    assert v.cache_hits == 2


async def test_a_cache_size_of_zero_remembers_nothing():
    v, _ = _caching(size=0)
    tok = sign(subject="OFC-1", role=Role.OFFICER, areas=["6472"])
    await v.verify(tok)
    await v.verify(tok)
    assert v.cache_hits == 0 and not v._verified
