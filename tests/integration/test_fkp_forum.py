"""An FKP forum with an added family, on the real stack (intake, verify, classify and notify as processes
of one world, real Kafka and PostgreSQL): a village's forum is opened with its SLS, date and
participants; the forum decides about the census families by consensus (group change, confirmed,
moved, died) and adds a family the census missed; an officer's ground check finds it, and it is
verified as an added family and classified; the forum is closed; its regency is re-ranked once, after
the close (not per decision); and the decisions reach a subscribed programme."""

from __future__ import annotations

import uuid

import httpx
import pytest
from test_notify_delivery import NOTIFY_ENV, new_receiver

from classify.domain import classify
from classify.model import PmtModel, PovertyLines, RuleSet
from classify.settings import ClassifySettings
from regsosek.contracts import FamilyInterview, household_profile

from itkit import Submitter, World, eventually, family, family_id_of, new_sls_id, roster, token

pytestmark = pytest.mark.integration

WAIT = 90
HELD_ON = "2023-05-08"
CHECKED_ON = "2023-05-10"


@pytest.fixture
async def fkp_world(stack):
    world = await World(["intake", "verify", "classify", "notify"]).setup()
    try:
        await world.start("intake", "verify")
        await world.start("classify", REGSOSEK_AREA_RERANK_POLL_S="0.2")
        (notify,) = await world.start("notify", **NOTIFY_ENV)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.ports['intake']}", timeout=20) as c:
            yield world, notify, Submitter(c)
    finally:
        await world.teardown()


def eligible_programme(interview: dict) -> str:
    """A programme the census family of the kit is eligible for (what classify will decide)."""
    s = ClassifySettings()
    c = classify(household_profile(FamilyInterview.model_validate(interview)), PmtModel.load(s.pmt_model_file),
                 PovertyLines.load(s.poverty_lines_file), RuleSet.load(s.rules_file))
    return next(p for p, eligible in sorted(c.eligibility.items()) if eligible)


class Village:
    """A village official's calls to intake's forum routes."""

    def __init__(self, client: httpx.AsyncClient, village_id: str) -> None:
        self.client = client
        self.headers = {"authorization": f"Bearer {token('village_official', 'DESA-IT', (village_id,))}"}

    async def post(self, path: str, body: dict | None = None, *, headers: dict | None = None) -> httpx.Response:
        return await self.client.post(f"/v1/fkp-forums{path}", json=body, headers=headers or self.headers)

    async def decide(self, forum_id: str, family_id: str, kind: str, reason: str, group: int | None = None) -> dict:
        body = {"decision_id": str(uuid.uuid4()), "family_id": family_id, "kind": kind, "reason": reason}
        if group is not None:
            body["welfare_group"] = group
        r = await self.post(f"/{forum_id}/decisions", body)
        assert r.status_code == 202, r.text
        return r.json()


async def test_an_fkp_forum_with_an_added_family(fkp_world):
    world, notify, intake = fkp_world
    sls = new_sls_id("6472")
    village_id, regency = sls[:10], sls[:4]
    other_sls = village_id + f"{(int(sls[10:]) % 9999) + 1:04d}"
    census = [family(sls, b) for b in (1, 2, 3, 4)]
    programme = eligible_programme(census[0][1])

    # a programme system subscribed for the village
    receiver, secret = await new_receiver(world)
    api = httpx.AsyncClient(base_url=notify.url, timeout=10, headers={
        "authorization": f"Bearer {token('programme', 'PRG-FKP', (village_id,), (programme,))}"})
    try:
        r = await api.post("/v1/subscriptions", json={"callback_url": receiver.proc.url + "/notify", "secret": secret})
        assert r.status_code == 201, r.text

        # the census: four families verified and classified
        await intake.submit("/v1/rosters", roster(sls, [entry for entry, _ in census]))
        for _, iv in census:
            await intake.submit("/v1/interviews", iv)
        changed, confirmed, moved, died = (family_id_of(iv) for _, iv in census)

        async def classified() -> dict | None:
            rows = await world.fetch("classify", "select family_id, welfare_group from families where sls_id = $1", sls)
            return {r["family_id"]: r["welfare_group"] for r in rows} if len(rows) == 4 else None

        groups = await eventually(classified, timeout=WAIT, what="the census families classified")
        new_group = 1 if groups[changed] != 1 else 2

        village = Village(intake.client, village_id)
        forum_id = str(uuid.uuid4())
        opening = {"forum_id": forum_id, "village_id": village_id, "sls_ids": [sls, other_sls], "held_on": HELD_ON,
                   "participants": [{"role": "village_head", "count": 1}, {"role": "sls_head", "count": 2},
                                    {"role": "community_figure", "count": 5}, {"role": "bps_officer", "count": 1}]}

        # opening: refused with pointers when wrong, for another village's official, then opened once
        bad = await village.post("", {**opening, "sls_ids": [sls, "6401010001" + "0001"]})
        assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "/sls_ids/1", bad.text
        outsider = {"authorization": f"Bearer {token('village_official', 'DESA-X', ('6401010001',))}"}
        assert (await village.post("", opening, headers=outsider)).status_code == 403
        first = await village.post("", opening)
        assert first.status_code == 202 and first.json()["status"] == "open", first.text
        again = await village.post("", opening)
        assert again.status_code == 200 and again.json() == first.json()
        second_forum = await village.post("", {**opening, "forum_id": str(uuid.uuid4())})
        assert second_forum.status_code == 409, "one forum per village"

        # decisions by consensus, one per family
        missing_group = await village.post(f"/{forum_id}/decisions", {
            "decision_id": str(uuid.uuid4()), "family_id": changed, "kind": "group_change", "reason": "r"})
        assert missing_group.status_code == 422 and missing_group.json()["errors"][0]["path"] == "/welfare_group"
        await village.decide(forum_id, changed, "group_change", "no regular income since the harvest failed", new_group)
        await village.decide(forum_id, confirmed, "confirmed", "as shown")
        await village.decide(forum_id, moved, "moved", "moved to Balikpapan in March")
        await village.decide(forum_id, died, "died", "the widower head died in January; no other member")
        twice = await village.post(f"/{forum_id}/decisions", {
            "decision_id": str(uuid.uuid4()), "family_id": changed, "kind": "confirmed", "reason": "again"})
        assert twice.status_code == 409

        # a family the census missed, added at the forum under a place of its own
        _, added_iv = family(sls, 77)
        added = family_id_of(added_iv)
        interviewed = await village.post(f"/{forum_id}/decisions", {
            "decision_id": str(uuid.uuid4()), "family_id": confirmed, "kind": "added", "reason": "r"})
        assert interviewed.status_code == 422 and interviewed.json()["errors"][0]["path"] == "/family_id"
        await village.decide(forum_id, added, "added", "missed by the census: lives behind the school")

        # the decisions applied, each on its own: no re-rank of the regency yet
        async def applied() -> bool:
            fkp = await world.fetchval("classify", "select count(*) from fkp_adjustments where family_id = $1", changed)
            out = await world.fetchval("classify", "select count(*) from withdrawals where family_id = any($1::text[])",
                                       [moved, died])
            return fkp == 1 and out == 2

        await eventually(applied, timeout=WAIT, what="the group change kept and the two families withdrawn")
        assert await world.fetchval("classify", "select count(*) from rankings where area = $1", regency) == 0
        assert await world.fetchval("classify", "select count(*) from rerank_areas") == 0

        # the officer's ground check finds the added family: verified as added, classified
        added_iv["interviewed_at"] = f"{CHECKED_ON}T09:30:00+08:00"
        officer = {"authorization": f"Bearer {token('officer', 'OFC-IT', (sls,))}"}
        check = await intake.client.post(f"/v1/fkp-forums/{forum_id}/added-families/{added}/ground-check",
                                         json={"outcome": "found", "checked_on": CHECKED_ON, "interview": added_iv},
                                         headers=officer)
        assert check.status_code == 202, check.text
        assert check.json()["submission_id"] == added_iv["submission_id"]

        async def decided() -> dict | None:
            j = await intake.status(added_iv["submission_id"])
            return j if j and j["final"] == "decided" else None

        journey = await eventually(decided, timeout=WAIT, what="the added family verified and classified")
        assert [s["outcome"] for s in journey["journey"] if s["step"] == "verified"] == ["verified_added"]

        # closed once; the regency re-ranked once, after the close
        closed = await village.post(f"/{forum_id}/close")
        assert closed.status_code == 202, closed.text
        assert closed.json()["decisions"] == 5 and closed.json()["added_families"] == 1
        assert closed.json()["pending_ground_checks"] == 0
        assert (await village.post(f"/{forum_id}/close")).status_code == 200
        late = await village.post(f"/{forum_id}/decisions", {
            "decision_id": str(uuid.uuid4()), "family_id": confirmed, "kind": "moved", "reason": "late"})
        assert late.status_code == 409

        async def reranked() -> bool:
            done = await world.fetchval("classify", "select count(*) from rankings where area = $1", regency)
            waiting = await world.fetchval("classify", "select count(*) from rerank_areas")
            return done >= 1 and waiting == 0

        await eventually(reranked, timeout=WAIT, what="the forum's regency re-ranked")
        assert await world.fetchval("classify", "select count(*) from rankings where area = $1", regency) == 1
        assert await world.fetchval("classify", "select rerank_asked from fkp_forums where forum_id = $1::uuid",
                                    forum_id)

        view = (await intake.client.get(f"/v1/fkp-forums/{forum_id}", headers=village.headers)).json()
        assert view["status"] == "closed"
        assert {d["family_id"]: d["kind"] for d in view["decision_list"]} == {
            changed: "group_change", confirmed: "confirmed", moved: "moved", died: "died", added: "added"}
        assert next(d for d in view["decision_list"] if d["kind"] == "added")["ground_check"] == "found"

        # the decisions reached the subscribed programme: the new group, and the moved family's withdrawal
        async def programme_saw() -> dict | None:
            events = (await receiver.client.get("/events", params={"with_data": "true"})).json()["events"]
            by_family: dict[str, list[dict]] = {}
            for e in events:
                by_family.setdefault(e["data"]["family_id"], []).append(e["data"])
            fkp_group = [d for d in by_family.get(changed, []) if d["welfare_group"] == new_group
                         and any("village consultation" in r for x in d["decisions"] for r in x["reasons"])]
            gone = [d for d in by_family.get(moved, []) if not any(x["eligible"] for x in d["decisions"])]
            return {"group": fkp_group, "moved": gone} if fkp_group and gone else None

        seen = await eventually(programme_saw, timeout=WAIT, what="the forum's decisions at the programme")
        assert "moved away" in seen["moved"][-1]["decisions"][0]["reasons"][0]
    finally:
        await api.aclose()
        await receiver.client.aclose()
