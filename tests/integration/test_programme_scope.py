"""Privacy by design on the real stack: a programme gets its own programmes' decisions only, within
its token's areas; verify's progress needs a token, answers for the caller's areas only and
withholds small counts."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from test_notify_delivery import NOTIFY_ENV, Receiver, area, new_receiver

from regsosek.contracts import EligibilityDecided
from regsosek.envelope import encode, new_envelope
from regsosek.topics import Topic

from itkit import Submitter, World, eventually, family, family_id_of, new_sls_id, roster, token

pytestmark = pytest.mark.integration


def client(url: str, tok: str | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=10, headers={"authorization": f"Bearer {tok}"} if tok else {})


@pytest.fixture(scope="module")
async def notify_world(stack):
    world = await World(["notify"]).setup()
    try:
        (notify,) = await world.start("notify", **NOTIFY_ENV)
        yield world, notify
    finally:
        await world.teardown()


async def test_a_programme_gets_only_its_own_programmes_decisions_in_its_areas(notify_world, producer):
    world, notify = notify_world
    prefix = area()
    pkh = client(notify.url, token("programme", "PKH-" + uuid.uuid4().hex[:6], (prefix,), ("pkh",)))
    jkn = client(notify.url, token("programme", "JKN-" + uuid.uuid4().hex[:6], (prefix,), ("pbi_jkn",)))
    bare = client(notify.url, token("programme", "NONE", (prefix,), ()))
    (r_pkh, s_pkh), (r_jkn, s_jkn) = await asyncio.gather(new_receiver(world), new_receiver(world))
    try:
        # PKH's token cannot reach PBI-JKN's decisions, nor another area, nor can a token without programmes.
        r = await pkh.post("/v1/subscriptions", json={"callback_url": r_pkh.proc.url + "/notify", "secret": s_pkh,
                                                      "filters": {"programmes": ["pbi_jkn"]}})
        assert r.status_code == 403 and "pbi_jkn is not among the token's programmes" in r.text, r.text
        r = await pkh.post("/v1/subscriptions", json={"callback_url": r_pkh.proc.url + "/notify", "secret": s_pkh,
                                                      "filters": {"area_prefixes": ["6471"]}})
        assert r.status_code == 403 and "not within the token's areas" in r.text, r.text
        r = await bare.post("/v1/subscriptions", json={"callback_url": r_pkh.proc.url + "/notify", "secret": s_pkh})
        assert r.status_code == 403 and "names no programmes" in r.text, r.text

        subs = []
        for api, rc, secret in ((pkh, r_pkh, s_pkh), (jkn, r_jkn, s_jkn)):
            r = await api.post("/v1/subscriptions", json={"callback_url": rc.proc.url + "/notify", "secret": secret})
            assert r.status_code == 201, r.text
            body = r.json()
            assert body["filters"]["area_prefixes"] == [prefix]  # none asked: the token's areas, not the nation
            subs.append(body)
        assert subs[0]["programmes"] == ["pkh"] and subs[1]["programmes"] == ["pbi_jkn"]

        # A family eligible for both, with a health reason for PBI-JKN.
        sls = f"{prefix}0010001"
        fid = f"{sls}-0001-001"
        data = EligibilityDecided.model_validate({
            "family_id": fid, "sls_id": sls, "submission_id": str(uuid.uuid4()), "version": 1, "welfare_group": 1,
            "decile": 1, "model_version": "pmt-it", "rule_version": "rules-it", "decided_at": "2022-11-01T00:00:00Z",
            "decision_seq": 1, "decisions": [
                {"programme": "pkh", "eligible": True, "rule_version": "rules-it", "reasons": ["child_under_6"]},
                {"programme": "pbi_jkn", "eligible": True, "rule_version": "rules-it",
                 "reasons": ["health: member with severe disability"]},
                {"programme": "sembako", "eligible": True, "rule_version": "rules-it", "reasons": ["decile 1"]}]})
        env = new_envelope(data, source="/regsosek/classify", subject=fid)
        await producer.send_and_wait(world.topic(Topic.ELIGIBILITY_DECIDED), encode(data), key=sls.encode(),
                                     headers=env.headers())

        async def delivered(rc: Receiver):
            events = (await rc.client.get("/events", params={"with_data": "true"})).json()["events"]
            return events or None

        got_pkh, got_jkn = await asyncio.gather(eventually(lambda: delivered(r_pkh), timeout=30, what="PKH's event"),
                                                eventually(lambda: delivered(r_jkn), timeout=30, what="JKN's event"))
        (e_pkh,), (e_jkn,) = got_pkh, got_jkn
        assert e_pkh["event_id"] == e_jkn["event_id"] == env.id
        assert [d["programme"] for d in e_pkh["data"]["decisions"]] == ["pkh"]
        assert "health" not in repr(e_pkh) and "pbi_jkn" not in repr(e_pkh) and "sembako" not in repr(e_pkh)
        assert [d["programme"] for d in e_jkn["data"]["decisions"]] == ["pbi_jkn"]
        assert e_pkh["data"]["decile"] == 1 and e_pkh["data"]["decision_seq"] == 1

        # A replay re-sends the same narrowed payload.
        await r_pkh.control(reset=True)
        r = await pkh.post(f"/v1/subscriptions/{subs[0]['id']}/redeliver", json={"since": "2000-01-01T00:00:00Z"})
        assert r.status_code == 200 and r.json()["requeued"] == 1, r.text
        (again,) = await eventually(lambda: delivered(r_pkh), timeout=30, what="the replayed event")
        assert [d["programme"] for d in again["data"]["decisions"]] == ["pkh"] and "health" not in repr(again)
    finally:
        await asyncio.gather(pkh.aclose(), jkn.aclose(), bare.aclose(), r_pkh.client.aclose(), r_jkn.client.aclose())


# ---------------------------------------------------------------- verify's progress


@pytest.fixture(scope="module")
async def census_world(stack):
    world = await World(["intake", "verify"]).setup()
    try:
        intake, verify = await world.start("intake", "verify")
        yield world, intake, verify
    finally:
        await world.teardown()


async def test_progress_needs_a_token_stays_in_the_callers_areas_and_withholds_small_counts(census_world):
    world, intake, verify = census_world
    sls = new_sls_id("6472")
    pairs = [family(sls, b) for b in range(1, 8)]
    pairs[0][0]["member_count"] = 5  # the roster says 5, the interview 3: flagged (one household)
    async with httpx.AsyncClient(base_url=intake.url, timeout=10) as c:
        s = Submitter(c)
        await s.submit("/v1/rosters", roster(sls, [e for e, _ in pairs]), retry_for=30)
        for _, iv in pairs:
            await s.submit("/v1/interviews", iv, retry_for=30)
    officer = client(verify.url, token("officer", "OFC-IT", (sls[:10],)))
    try:
        async with httpx.AsyncClient(base_url=verify.url, timeout=10) as anon:
            r = await anon.get("/v1/progress", params={"prefix": sls})
            assert r.status_code == 401, r.text
        r = await officer.get("/v1/progress", params={"prefix": "6471"})
        assert r.status_code == 403, r.text
        r = await officer.get("/v1/progress", params={"prefix": "6472"})  # wider than the officer's village
        assert r.status_code == 403, r.text

        async def decided():
            r = await officer.get("/v1/progress", params={"prefix": sls[:10], "by": "sls"})
            assert r.status_code == 200, r.text
            body = r.json()
            return body if body["totals"]["interviewed"] == len(pairs) else None

        body = await eventually(decided, timeout=60, what="verify to decide every interview")
        (g,) = body["groups"]
        assert g["prefix"] == sls and g["flagged"] is None and g["verified"] is None
        assert "flagged" in g["suppressed"] and g["interviewed"] == len(pairs)
        t = body["totals"]  # the village has this one SLS: its totals are withheld alike
        assert t["flagged"] is None and "flagged" in t["suppressed"]
        assert family_id_of(pairs[0][1]) not in repr(body)
    finally:
        await officer.aclose()
