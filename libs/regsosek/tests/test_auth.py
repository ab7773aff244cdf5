"""Bearer tokens: minting, verification, area scoping, the FastAPI dependency."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from regsosek.auth import LOCAL_DEFAULT_SECRET, Principal, Role, bearer, mint, verify

SECRET = "a-test-secret-that-is-long-enough-0123456789"


def test_mint_verify_round_trip():
    tok = mint(SECRET, subject="OFC-1", role=Role.OFFICER, areas=["6472", "640101"])
    p = verify(SECRET, tok)
    assert p == Principal("OFC-1", Role.OFFICER, ("6472", "640101"))
    assert p.role is Role.OFFICER


def test_claims_include_expiry_from_ttl():
    before = int(time.time())
    tok = mint(SECRET, subject="S", role=Role.SUPERVISOR, areas=[], ttl_s=600)
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"])
    assert claims["role"] == "supervisor"
    assert before + 600 <= claims["exp"] <= int(time.time()) + 600
    assert claims["exp"] - claims["iat"] == 600


def test_wrong_secret():
    tok = mint(SECRET, subject="OFC-1", role=Role.OFFICER, areas=["6472"])
    with pytest.raises(jwt.InvalidSignatureError):
        verify("another-secret-entirely-0123456789-abcdef", tok)


def test_expired_token():
    tok = mint(SECRET, subject="OFC-1", role=Role.OFFICER, areas=["6472"], ttl_s=-60)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(SECRET, tok)


@pytest.mark.parametrize("drop", ["sub", "role", "exp"])
def test_required_claims(drop):
    claims = {"sub": "X", "role": "officer", "areas": [], "exp": int(time.time()) + 60}
    del claims[drop]
    tok = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(jwt.MissingRequiredClaimError):
        verify(SECRET, tok)


def test_unknown_role_rejected():
    tok = jwt.encode({"sub": "X", "role": "superuser", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(ValueError):
        verify(SECRET, tok)


def test_other_algorithm_rejected():
    long_secret = SECRET * 2  # long enough for HS512
    tok = jwt.encode({"sub": "X", "role": "admin", "exp": int(time.time()) + 60}, long_secret, algorithm="HS512")
    with pytest.raises(jwt.InvalidAlgorithmError):
        verify(long_secret, tok)


def test_missing_areas_claim_means_no_areas():
    tok = jwt.encode({"sub": "X", "role": "officer", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    p = verify(SECRET, tok)
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
    async def officer_only(p: Principal = bearer(lambda _request: SECRET, Role.OFFICER)):
        return {"sub": p.subject, "role": p.role.value}

    return TestClient(app)


@pytest.mark.parametrize(
    "header,status,reason",
    [
        (None, 401, "missing bearer token"),
        ("Basic abc", 401, "missing bearer token"),
        ("Bearer not-a-jwt", 401, "invalid token"),
        (f"Bearer {mint(SECRET, subject='O', role=Role.OFFICER, areas=[], ttl_s=-60)}", 401, "token expired"),
        (f"Bearer {mint(LOCAL_DEFAULT_SECRET, subject='O', role=Role.OFFICER, areas=[])}", 401, "invalid token"),
        (f"Bearer {mint(SECRET, subject='P', role=Role.PROGRAMME, areas=[])}", 403, "may not do this"),
    ],
)
def test_bearer_dependency_refusals(header, status, reason):
    headers = {"authorization": header} if header else {}
    r = _client().get("/officer-only", headers=headers)
    assert r.status_code == status
    assert reason in r.text


@pytest.mark.parametrize("role", [Role.OFFICER, Role.ADMIN])
def test_bearer_dependency_accepts_role_and_admin(role):
    tok = mint(SECRET, subject="S1", role=role, areas=["6472"])
    r = _client().get("/officer-only", headers={"authorization": f"Bearer {tok}"})
    assert r.status_code == 200
    assert r.json() == {"sub": "S1", "role": role.value}
