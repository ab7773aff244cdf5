"""People, not only families, on the real stack: classify decides PBI-JKN per member (and PIP per
student) and publishes the member decisions on eligibility-decided; notify delivers them to a
subscribed programme whose access entry grants by-name data (PBI-JKN), with each member's line
number, NIK and reasons, while a programme without that grant (PKH; PIP in this run's access file)
gets its family-level decision and no member identifier.

The NIKs come from intake's identity feed (member-identities: sealed for notify only) and are put
in at sending time. Here the decision reaches notify BEFORE the identity list (the interview is
submitted to intake only once the decision is queued): the by-name delivery waits for it, then goes
out with the NIKs; no other event carries a NIK, and no topic carries one in clear."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from test_notify_delivery import NOTIFY_ENV, Receiver, new_receiver

from classify.domain import classify
from classify.model import PmtModel, PovertyLines, RuleSet
from classify.settings import ClassifySettings
from notify.settings import NotifySettings
from regsosek.contracts import FamilyInterview, InterviewVerified, household_profile
from regsosek.topics import Topic

from itkit import World, cloud_event, eventually, family, new_sls_id, token

pytestmark = pytest.mark.integration

WAIT = 60


def poor_family_with_a_pupil(sls: str) -> FamilyInterview:
    """itkit's three-member family with a fourth member, a child of 10 at school."""
    _, doc = family(sls, 1)
    doc["members"].append({"line_no": 4, "name": "Dewi", "sex": "female", "date_of_birth": "2012-03-01",
                           "relationship": "child", "marital_status": "never_married", "school": "attending",
                           "highest_diploma": "none", "worked_last_week": False})
    return FamilyInterview.model_validate(doc)


def access_without_pip_by_name(tmp: Path) -> str:
    """The shipped access file with PIP's by-name grant taken away."""
    doc = yaml.safe_load(Path(NotifySettings().programme_access_file).read_text())
    doc["programmes"]["pip"]["member_identifiers"] = False
    path = tmp / "programme-access-it.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.fixture
async def member_world(stack, tmp_path):
    world = await World(["intake", "classify", "notify"]).setup()
    try:
        intake, _ = await world.start("intake", "classify")
        (notify,) = await world.start("notify", **NOTIFY_ENV,
                                      REGSOSEK_PROGRAMME_ACCESS_FILE=access_without_pip_by_name(tmp_path))
        yield world, intake, notify
    finally:
        await world.teardown()


async def delivered(rc: Receiver) -> list[dict] | None:
    events = (await rc.client.get("/events", params={"with_data": "true"})).json()["events"]
    return events or None


async def test_a_member_level_pbi_decision_reaches_the_subscribed_programme_only(member_world, producer):
    world, intake_service, notify = member_world
    sls = new_sls_id("6472")
    iv = poor_family_with_a_pupil(sls)
    profile = household_profile(iv)
    s = ClassifySettings()
    expected = classify(profile, PmtModel.load(s.pmt_model_file), PovertyLines.load(s.poverty_lines_file),
                        RuleSet.load(s.rules_file))
    assert expected.eligibility["pbi_jkn"] and expected.eligibility["pip"], "precondition: a poor family with a pupil"

    receivers = await asyncio.gather(*(new_receiver(world) for _ in range(3)))
    apis = {p: httpx.AsyncClient(base_url=notify.url, timeout=10, headers={
        "authorization": f"Bearer {token('programme', p.upper() + '-' + uuid.uuid4().hex[:6], (sls,), (p,))}"})
        for p in ("pbi_jkn", "pkh", "pip")}
    try:
        for api, (rc, secret) in zip(apis.values(), receivers, strict=True):
            r = await api.post("/v1/subscriptions", json={"callback_url": rc.proc.url + "/notify", "secret": secret})
            assert r.status_code == 201, r.text

        verified = InterviewVerified(family_id=iv.family_id, sls_id=sls, outcome="verified",
                                     verified_at=datetime.now(UTC), profile=profile, decision_seq=1)
        _, value, headers = cloud_event(verified, subject=iv.family_id)
        await producer.send_and_wait(world.topic(Topic.INTERVIEW_VERIFIED), value=value, key=sls.encode(),
                                     headers=headers)

        # the decision is queued for the three programmes; PKH's and PIP's go out, PBI-JKN's waits for NIKs
        (e_pkh,), (e_pip,) = await asyncio.gather(
            *(eventually(lambda rc=rc: delivered(rc), timeout=WAIT, what=f"{p}'s event")
              for p, (rc, _) in list(zip(apis, receivers, strict=True))[1:]))
        async def only_pbi_waits() -> bool:  # PKH's and PIP's recorded delivered, PBI-JKN's still pending
            return await world.fetchval("notify", "select count(*) from deliveries where family_id = $1 "
                                        "and status = 'pending'", iv.family_id) == 1 or None

        await eventually(only_pbi_waits, timeout=WAIT, what="PKH's and PIP's deliveries recorded")
        assert await delivered(receivers[0][0]) is None

        # the interview reaches intake now: its identity list follows on member-identities
        officer = {"authorization": f"Bearer {token('officer', iv.officer_id, (sls,))}"}
        async with httpx.AsyncClient(base_url=intake_service.url, timeout=10) as intake:
            r = await intake.post("/v1/interviews", json=iv.model_dump(mode="json"), headers=officer)
            assert r.status_code == 202, r.text
        (e_jkn,) = await eventually(lambda: delivered(receivers[0][0]), timeout=WAIT, what="PBI-JKN's event")

        # PBI-JKN (by-name grant): one decision per member, its own programme only, with the member's reasons.
        members = e_jkn["data"]["member_decisions"]
        assert [(m["programme"], m["line_no"], m["eligible"]) for m in members] == [
            ("pbi_jkn", n, True) for n in range(1, len(iv.members) + 1)]
        assert [m["nik"] for m in members] == [m.nik for m in iv.members]  # each member by name, from intake
        assert all(m["reasons"] and m["rule_version"] == e_jkn["data"]["rule_version"] for m in members)
        assert [d["programme"] for d in e_jkn["data"]["decisions"]] == ["pbi_jkn"]

        # PKH (a family programme) and PIP (no by-name grant in this run): no member-level decision, no line number.
        for e, programme in ((e_pkh, "pkh"), (e_pip, "pip")):
            assert "member_decisions" not in e["data"] and "line_no" not in repr(e)
            assert [d["programme"] for d in e["data"]["decisions"]] == [programme]
        assert next(d for d in e_pip["data"]["decisions"])["eligible"] is True

        # No other programme's event carries a NIK; no event a name; notify's stored payloads hold no NIK
        # (put in at sending time) and its identity list is the sealed one.
        text = repr([e_jkn, e_pkh, e_pip])
        assert all(m.name not in text for m in iv.members)
        assert all(m.nik is None or m.nik not in repr([e_pkh, e_pip]) for m in iv.members)
        stored = await world.fetchval("notify", "select string_agg(payload::text, ' ') from deliveries")
        sealed = await world.fetchval("notify", "select sealed from member_identities where family_id = $1",
                                      iv.family_id)
        assert all(m.nik is None or (m.nik not in stored and m.nik.encode() not in sealed) for m in iv.members)
    finally:
        await asyncio.gather(*(a.aclose() for a in apis.values()), *(rc.client.aclose() for rc, _ in receivers))
