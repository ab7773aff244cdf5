"""A subscriber's test event (POST /v1/subscriptions/{id}/test-event) on the in-memory store: queued like any
delivery, clearly marked, without personal data, for the subscription's owner only; its acknowledgement
confirms no family on the topics. The real-stack proof is tests/browser (the reference receiver gets it)."""

from __future__ import annotations

from datetime import UTC, datetime

from test_notify_api import api, store, token  # noqa: F401 - the fixtures

from notify.publisher import TEST_EVENT_TYPE, Publisher
from regsosek.testing import FakeUnitOfWork


async def _subscribe(api) -> str:  # noqa: F811
    r = await api.post("/v1/subscriptions", headers=token(), json={"callback_url": "http://receiver.test/hook"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_a_test_event_is_queued_marked_and_without_personal_data(api, store):  # noqa: F811
    sub_id = await _subscribe(api)
    r = await api.post(f"/v1/subscriptions/{sub_id}/test-event", headers=token())
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["event_type"] == TEST_EVENT_TYPE == "regsosek.test" and answer["status"] == "active"
    (queued,) = [d for d in store.deliveries if str(d["subscription_id"]) == sub_id]
    assert queued["status"] == "pending" and queued["event_id"] == answer["event_id"]
    assert queued["event_type"] == TEST_EVENT_TYPE and queued["family_id"] == ""
    payload = queued["payload"]
    assert payload["event_type"] == TEST_EVENT_TYPE and payload["data"]["test"] is True
    assert not {"family_id", "sls_id", "welfare_group", "decisions", "members"} & set(payload["data"])
    assert [e.action for e in store.audit][-1] == "subscription.test_event"


async def test_only_the_owner_may_send_a_test_event(api, store):  # noqa: F811
    sub_id = await _subscribe(api)
    r = await api.post(f"/v1/subscriptions/{sub_id}/test-event", headers=token(subject="SEMBAKO-API",
                                                                              programmes=("sembako",)))
    assert r.status_code == 404
    assert not store.deliveries


async def test_a_paused_subscription_queues_it_and_says_so(api, store):  # noqa: F811
    sub_id = await _subscribe(api)
    await api.post(f"/v1/subscriptions/{sub_id}/pause", headers=token())
    r = await api.post(f"/v1/subscriptions/{sub_id}/test-event", headers=token())
    assert r.status_code == 202 and r.json()["status"] == "paused" and "resume" in r.json()["note"]


async def test_a_dci_subscription_refuses_it_with_the_reason(api, store):  # noqa: F811
    sub_id = await _subscribe(api)
    next(iter(store.subscriptions.values()))["format"] = "dci"
    r = await api.post(f"/v1/subscriptions/{sub_id}/test-event", headers=token())
    assert r.status_code == 409 and "webhook" in r.text


async def test_an_acknowledged_test_event_confirms_no_family():
    uow = FakeUnitOfWork("notify")
    row = {"id": 1, "event_id": "test-1", "traceparent": None, "attempts": 0,
           "payload": {"event_id": "test-1", "event_type": TEST_EVENT_TYPE, "data": {"test": True}}}
    Publisher().delivered(uow, "00000000-0000-0000-0000-000000000001", "PKH-API", [row], datetime.now(UTC))
    assert uow.published == []
