"""Bearer tokens: minting, verification, area scoping, the FastAPI dependency."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from regsosek.auth import LOCAL_DEFAULT_SECRET, InvalidClaims, Principal, Role, bearer, mint, verify

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


# ------------------------------------------------------------------ malformed claims: refused, never widened

def _token(**claims) -> str:
    base = {"sub": "OFC-1", "role": "officer", "areas": ["6472"], "exp": int(time.time()) + 60}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not _DROP}, SECRET, algorithm="HS256")


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
        verify(SECRET, _token(areas=areas))
    assert "areas claim" in e.value.reason


@pytest.mark.parametrize("sub", [5, ["OFC-1"], {"id": "OFC-1"}, None, True])
def test_non_string_sub_is_refused(sub):
    with pytest.raises(jwt.InvalidTokenError):
        verify(SECRET, _token(sub=sub))


@pytest.mark.parametrize("sub", ["", "   ", "x" * 129, "OFC\n1", "OFC\x001"])
def test_empty_overlong_or_unprintable_sub_is_refused(sub):
    with pytest.raises(InvalidClaims) as e:
        verify(SECRET, _token(sub=sub))
    assert "sub claim" in e.value.reason


@pytest.mark.parametrize("role", ["superuser", "", "Officer", "OFFICER", 1, ["officer"], {"officer": 1}])
def test_unknown_or_non_string_role_is_refused(role):
    with pytest.raises(InvalidClaims) as e:
        verify(SECRET, _token(role=role))
    assert "role claim" in e.value.reason


@pytest.mark.parametrize("drop", ["sub", "role", "exp"])
def test_missing_claims_are_refused(drop):
    with pytest.raises(jwt.MissingRequiredClaimError):
        verify(SECRET, _token(**{drop: _DROP}))


@pytest.mark.parametrize("claim", ["sub", "role", "exp"])
def test_null_required_claims_count_as_missing(claim):
    with pytest.raises(jwt.MissingRequiredClaimError):
        verify(SECRET, _token(**{claim: None}))


def test_non_numeric_exp_is_refused():
    with pytest.raises(jwt.InvalidTokenError):
        verify(SECRET, _token(exp="tomorrow"))


def test_well_formed_claims_still_verify():
    p = verify(SECRET, _token(areas=["64", "6472", "6472010", "6472010001", "64720100010001"]))
    assert p.areas == ("64", "6472", "6472010", "6472010001", "64720100010001")
    assert verify(SECRET, _token(areas=[], role="admin")).role is Role.ADMIN


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
