"""Verify needs no NIK hash key (only the optional legacy key, production rule), and the progress prefix being ASCII digits."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from regsosek.auth import Role, mint
from regsosek.keys import InsecureSecret
from regsosek.service import add_validation_answer
from verify.api import progress_router
from verify.settings import VerifySettings

STRONG = "a9Vq3x7LmZp2Rt8Kc4Wy6Hn1Bd5Gf0Js"  # 32 bytes, not a published key
PROD_AUTH = {"REGSOSEK_AUTH_JWKS_URL": "https://idp.example.go.id/jwks", "REGSOSEK_AUTH_ISSUER": "https://idp.example.go.id",
             "REGSOSEK_AUTH_AUDIENCE": "regsosek-verify"}  # verify checks bearer tokens too


def _prod_auth(monkeypatch):
    for k, v in PROD_AUTH.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("REGSOSEK_AUTH_SECRET", raising=False)


def test_production_needs_no_nik_hash_key(monkeypatch):
    """Verify compares the hashes intake publishes; without the legacy key it starts, and a v1
    record (identifiers in clear) cannot be read (dead-lettered by the handler)."""
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    _prod_auth(monkeypatch)
    monkeypatch.delenv("REGSOSEK_LEGACY_NIK_HASH_KEY", raising=False)
    s = VerifySettings()
    assert s.legacy_key() is None and not hasattr(s, "nik_hash_key")


@pytest.mark.parametrize("value,needle", [
    ("local-development-nik-key", "development key"),
    (STRONG[:31], "at least 32 bytes"),
])
def test_production_refuses_a_development_or_short_legacy_key(monkeypatch, value, needle):
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    _prod_auth(monkeypatch)
    monkeypatch.setenv("REGSOSEK_LEGACY_NIK_HASH_KEY", value)
    with pytest.raises(InsecureSecret) as e:
        VerifySettings()
    assert "REGSOSEK_LEGACY_NIK_HASH_KEY" in str(e.value) and needle in str(e.value)
    assert value not in str(e.value)


def test_production_accepts_a_strong_legacy_key(monkeypatch):
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    _prod_auth(monkeypatch)
    monkeypatch.setenv("REGSOSEK_LEGACY_NIK_HASH_KEY", STRONG)
    assert VerifySettings().legacy_key() == STRONG


def test_local_reads_v1_records_with_the_development_key(monkeypatch):
    monkeypatch.delenv("REGSOSEK_ENV", raising=False)
    monkeypatch.delenv("REGSOSEK_LEGACY_NIK_HASH_KEY", raising=False)
    assert VerifySettings().legacy_key() == "local-development-nik-key"


def _client() -> TestClient:
    app = FastAPI()
    add_validation_answer(app)  # as build_app installs it
    app.include_router(progress_router(VerifySettings(env="local")))  # the local key pair's JWKS
    app.state.runtime = SimpleNamespace()  # no pool: every request here is refused before the store is read
    return TestClient(app)


def _auth(role: Role, areas: list[str]) -> dict:
    return {"authorization": f"Bearer {mint(subject='U-1', role=role, areas=areas)}"}


@pytest.mark.parametrize("prefix", ["６４", "٦٤", "६४", "64७२", "6x", "123456789012345"])
def test_progress_prefix_must_be_ascii_digits(prefix):
    r = _client().get("/v1/progress", params={"prefix": prefix}, headers=_auth(Role.ADMIN, []))
    assert r.status_code == 422, r.text
    (err,) = r.json()["errors"]
    assert err["path"] == "/query/prefix" and "ASCII digits" in err["reason"]
    assert prefix not in r.text  # the refused value is not repeated


# ---------------------------------------------------------------- progress: authenticated and scoped


def test_progress_needs_a_token():
    r = _client().get("/v1/progress", params={"prefix": "6472"})
    assert r.status_code == 401 and "missing bearer token" in r.text


def test_progress_is_not_for_programmes():
    r = _client().get("/v1/progress", params={"prefix": "6472"}, headers=_auth(Role.PROGRAMME, ["64"]))
    assert r.status_code == 403


@pytest.mark.parametrize("role,areas,prefix", [
    (Role.OFFICER, ["6472"], "6471"),  # another regency
    (Role.OFFICER, ["6472"], "64"),  # wider than the caller's area
    (Role.SUPERVISOR, ["6472010001"], "6472010002"),
    (Role.VILLAGE_OFFICIAL, ["6472010001"], "6472"),
    (Role.OFFICER, [], "6472"),
])
def test_progress_outside_the_callers_areas_is_refused(role, areas, prefix):
    r = _client().get("/v1/progress", params={"prefix": prefix}, headers=_auth(role, areas))
    assert r.status_code == 403 and "not within the areas" in r.text


def test_progress_of_the_nation_is_for_admins():
    r = _client().get("/v1/progress", headers=_auth(Role.SUPERVISOR, ["6472", "6471"]))
    assert r.status_code == 422 and "prefix required" in r.text


def test_production_refuses_to_start_without_the_identity_provider(monkeypatch):
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    monkeypatch.delenv("REGSOSEK_LEGACY_NIK_HASH_KEY", raising=False)
    for k in PROD_AUTH:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv("REGSOSEK_AUTH_JWKS_FILE", raising=False)
    with pytest.raises(InsecureSecret) as e:
        VerifySettings()
    assert "REGSOSEK_AUTH_JWKS_URL" in str(e.value) and "REGSOSEK_AUTH_ISSUER" in str(e.value)
