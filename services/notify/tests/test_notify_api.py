"""The subscription API on the in-memory store (tests/notify_fakes.py): it reads and writes through the store
only, so its rules run in milliseconds. The real-stack proof is tests/integration/test_notify_delivery."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from fastapi import FastAPI
from test_notify_handlers import ACCESS, FAMILY, apply, decided, queued

from notify.api import subscriptions_router
from notify.handlers import NotifyHandlers
from notify.settings import NotifySettings
from regsosek.auth import Role, mint

from notify_fakes import InMemoryNotifyStore


@pytest.fixture
def store() -> InMemoryNotifyStore:
    return InMemoryNotifyStore()


@pytest.fixture
async def api(store):
    @contextlib.asynccontextmanager
    async def stores(request, transaction: bool = False):
        yield store

    app = FastAPI()
    app.include_router(subscriptions_router(NotifySettings(), stores=stores))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify") as client:
        yield client


def token(subject: str = "PKH-API", programmes: tuple[str, ...] = ("pkh",)) -> dict[str, str]:
    return {"authorization": "Bearer " + mint(subject=subject, role=Role.PROGRAMME, areas=["6472"],
                                               programmes=list(programmes))}


async def test_pause_and_resume_through_the_api_keep_the_queue_and_are_audited(api, store):
    r = await api.post("/v1/subscriptions", headers=token(), json={"callback_url": "http://receiver.test/hook"})
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["programmes"] == ["pkh"] and sub["filters"]["area_prefixes"] == ["6472"]  # narrowed to the token
    sub_id = next(iter(store.subscriptions))
    assert sub["id"] == str(sub_id)

    r = await api.post(f"/v1/subscriptions/{sub_id}/pause", headers=token())
    assert r.status_code == 200 and r.json()["status"] == "paused"
    await apply(NotifyHandlers(ACCESS, store_for=lambda uow: store), decided(1, {"pkh": True}))
    assert [d["family_id"] for d in queued(store, sub_id)] == [FAMILY]  # paused: still queued
    figures = (await api.get(f"/v1/subscriptions/{sub_id}", headers=token())).json()
    assert figures["deliveries"]["pending"] == 1 and figures["status"] == "paused"

    r = await api.post(f"/v1/subscriptions/{sub_id}/resume", headers=token())
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert [e.action for e in store.audit] == ["subscription.create", "subscription.pause", "subscription.resume"]
    assert queued(store, sub_id)[0]["status"] == "pending"

    r = await api.post(f"/v1/subscriptions/{sub_id}/pause", headers=token("SEMBAKO-API", ("sembako",)))
    assert r.status_code == 404  # another programme's subscription does not exist for it


async def test_redeliver_requeues_dead_letters_and_names_the_field_it_needs(api, store):
    r = await api.post("/v1/subscriptions", headers=token(), json={"callback_url": "http://receiver.test/hook"})
    sub_id = next(iter(store.subscriptions))
    await apply(NotifyHandlers(ACCESS, store_for=lambda uow: store), decided(1, {"pkh": True}))
    (delivery,) = queued(store, sub_id)
    delivery.update(status="dead", attempts=1, last_status=400, last_error="refused")  # refused by the subscriber

    r = await api.post(f"/v1/subscriptions/{sub_id}/redeliver", headers=token(), json={})
    assert r.status_code == 422 and r.json()["detail"]["errors"][0]["path"] == "/"
    r = await api.post(f"/v1/subscriptions/{sub_id}/redeliver", headers=token(), json={"dead_letters": True})
    assert r.status_code == 200 and r.json() == {"requeued": 1, "status": "active"}
    assert delivery["status"] == "pending" and delivery["attempts"] == 0
    assert store.audit[-1].action == "subscription.redeliver" and store.audit[-1].detail["requeued"] == 1
