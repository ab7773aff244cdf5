"""What erasure removes from a stored body (intake.domain.redact_family), and the NIK key rule on intake."""

from __future__ import annotations

import pytest

from intake.domain import redact_family
from regsosek.examples import family_interview
from regsosek.keys import InsecureSecret

FID = "64720100010001-0001-001"


def test_an_interview_loses_every_direct_identifier_and_keeps_its_answers():
    doc = family_interview()
    doc["location"].update(address="Jl. Mawar 1", gps={"lat": -0.5, "lon": 117.1})
    out = redact_family("interview", doc, FID)
    assert doc["location"]["kk_number"]  # the input is not changed
    assert not {"kk_number", "address", "gps"} & set(out["location"])
    assert all("name" not in m and "nik" not in m for m in out["members"])
    assert out["housing"] == doc["housing"] and out["members"][0]["date_of_birth"] == "1980-05-05"


def test_a_roster_loses_only_the_erased_familys_kk_and_name():
    doc = {"sls_id": FID[:14], "confirmed_by": "RT", "families": [
        {"building_no": 1, "family_no": 1, "kk_number": "6472010101220001", "head_name": "Budi", "member_count": 3},
        {"building_no": 2, "family_no": 1, "kk_number": "6472010101220002", "head_name": "Andi", "member_count": 2}]}
    out = redact_family("roster", doc, FID)
    assert out["families"][0] == {"building_no": 1, "family_no": 1, "member_count": 3}
    assert out["families"][1] == doc["families"][1]
    assert redact_family("roster", {**doc, "sls_id": "64720100010002"}, FID) == {**doc, "sls_id": "64720100010002"}


def test_resolution_reason_is_emptied():
    assert redact_family("resolution", {"family_id": FID, "reason": "Pak Budi moved"}, FID)["reason"] == ""


@pytest.mark.parametrize("value", [None, "local-development-nik-key", "short"])
def test_production_intake_refuses_a_weak_nik_hash_key(monkeypatch, value):
    from intake.settings import IntakeSettings

    for k, v in {"REGSOSEK_ENV": "production", "REGSOSEK_AUTH_JWKS_URL": "https://idp.example.go.id/jwks",
                 "REGSOSEK_AUTH_ISSUER": "https://idp.example.go.id", "REGSOSEK_AUTH_AUDIENCE": "regsosek-intake",
                 "REGSOSEK_DATA_KEYS": "k1:" + "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("REGSOSEK_AUTH_SECRET", raising=False)
    if value is None:
        monkeypatch.delenv("REGSOSEK_NIK_HASH_KEY", raising=False)
    else:
        monkeypatch.setenv("REGSOSEK_NIK_HASH_KEY", value)
    with pytest.raises(InsecureSecret, match="REGSOSEK_NIK_HASH_KEY"):
        IntakeSettings()
