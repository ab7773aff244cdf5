"""The officer, supervisor and village official recorded with a submission are the token's
subject, never the request body's: a forged actor in the body is replaced before intake stores
or publishes anything, and the receipt says so."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from regsosek.topics import Topic

from itkit import World, family, new_sls_id, read_topic, roster, token

pytestmark = pytest.mark.integration

FORGED = "SOMEONE-ELSE"


@pytest.fixture
async def intake_world(stack):
    world = await World(["intake"]).setup()
    try:
        await world.start("intake")
        yield world
    finally:
        await world.teardown()


def _replaced(receipt: dict, field: str) -> bool:
    return any(w["path"] == f"/{field}" and "token's subject" in w["reason"] for w in receipt["warnings"])


async def test_a_forged_actor_in_the_body_is_not_recorded(intake_world):
    world = intake_world
    sls = new_sls_id("6472")
    entry, iv = family(sls, 1)
    _, iv2 = family(sls, 2)
    fid = f"{sls}-0001-001"
    officer = {"authorization": f"Bearer {token('officer', 'OFC-REAL', (sls,))}"}
    supervisor = {"authorization": f"Bearer {token('supervisor', 'SPV-REAL', (sls,))}"}
    village = {"authorization": f"Bearer {token('village_official', 'DESA-REAL', (sls,))}"}
    ros = {**roster(sls, [entry]), "officer_id": FORGED}
    iv["officer_id"] = FORGED
    iv2["officer_id"] = "OFC-REAL"  # the caller's own id: recorded as it is, no warning
    resolution = {"submission_id": str(uuid.uuid4()), "family_id": fid, "sls_id": sls, "decision": "verify",
                  "supervisor_id": FORGED, "reason": "seen on site", "decided_at": "2022-10-21T10:00:00+08:00"}
    fkp = {"submission_id": str(uuid.uuid4()), "family_id": fid, "sls_id": sls, "welfare_group": 2,
           "reason": "consultation", "decided_by": FORGED, "decided_at": "2023-05-03T10:00:00+08:00"}

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.ports['intake']}", timeout=20) as c:
        receipts = {}
        for kind, path, body, headers in (("roster", "/v1/rosters", ros, officer),
                                          ("interview", "/v1/interviews", iv, officer),
                                          ("resolution", "/v1/resolutions", resolution, supervisor),
                                          ("fkp", "/v1/fkp-adjustments", fkp, village)):
            r = await c.post(path, json=body, headers=headers)
            assert r.status_code == 202, (kind, r.text)
            receipts[kind] = r.json()
        own = await c.post("/v1/interviews", json=iv2, headers=officer)
        assert own.status_code == 202 and not _replaced(own.json(), "officer_id"), own.text
        # the same submission again: the original receipt (same content once the actor is the caller's)
        again = await c.post("/v1/interviews", json=iv, headers=officer)
        assert again.status_code == 200 and again.json()["event_id"] == receipts["interview"]["event_id"]
        batch = await c.post("/v1/interviews:batch", headers=officer,
                             json={"interviews": [{**family(sls, 3)[1], "officer_id": FORGED}]})
        (item,) = batch.json()["results"]
        assert item["status"] == 202 and _replaced(item["receipt"], "officer_id"), batch.text

    assert _replaced(receipts["roster"], "officer_id") and _replaced(receipts["interview"], "officer_id")
    assert _replaced(receipts["resolution"], "supervisor_id") and _replaced(receipts["fkp"], "decided_by")

    expected = {Topic.SLS_ROSTER: ("officer_id", "OFC-REAL"), Topic.INTERVIEW_SUBMITTED: ("officer_id", "OFC-REAL"),
                Topic.VERIFICATION_RESOLVED: ("supervisor_id", "SPV-REAL"),
                Topic.FKP_ADJUSTMENT: ("decided_by", "DESA-REAL")}
    for topic, (field, actor) in expected.items():
        values = [json.loads(r.value) for r in await read_topic(world.topic(topic))]
        assert values, topic
        assert {v[field] for v in values} == {actor}, (topic, [v[field] for v in values])
        assert all(FORGED not in json.dumps(v) for v in values), topic

    rows = await world.fetch("intake", "select * from submissions")
    assert len(rows) == 6
    field = {"roster": "officer_id", "interview": "officer_id", "resolution": "supervisor_id", "fkp": "decided_by"}
    actor = {"roster": "OFC-REAL", "interview": "OFC-REAL", "resolution": "SPV-REAL", "fkp": "DESA-REAL"}
    for r in rows:
        assert r["submitted_by"] == actor[r["kind"]], r["kind"]
        assert _stored_body(r)[field[r["kind"]]] == actor[r["kind"]], r["kind"]


def _stored_body(record) -> dict:
    """A stored submission body: JSON, or sealed at rest (then opened with the local keys, as intake does)."""
    row = dict(record)
    if row.get("body") is not None:
        return json.loads(row["body"])
    body = row["body_enc"]
    from intake.settings import IntakeSettings

    ring = IntakeSettings(env="local").keyring()
    return json.loads(ring.open(bytes(body), aad=row["submission_id"].bytes))
