"""Through intake's HTTP API: identifiers in other digit forms (fullwidth, Arabic-Indic,
Devanagari) are a 422 naming the field by JSON pointer and saying "ASCII digits", never
accepted (they would escape the nationwide duplicate-NIK check) and never a 5xx.

No database is needed: validation answers before anything is stored (no lifespan runs)."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient

from intake.app import create_app
from intake.settings import IntakeSettings
from regsosek.auth import Role, mint
from regsosek.examples import family_interview

ZERO = {"fullwidth": 0xFF10, "arabic_indic": 0x0660, "devanagari": 0x0966}
SCRIPTS = list(ZERO)
SLS = "64720100010001"


def other_digits(s: str, script: str) -> str:
    return "".join(chr(ZERO[script] + int(c)) if c.isascii() and c.isdigit() else c for c in s)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(IntakeSettings(env="local")))


def auth(role: Role) -> dict:
    return {"authorization": f"Bearer {mint(subject='T-1', role=role, areas=['64'])}"}


def roster() -> dict:
    return {"submission_id": str(uuid.uuid4()), "sls_id": SLS, "officer_id": "OFC-1", "confirmed_by": "Pak RT",
            "confirmed_at": "2022-10-16T08:00:00+08:00",
            "families": [{"building_no": 1, "family_no": 1, "kk_number": "6472010101220001", "head_name": "Budi",
                          "member_count": 3, "status": "present"}]}


def resolution() -> dict:
    return {"submission_id": str(uuid.uuid4()), "family_id": f"{SLS}-0001-001", "sls_id": SLS, "decision": "verify",
            "supervisor_id": "SPV-1", "reason": "seen", "decided_at": "2022-11-01T10:00:00+08:00"}


def fkp() -> dict:
    return {"submission_id": str(uuid.uuid4()), "family_id": f"{SLS}-0001-001", "sls_id": SLS, "welfare_group": 2,
            "reason": "consultation", "decided_by": "Musdes", "decided_at": "2023-05-03T10:00:00+08:00"}


def interview() -> dict:
    d = family_interview()
    d["submission_id"] = str(uuid.uuid4())
    d["location"]["kk_number"] = d["location"].get("kk_number") or "6472010101220001"
    return d


CASES = [
    ("/v1/interviews", Role.OFFICER, interview, ("members", 0, "nik")),
    ("/v1/interviews", Role.OFFICER, interview, ("members", 1, "nik")),
    ("/v1/interviews", Role.OFFICER, interview, ("location", "kk_number")),
    ("/v1/interviews", Role.OFFICER, interview, ("location", "sls_id")),
    ("/v1/rosters", Role.OFFICER, roster, ("sls_id",)),
    ("/v1/rosters", Role.OFFICER, roster, ("families", 0, "kk_number")),
    ("/v1/resolutions", Role.SUPERVISOR, resolution, ("family_id",)),
    ("/v1/resolutions", Role.SUPERVISOR, resolution, ("sls_id",)),
    ("/v1/fkp-adjustments", Role.VILLAGE_OFFICIAL, fkp, ("family_id",)),
    ("/v1/fkp-adjustments", Role.VILLAGE_OFFICIAL, fkp, ("sls_id",)),
]


def _edit(doc: dict, path: tuple, script: str) -> str:
    target = doc
    for p in path[:-1]:
        target = target[p]
    assert target[path[-1]], path  # the example has a value there to convert
    target[path[-1]] = other_digits(target[path[-1]], script)
    return target[path[-1]]


@pytest.mark.parametrize("url,role,make,path", CASES, ids=lambda x: x if isinstance(x, str) else None)
@pytest.mark.parametrize("script", SCRIPTS)
def test_other_digit_forms_are_422_at_the_field(client, url, role, make, path, script):
    doc = make()
    bad = _edit(doc, path, script)
    r = client.post(url, json=doc, headers=auth(role))
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    pointer = "/" + "/".join(str(p) for p in path)
    assert [e["path"] for e in errors] == [pointer]
    assert "ASCII digits" in errors[0]["reason"]
    assert bad not in r.text and json.dumps(bad) not in r.text  # the personal value is not echoed


@pytest.mark.parametrize("script", SCRIPTS)
def test_batch_item_with_other_digit_nik_is_422_at_its_pointer(client, script):
    good_but_elsewhere = interview()
    good_but_elsewhere["location"]["sls_id"] = "11710100010001"  # outside the token's areas: 403, nothing stored
    bad = interview()
    _edit(bad, ("members", 0, "nik"), script)
    r = client.post("/v1/interviews:batch", json={"interviews": [good_but_elsewhere, bad]}, headers=auth(Role.OFFICER))
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["status"] == 403
    assert second["status"] == 422
    assert [e["path"] for e in second["errors"]] == ["/members/0/nik"]
    assert "ASCII digits" in second["errors"][0]["reason"]


def test_openapi_patterns_are_ascii_ranges(client):
    spec = json.dumps(client.get("/openapi.json").json())
    assert "\\\\d" not in spec
    assert "^[0-9]{16}$" in spec and "^[0-9]{14}$" in spec

