"""The living registry on the real stack (intake's HTTP API, Kafka, verify, classify and notify on
PostgreSQL, a programme's webhook receiver), after the census (docs/DOMAIN.md):

- a death in an update re-classifies: the update counts only once a supervisor confirms it in the
  field; verify applies it to the family's stored state, classify re-classifies the smaller household
  (member count and per-capita features change), and a subscribed programme gets the new decision;
  the update's journey shows every step, and the update travels pseudonymised;
- an update before its family is verified is kept: a death confirmed in the field while the family's
  interview still waits for its SLS roster shows "held" in its journey (what it waits for, until when);
  once the roster comes and the family is verified, the death applies and the family is classified
  from the smaller household;
- a complaint leading to a correction: filed by the village, a re-visit keeps it open, a correction
  (the family's housing as found) closes it and re-classifies the family; its status shows the
  correction's journey; a closed complaint takes no further outcome.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from test_notify_delivery import NOTIFY_ENV, Receiver, new_receiver

from regsosek.topics import Topic
from regsosek_tools import living
from regsosek_tools.sample import generate

from itkit import Submitter, World, eventually, family, family_id_of, new_sls_id, read_topic, roster, token

pytestmark = pytest.mark.integration

WAIT = 90  # seconds any one expected effect may take on a busy two-core machine


@pytest.fixture(scope="module")
async def registry(stack):
    world = await World(["intake", "verify", "classify", "notify"]).setup()
    try:
        intake, _verify, _classify = await world.start("intake", "verify", "classify")
        (notify,) = await world.start("notify", **NOTIFY_ENV)
        async with httpx.AsyncClient(base_url=intake.url, timeout=10) as c:
            yield world, Submitter(c), notify
    finally:
        await world.teardown()


def bearer(role: str, subject: str, sls: str, programmes: tuple[str, ...] | None = None) -> dict:
    return {"authorization": f"Bearer {token(role, subject, (sls[:10],), programmes)}"}


async def registered_family(s: Submitter, sls: str) -> dict:
    """itkit's three-member family, on its roster and interviewed during the census."""
    entry, interview = family(sls, 1)
    await s.submit("/v1/rosters", roster(sls, [entry]))
    await s.submit("/v1/interviews", interview)
    return interview


async def subscribed_receiver(world: World, notify, sls: str, programme: str) -> tuple[Receiver, httpx.AsyncClient]:
    rc, secret = await new_receiver(world)
    api = httpx.AsyncClient(base_url=notify.url, timeout=10, headers=bearer("programme", "PRG-" + uuid.uuid4().hex[:6],
                                                                              sls, (programme,)))
    r = await api.post("/v1/subscriptions", json={"callback_url": rc.proc.url + "/notify", "secret": secret})
    assert r.status_code == 201, r.text
    return rc, api


async def deliveries(rc: Receiver, n: int) -> list[dict] | None:
    events = (await rc.client.get("/events", params={"with_data": "true"})).json()["events"]
    return events if len(events) >= n else None


async def classified(world: World, family_id: str, n: int) -> list[dict] | None:
    events = [json.loads(r.value) for r in await read_topic(world.topic(Topic.FAMILY_CLASSIFIED), timeout=5)]
    mine = sorted((e for e in events if e["family_id"] == family_id), key=lambda e: e["decision_seq"])
    return mine if len(mine) >= n else None


async def journey(s: Submitter, submission_id: str, *steps: str) -> dict | None:
    j = await s.status(submission_id)
    return j if j and {*steps} <= {x["step"] for x in j["journey"]} else None


def death(sls: str, family_id: str, line_no: int) -> dict:
    return {"submission_id": str(uuid.uuid4()), "family_id": family_id, "sls_id": sls, "channel": "village",
            "reported_by": "VIL-IT", "occurred_on": "2023-03-01", "change": {"kind": "death", "line_no": line_no}}


async def test_a_death_in_an_update_reclassifies(registry):
    world, s, notify = registry
    sls = new_sls_id("6472")
    rc, api = await subscribed_receiver(world, notify, sls, "pbi_jkn")
    try:
        iv = await registered_family(s, sls)
        fid = family_id_of(iv)
        (first,) = await eventually(lambda: deliveries(rc, 1), timeout=WAIT, what="the census decision delivered")

        village = bearer("village_official", "VIL-IT", sls)
        update = death(sls, fid, 2)
        r = await s.client.post("/v1/updates", json=update, headers=village)
        assert r.status_code == 202, r.text
        assert (await s.client.post("/v1/updates", json=update, headers=village)).status_code == 200  # idempotent
        bad = {**update, "submission_id": str(uuid.uuid4()), "occurred_on": "2022-11-01",
               "change": {"kind": "death"}}
        r = await s.client.post("/v1/updates", json=bad, headers=village)
        assert r.status_code == 422 and r.json()["errors"][0]["path"].startswith("/change"), r.text
        assert (await s.status(update["submission_id"]))["final"] is None  # waits for its field check

        # the reporter does not check their own update; another supervisor confirms it in the field
        check = {"submission_id": str(uuid.uuid4()), "update_id": update["submission_id"], "family_id": fid,
                 "sls_id": sls, "outcome": "confirmed", "checked_on": "2023-03-06", "checked_by": "PML-IT"}
        own = bearer("supervisor", "VIL-IT", sls)
        r = await s.client.post("/v1/field-checks", json={**check, "submission_id": str(uuid.uuid4())}, headers=own)
        assert r.status_code == 422 and r.json()["errors"][0]["path"] == "/checked_by", r.text
        r = await s.client.post("/v1/field-checks", json=check, headers=bearer("supervisor", "PML-IT", sls))
        assert r.status_code == 202, r.text

        before, after = await eventually(lambda: classified(world, fid, 2), timeout=WAIT, what="re-classified")
        assert after["submission_id"] == update["submission_id"] and after["decision_seq"] > before["decision_seq"]
        assert after["predicted_monthly_per_capita"] != before["predicted_monthly_per_capita"]
        members = {c["factor"]: c["effect"] for c in before["explanation"]}, {
            c["factor"]: c["effect"] for c in after["explanation"]}
        profile = (await world.fetch("classify", "select profile from families where family_id = $1", fid))[0][0]
        profile = json.loads(profile) if isinstance(profile, str) else profile
        assert [m["line_no"] for m in profile["members"]] == [1, 3]  # the spouse who died left the household
        assert members[0] != members[1]  # the per-capita features moved with the household's size

        events = await eventually(lambda: deliveries(rc, 2), timeout=WAIT, what="the new decision delivered")
        newest = max(events, key=lambda e: e["data"]["decision_seq"])
        assert newest["data"]["submission_id"] == update["submission_id"]
        assert newest["data"]["decision_seq"] > first["data"]["decision_seq"]

        j = await eventually(lambda: journey(s, update["submission_id"], "field_checked", "verified", "classified",
                                             "eligibility"), timeout=WAIT, what="the update's journey")
        assert j["kind"] == "update" and j["final"] == "decided"
        assert next(x for x in j["journey"] if x["step"] == "verified")["outcome"] == "updated"

        # what travelled: ids, codes and keyed hashes only
        record = next(r for r in await read_topic(world.topic(Topic.FAMILY_UPDATE)) if r.key == sls.encode())
        assert json.loads(record.value)["change"] == {"kind": "death", "line_no": 2, "moved_to": None, "member": None,
                                                      "housing": None, "family": None}
        assert all(m["name"] not in record.value.decode() for m in iv["members"])
    finally:
        await api.aclose()
        await rc.client.aclose()


async def test_an_update_not_confirmed_in_the_field_does_not_count(registry):
    world, s, _notify = registry
    sls = new_sls_id("6472")
    iv = await registered_family(s, sls)
    fid = family_id_of(iv)
    await eventually(lambda: classified(world, fid, 1), timeout=WAIT, what="classified")
    update = {**death(sls, fid, 3), "channel": "social_affairs"}
    village = bearer("village_official", "VIL-IT", sls)
    r = await s.client.post("/v1/updates", json=update, headers=village)
    assert r.status_code == 422 and r.json()["errors"] == [
        {"path": "/channel", "reason": "a village official reports through the village"}], r.text
    assert (await s.client.post("/v1/updates", json=update, headers=bearer("supervisor", "DINSOS-IT", sls))
            ).status_code == 202
    check = {"submission_id": str(uuid.uuid4()), "update_id": update["submission_id"], "family_id": fid,
             "sls_id": sls, "outcome": "not_confirmed", "checked_on": "2023-03-06", "checked_by": "PML-IT"}
    pml = bearer("supervisor", "PML-IT", sls)
    assert (await s.client.post("/v1/field-checks", json=check, headers=pml)).status_code == 202
    again = {**check, "submission_id": str(uuid.uuid4()), "outcome": "confirmed"}
    assert (await s.client.post("/v1/field-checks", json=again, headers=pml)).status_code == 409
    assert (await s.status(update["submission_id"]))["final"] == "not_confirmed"
    assert await world.fetchval("intake", "select count(*) from update_checks where update_id = $1",
                                uuid.UUID(update["submission_id"])) == 1
    assert not [r for r in await read_topic(world.topic(Topic.FAMILY_UPDATE), timeout=5) if r.key == sls.encode()]


async def test_an_update_before_the_family_is_verified_is_kept_and_applied_once_it_is(registry):
    world, s, _notify = registry
    sls = new_sls_id("6472")
    entry, iv = family(sls, 1)
    await s.submit("/v1/interviews", iv)  # no roster yet: verify holds the interview
    fid = family_id_of(iv)
    update = death(sls, fid, 2)
    village, pml = bearer("village_official", "VIL-IT", sls), bearer("supervisor", "PML-IT", sls)
    assert (await s.client.post("/v1/updates", json=update, headers=village)).status_code == 202
    check = {"submission_id": str(uuid.uuid4()), "update_id": update["submission_id"], "family_id": fid,
             "sls_id": sls, "outcome": "confirmed", "checked_on": "2023-03-06", "checked_by": "PML-IT"}
    assert (await s.client.post("/v1/field-checks", json=check, headers=pml)).status_code == 202

    j = await eventually(lambda: journey(s, update["submission_id"], "field_checked", "held"), timeout=WAIT,
                         what="the update kept until its family is verified")
    held = next(x for x in j["journey"] if x["step"] == "held")
    assert held["waits_for"] == "interview_held" and held["expires_at"] > held["at"]
    assert j["final"] is None and not {"verified", "flagged"} & {x["step"] for x in j["journey"]}
    assert await world.fetchval("verify", "select count(*) from held_updates where family_id = $1", fid) == 1

    await s.submit("/v1/rosters", roster(sls, [entry]))  # the family is verified, and the death applied
    census, after = await eventually(lambda: classified(world, fid, 2), timeout=WAIT, what="classified twice")
    assert census["submission_id"] == iv["submission_id"] and after["submission_id"] == update["submission_id"]
    assert after["decision_seq"] > census["decision_seq"]
    profile = (await world.fetch("classify", "select profile from families where family_id = $1", fid))[0][0]
    profile = json.loads(profile) if isinstance(profile, str) else profile
    assert [m["line_no"] for m in profile["members"]] == [1, 3]  # the spouse who died left the household
    j = await eventually(lambda: journey(s, update["submission_id"], "verified", "classified", "eligibility"),
                         timeout=WAIT, what="the update's journey after its family was verified")
    assert j["final"] == "decided"
    assert next(x for x in j["journey"] if x["step"] == "verified")["outcome"] == "updated"
    assert await world.fetchval("verify", "select count(*) from held_updates where family_id = $1", fid) == 0


async def test_a_complaint_leading_to_a_correction(registry):
    world, s, _notify = registry
    sls = new_sls_id("6472")
    iv = await registered_family(s, sls)
    fid = family_id_of(iv)
    (before,) = await eventually(lambda: classified(world, fid, 1), timeout=WAIT, what="classified")

    village, pml = bearer("village_official", "VIL-IT", sls), bearer("supervisor", "PML-IT", sls)
    complaint = {"submission_id": str(uuid.uuid4()), "family_id": fid, "sls_id": sls, "complainant": "family",
                 "subject": "decision", "description": "the house was recorded larger than it is",
                 "filed_by": "VIL-IT", "filed_at": "2023-05-10T09:00:00+08:00"}
    assert (await s.client.post("/v1/complaints", json=complaint, headers=village)).status_code == 202
    cid = complaint["submission_id"]
    status = (await s.client.get(f"/v1/complaints/{cid}", headers=village)).json()
    assert status["status"] == "filed" and status["outcomes"] == []
    other_area = bearer("village_official", "VIL-X", "6401010001" + "0001")
    assert (await s.client.get(f"/v1/complaints/{cid}", headers=other_area)).status_code == 403

    def outcome(kind: str, **more) -> dict:
        return {"submission_id": str(uuid.uuid4()), "complaint_id": cid, "family_id": fid, "sls_id": sls,
                "outcome": kind, "decided_by": "PML-IT", "decided_on": "2023-05-20", **more}

    assert (await s.client.post("/v1/complaint-outcomes", json=outcome("revisit"), headers=pml)).status_code == 202
    assert (await s.client.get(f"/v1/complaints/{cid}", headers=village)).json()["status"] == "revisit"

    housing = {**iv["housing"], "floor_area_m2": 12, "floor": "earth", "wall": "bamboo"}
    correction = outcome("correction", correction={"kind": "housing_change", "housing": housing})
    r = await s.client.post("/v1/complaint-outcomes", json=correction, headers=pml)
    assert r.status_code == 202, r.text
    rejection = outcome("rejected", reason="already corrected")
    assert (await s.client.post("/v1/complaint-outcomes", json=rejection, headers=pml)).status_code == 409

    _, after = await eventually(lambda: classified(world, fid, 2), timeout=WAIT, what="re-classified")
    assert after["submission_id"] == correction["submission_id"]
    assert after["predicted_monthly_per_capita"] < before["predicted_monthly_per_capita"]  # a poorer dwelling

    async def corrected() -> dict | None:
        st = (await s.client.get(f"/v1/complaints/{cid}", headers=village)).json()
        steps = {x["step"] for o in st["outcomes"] for x in o["journey"]}
        return st if {"verified", "classified", "eligibility"} <= steps else None

    status = await eventually(corrected, timeout=WAIT, what="the correction's journey in the complaint's status")
    assert status["status"] == "corrected"
    assert [o["outcome"] for o in status["outcomes"]] == ["revisit", "correction"]
    profile = (await world.fetch("classify", "select profile from families where family_id = $1", fid))[0][0]
    profile = json.loads(profile) if isinstance(profile, str) else profile
    assert profile["housing"]["floor_area_m2"] == 12 and profile["housing"]["floor"] == "earth"


async def test_the_samples_living_registry_situations_come_out_as_make_run_expects(registry):
    """What `make run` sends after the census (regsosek_tools.living), on the families it picks."""
    world, s, _notify = registry
    sample = generate(7, 120, field_outcomes=True)
    picked = living.situations(sample)
    assert [p.name for p in picked] == ["death_confirmed", "birth_confirmed", "housing_not_confirmed",
                                        "complaint_corrected"]
    families = {p.family_id for p in picked}
    for iv in sample.interviews:
        if iv.family_id in families:
            officer = {"authorization": f"Bearer {token('officer', 'OFC-IT', (iv.location.sls_id,))}"}
            ro = next(r for r in sample.rosters if r.sls_id == iv.location.sls_id)
            await s.submit("/v1/rosters", ro.model_dump(mode="json"), headers=officer)
            await s.submit("/v1/interviews", iv.model_dump(mode="json"), headers=officer)
    for fid in families:
        await eventually(lambda fid=fid: classified(world, fid, 1), timeout=WAIT, what="the census decision")
    result = await living.run(s.client, str(s.client.base_url).rstrip("/"), sample, timeout=WAIT)
    assert living.problems(result) == []
    assert {name: row["actual"] for name, row in result["situations"].items()} == {
        "death_confirmed": "decided", "birth_confirmed": "decided", "housing_not_confirmed": "not_confirmed",
        "complaint_corrected": "corrected"}
