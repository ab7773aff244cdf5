"""Programmes that received an erased family's decision are told (issue 11 item 8): on family-erased,
notify sends each subscription told about the family an erasure notice with the family id and the
erasure's id and time only, never to a subscription that was not told, and publishes no
eligibility-delivered for it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from test_notify_delivery import NOTIFY_ENV, Receiver, area, new_receiver

from regsosek.contracts import EligibilityDecided, FamilyErased
from regsosek.topics import Topic

from itkit import World, by_subject, cloud_event, eventually, read_topic, token

pytestmark = pytest.mark.integration

WAIT = 60
ERASED_TYPE = "id.go.bps.regsosek.family.erased.v1"


@pytest.fixture
async def notify_world(stack):
    world = await World(["notify"]).setup()
    try:
        (notify,) = await world.start("notify", **NOTIFY_ENV)
        yield world, notify
    finally:
        await world.teardown()


async def events_of(rc: Receiver) -> list[dict]:
    return (await rc.client.get("/events", params={"with_data": "true"})).json()["events"]


async def test_an_erasure_notice_reaches_the_programmes_told_about_the_family(notify_world, producer):
    world, notify = notify_world
    told_area, other_area = area(), area()
    sls = f"{told_area}0010001"
    fid = f"{sls}-0001-001"
    (told, told_secret), (other, other_secret) = await asyncio.gather(new_receiver(world), new_receiver(world))
    apis = [httpx.AsyncClient(base_url=notify.url, timeout=10, headers={
        "authorization": f"Bearer {token('programme', 'PKH-' + uuid.uuid4().hex[:6], (a,), ('pkh',))}"})
        for a in (told_area, other_area)]
    try:
        for api, rc, secret in ((apis[0], told, told_secret), (apis[1], other, other_secret)):
            r = await api.post("/v1/subscriptions", json={"callback_url": rc.proc.url + "/notify", "secret": secret})
            assert r.status_code == 201, r.text

        decision = EligibilityDecided.model_validate({
            "family_id": fid, "sls_id": sls, "submission_id": str(uuid.uuid4()), "version": 1, "welfare_group": 1,
            "decile": 1, "model_version": "pmt-it", "rule_version": "rules-it", "decided_at": "2022-11-01T00:00:00Z",
            "decision_seq": 1, "decisions": [{"programme": "pkh", "eligible": True, "rule_version": "rules-it",
                                              "reasons": ["decile 1 <= 4"]}]})
        _, value, headers = cloud_event(decision, subject=fid)
        await producer.send_and_wait(world.topic(Topic.ELIGIBILITY_DECIDED), value=value, key=sls.encode(),
                                     headers=headers)
        await eventually(lambda: events_of(told), timeout=WAIT, what="the decision at the programme")

        erasure = FamilyErased(erasure_id=uuid.uuid4(), family_id=fid, sls_id=sls, reason="deceased_dissolved",
                               erased_at=datetime.now(UTC))
        erasure_event_id, value, headers = cloud_event(erasure, subject=fid)
        await producer.send_and_wait(world.topic(Topic.FAMILY_ERASED), value=value, key=sls.encode(), headers=headers)

        async def notice():
            return next((e for e in await events_of(told) if e["event_type"] == ERASED_TYPE), None)

        got = await eventually(notice, timeout=WAIT, what="the erasure notice at the programme")
        assert got["event_id"] == erasure_event_id and got["family_id"] == fid
        assert got["data"] == {"family_id": fid, "erasure_id": str(erasure.erasure_id),
                               "erased_at": erasure.erased_at.isoformat(), "action": "erase",
                               "decisions_withdrawn": True}
        assert "deceased_dissolved" not in repr(got)  # not the erasure's reason

        # the notice is delivered and acknowledged (recorded once the programme's answer came), yet it is
        # no eligibility delivery
        await eventually(lambda: world.fetchval("notify", "select status = 'delivered' from deliveries "
                                                          "where event_type = 'family-erased'"),
                         timeout=WAIT, what="notify to record the notice delivered")
        await eventually(lambda: world.fetchval("notify", "select count(*) = 0 from outbox"), timeout=WAIT,
                         what="notify's outbox to drain")
        delivered = by_subject(await read_topic(world.topic(Topic.ELIGIBILITY_DELIVERED), timeout=5)).get(fid, [])
        assert len(delivered) == 1
        assert await events_of(other) == []  # never told about the family: nothing to withdraw
    finally:
        await asyncio.gather(*(a.aclose() for a in apis), told.client.aclose(), other.client.aclose())
