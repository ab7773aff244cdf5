"""The form's full code lists (docs/FORM.md) on the real stack (intake's HTTP API, Kafka, verify and
classify on PostgreSQL):

- an interview with the new codes (a vocational diploma, a diploma III, an industry of a sub-sector
  of agriculture for a job and an own business, a difficulty in each of the eight domains) goes
  through intake -> verify -> classify: the household profile verify publishes carries the codes,
  the PMT features classify computes from it read them as the model's groups (senior secondary,
  agriculture), and the PKH decision names the disability as the household's component;
- its twin coded with this system's earlier codes (sma, d1_d3, agriculture, the worst difficulty
  alone) is classified to the same consumption, welfare group and decile;
- a difficulty answered for a member younger than its domain's age filter is a 422 naming the field
  and the reason, and nothing is published for it.
"""

from __future__ import annotations

import json

import httpx
import pytest

from classify.model import features
from regsosek.contracts import HouseholdProfile
from regsosek.topics import Topic

from itkit import Submitter, World, eventually, family, family_id_of, new_sls_id, read_topic, roster

pytestmark = pytest.mark.integration

WAIT = 90  # seconds any one expected effect may take on a busy two-core machine

EVERY_DOMAIN = {"seeing": "some", "hearing": "a_lot", "walking": "cannot", "using_hands": "some",
                "remembering": "some", "communicating": "a_lot", "self_care": "cannot", "behaviour": "some"}


@pytest.fixture(scope="module")
async def pipeline(stack):
    world = await World(["intake", "verify", "classify"]).setup()
    try:
        intake, _verify, _classify = await world.start("intake", "verify", "classify")
        async with httpx.AsyncClient(base_url=intake.url, timeout=10) as c:
            yield world, Submitter(c), c
    finally:
        await world.teardown()


def couple(sls: str, building_no: int, *, new_codes: bool) -> tuple[dict, dict]:
    """itkit's family without its child, in a poorer house (earth floor, firewood, no assets: decile 3
    on the model's reference cut-points): a head of 42 who works a plantation of his own and a wife
    of 37 with a disability, the household's only PKH component. `new_codes`: coded with the form's
    full lists; otherwise with this system's earlier codes, which mean the same groups."""
    entry, iv = family(sls, building_no)
    entry["member_count"] = 2
    iv["housing"] |= {"floor": "earth", "cooking_fuel": "wood", "lighting": "pln_unmetered"}
    iv["economy"] = {"assets": []}
    head, wife = iv["members"][:2]
    iv["members"] = [head, wife]
    head |= {"highest_diploma": "smk" if new_codes else "sma", "industry": "plantation" if new_codes else "agriculture",
             "job_status": "self_employed", "has_business": True,
             "business": {"industry": "plantation" if new_codes else "agriculture", "workers": 1, "paid_workers": 0,
                          "turnover": "lt_5m"}}
    wife |= {"highest_diploma": "d3" if new_codes else "d1_d3", "difficulty": "cannot", "has_caregiver": True}
    if new_codes:
        wife["difficulties"] = EVERY_DOMAIN
    return entry, iv


async def events(world: World, topic: Topic, sls: str, family_id: str) -> list[dict]:
    return [e for r in await read_topic(world.topic(topic)) if r.key == sls.encode()
            if (e := json.loads(r.value)).get("family_id") == family_id]


async def one(world: World, topic: Topic, sls: str, family_id: str) -> dict | None:
    found = await events(world, topic, sls, family_id)
    return found[-1] if found else None


async def test_new_codes_go_through_intake_verify_and_classify_as_the_models_groups(pipeline):
    world, s, _ = pipeline
    sls = new_sls_id("6472")
    (e1, new), (e2, old) = couple(sls, 1, new_codes=True), couple(sls, 2, new_codes=False)
    await s.submit("/v1/rosters", roster(sls, [e1, e2]), retry_for=30)
    for doc in (new, old):
        receipt = await s.submit("/v1/interviews", doc, retry_for=30)
        assert receipt["status"] == "accepted", receipt
    fid_new, fid_old = family_id_of(new), family_id_of(old)

    published = await eventually(lambda: submitted(world, new["submission_id"]), timeout=WAIT,
                                 what="the interview with the new codes to be published")
    assert published["members"][1]["difficulties"] == EVERY_DOMAIN  # each of the eight domains, as answered
    assert published["members"][0]["business"]["industry"] == "plantation"
    verified = await eventually(lambda: one(world, Topic.INTERVIEW_VERIFIED, sls, fid_new), timeout=WAIT,
                                what="the family with the new codes to be verified")
    profile = HouseholdProfile.model_validate(verified["profile"])
    head, wife = profile.members
    assert (head.highest_diploma.value, head.industry.value, wife.highest_diploma.value, wife.difficulty.value) == (
        "smk", "plantation", "d3", "cannot")
    f = features(profile)
    assert (f["head_diploma_sma"], f["head_diploma_tertiary"], f["head_diploma_sd"], f["head_agriculture"]) == (
        1.0, 0.0, 0.0, 1.0)

    classified = {}
    for fid in (fid_new, fid_old):
        classified[fid] = await eventually(lambda fid=fid: one(world, Topic.FAMILY_CLASSIFIED, sls, fid), timeout=WAIT,
                                           what=f"{fid} to be classified")
    a, b = classified[fid_new], classified[fid_old]
    assert a["predicted_monthly_per_capita"] == pytest.approx(b["predicted_monthly_per_capita"], rel=1e-12)
    assert (a["welfare_group"], a["decile"]) == (b["welfare_group"], b["decile"])

    decided = await eventually(lambda: one(world, Topic.ELIGIBILITY_DECIDED, sls, fid_new), timeout=WAIT,
                               what="the eligibility of the family with the new codes")
    pkh = next(d for d in decided["decisions"] if d["programme"] == "pkh")
    assert a["decile"] <= 4, a  # poor enough for PKH: the disability is what makes the family eligible
    assert pkh["eligible"] is True and "components present: severe_disability" in pkh["reasons"], pkh


async def test_a_difficulty_outside_its_age_filter_is_a_422_naming_the_field(pipeline):
    world, s, client = pipeline
    sls = new_sls_id("6472")
    entry, iv = family(sls, 1)  # the child was born 2019-01-01: 3 at the interview
    iv["members"][2] |= {"difficulty": "some", "difficulties": {"seeing": "some", "self_care": "some"}}
    r = await client.post("/v1/interviews", json=iv, headers={"authorization": f"Bearer {s.officer}"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"path": "/members/2/difficulties/self_care",
                                   "reason": "self_care difficulty is asked only of members aged 5 or more "
                                             "(this member is 3)"}]
    iv["members"][2]["date_of_birth"] = "2021-06-01"  # 1 at the interview: not asked at all
    r = await client.post("/v1/interviews", json=iv, headers={"authorization": f"Bearer {s.officer}"})
    assert r.status_code == 422, r.text
    assert [e["path"] for e in r.json()["errors"]] == [
        "/members/2/difficulty", "/members/2/difficulties/seeing", "/members/2/difficulties/self_care"]
    assert await s.status(iv["submission_id"]) is None  # nothing stored
    assert await submitted(world, iv["submission_id"]) is None
    # the same child answered within the filters goes through
    iv["members"][2] |= {"date_of_birth": "2019-01-01", "difficulties": {"seeing": "some"}}
    receipt = await s.submit("/v1/interviews", iv, retry_for=30)
    assert receipt["status"] == "accepted", receipt
    await s.submit("/v1/rosters", roster(sls, [entry]), retry_for=30)
    event = await eventually(lambda: submitted(world, iv["submission_id"]), timeout=WAIT,
                             what="the interview answered within the filters to be published")
    assert event["members"][2]["difficulties"]["seeing"] == "some"
    await eventually(lambda: one(world, Topic.INTERVIEW_VERIFIED, sls, family_id_of(iv)), timeout=WAIT,
                     what="the family answered within the filters to be verified")


async def submitted(world: World, submission_id: str) -> dict | None:
    """The interview-submitted event of a submission, if intake published one."""
    found = [e for r in await read_topic(world.topic(Topic.INTERVIEW_SUBMITTED))
             if (e := json.loads(r.value)).get("submission_id") == submission_id]
    return found[-1] if found else None
