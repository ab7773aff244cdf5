"""Verify's NIK hash key in production, and the progress prefix being ASCII digits."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from regsosek.keys import InsecureSecret
from verify.api import router
from verify.settings import VerifySettings

STRONG = "a9Vq3x7LmZp2Rt8Kc4Wy6Hn1Bd5Gf0Js"  # 32 bytes, not a published key


@pytest.mark.parametrize("value,needle", [
    (None, "development key"),  # unset: the default is the public development key
    ("local-development-nik-key", "development key"),
    ("", "must be set"),
    ("   ", "must be set"),
    (STRONG[:31], "at least 32 bytes"),
])
def test_production_refuses_missing_development_or_short_nik_key(monkeypatch, value, needle):
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    if value is None:
        monkeypatch.delenv("REGSOSEK_NIK_HASH_KEY", raising=False)
    else:
        monkeypatch.setenv("REGSOSEK_NIK_HASH_KEY", value)
    with pytest.raises(InsecureSecret) as e:
        VerifySettings()
    assert "REGSOSEK_NIK_HASH_KEY" in str(e.value) and needle in str(e.value)
    if value and value.strip():
        assert value not in str(e.value)


def test_production_accepts_a_strong_nik_key(monkeypatch):
    monkeypatch.setenv("REGSOSEK_ENV", "production")
    monkeypatch.setenv("REGSOSEK_NIK_HASH_KEY", STRONG)
    assert VerifySettings().nik_hash_key == STRONG


def test_local_keeps_the_development_key(monkeypatch):
    monkeypatch.delenv("REGSOSEK_ENV", raising=False)
    monkeypatch.delenv("REGSOSEK_NIK_HASH_KEY", raising=False)
    assert VerifySettings().nik_hash_key == "local-development-nik-key"


@pytest.mark.parametrize("prefix", ["６４", "٦٤", "६४", "64७२", "6x", "123456789012345"])
def test_progress_prefix_must_be_ascii_digits(prefix):
    app = FastAPI()
    app.include_router(router)
    r = TestClient(app).get("/v1/progress", params={"prefix": prefix})
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    assert err["loc"] == ["query", "prefix"] and "ASCII digits" in err["msg"]
