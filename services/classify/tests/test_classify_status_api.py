"""Classify's read-only status API (GET /v1/policy, GET /v1/reranks) on the in-memory status store: what is in
force (from the configured files), how far a replay went, and tokens checked like every service's."""

from __future__ import annotations

import contextlib
import inspect
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from classify.api import replay_state, status_router
from classify.app import load_config
from classify.settings import ClassifySettings
from classify.store import StatusStore
from regsosek.auth import Role, mint

from classify_fakes import InMemoryStatusStore

SETTINGS = ClassifySettings()
CONFIG = load_config(SETTINGS)
AT = datetime(2022, 11, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def status() -> InMemoryStatusStore:
    return InMemoryStatusStore()


@pytest.fixture
async def api(status):
    @contextlib.asynccontextmanager
    async def stores(request):
        yield status

    app = FastAPI()
    app.include_router(status_router(SETTINGS, CONFIG, stores=stores))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://classify") as client:
        yield client


def token(audience: str = "regsosek-classify") -> dict[str, str]:
    return {"authorization": "Bearer " + mint(subject="OPS-1", role=Role.SUPERVISOR, areas=["64"], audience=[audience])}


def test_the_in_memory_status_store_has_the_real_ones_methods_and_signatures():
    def public(cls: type) -> dict:
        return {n: inspect.signature(m) for n, m in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}
    assert public(InMemoryStatusStore) == public(StatusStore)


async def test_policy_names_the_model_lines_and_rules_in_force_with_the_lines_source(api, status):
    model, lines, rules = CONFIG.versions
    status.versions = [{"model_version": model, "lines_version": lines, "rule_version": rules, "families": 7},
                       {"model_version": model, "lines_version": "lines-2021", "rule_version": rules, "families": 3}]
    r = await api.get("/v1/policy", headers=token())
    assert r.status_code == 200, r.text
    p = r.json()
    assert (p["model"]["version"], p["poverty_lines"]["version"], p["rules"]["version"]) == CONFIG.versions
    assert p["model"]["coefficients"] == len(CONFIG.model.coefficients) and len(p["model"]["largest"]) == 5
    assert p["poverty_lines"]["extreme_poor"] == 322170 and "BPS" in p["poverty_lines"]["extreme_poor_source"]
    assert {x["programme"] for x in p["rules"]["programmes"]} >= {"pkh", "sembako"}
    assert p["families"]["total"] == 10 and p["families"]["on_other_versions"] == 3
    # the shipped East Kalimantan list classifies no village, so every one of them falls back
    uc = p["urban_classification"]
    assert uc["villages"] == 1032 and uc["unclassified"] == 1032 and uc["urban"] == uc["rural"] == 0
    assert uc["pmt_fallback"] == "regency_is_kota" and uc["poverty_line_fallback"] == "province"


async def test_reranks_show_a_running_replays_progress_rankings_and_waiting_areas(api, status):
    status.versions = [{"model_version": "m", "lines_version": "l", "rule_version": "r", "families": 200}]
    status.running = True
    status.replays = [{"id": 1, "model_version": "m", "lines_version": "l", "rule_version": "r", "examined": 50,
                       "changed": 4, "started_at": AT, "updated_at": AT, "finished_at": None, "outcome": None}]
    status.rankings = [{"id": 3, "scope": "national", "partition": "ID", "area": None, "model_version": "m",
                        "families": 200, "ranked_at": AT}]
    status.areas = [{"regency": "6472", "reason": "fkp", "requested_at": AT}]
    r = await api.get("/v1/reranks", headers=token())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["running"] is True and body["families"] == 200
    assert body["replays"][0]["state"] == "running" and body["replays"][0]["progress"] == 0.25
    assert body["rankings"][0]["ranked_at"] == AT.isoformat() and body["areas_waiting"][0]["regency"] == "6472"


def test_a_replay_left_unfinished_without_the_lock_is_interrupted():
    run = {"finished_at": None, "outcome": None}
    assert replay_state(run, running=False) == "interrupted"
    assert replay_state({"finished_at": AT, "outcome": "superseded"}, running=False) == "superseded"


async def test_tokens_for_another_audience_or_none_are_refused(api):
    assert (await api.get("/v1/policy")).status_code == 401
    assert (await api.get("/v1/policy", headers=token("regsosek-intake"))).status_code == 401
    assert (await api.get("/v1/reranks", headers=token(), params={"limit": 0})).status_code == 422


def admin_token() -> dict[str, str]:
    return {"authorization": "Bearer " + mint(subject="ADM-1", role=Role.ADMIN, areas=["64"],
                                              audience=["regsosek-classify"])}


async def test_an_administrator_asks_for_a_rerank_of_a_scope_and_sees_it_waiting(api, status):
    r = await api.post("/v1/reranks", headers=admin_token(), json={"scope": "regency"})
    assert r.status_code == 202, r.text
    assert r.json()["request_id"] == 1 and r.json()["scope"] == "regency"
    assert status.requests[0]["scope"] == "regency" and status.requests[0]["requested_by"] == "ADM-1"
    body = (await api.get("/v1/reranks", headers=token())).json()
    assert [w["scope"] for w in body["reranks_waiting"]] == ["regency"]
    assert body["schedule"] == SETTINGS.rerank_schedule and body["scope"] == SETTINGS.decile_scope


async def test_only_administrators_ask_for_a_rerank_and_only_of_a_known_scope(api, status):
    assert (await api.post("/v1/reranks", headers=token(), json={"scope": "national"})).status_code == 403
    r = await api.post("/v1/reranks", headers=admin_token(), json={"scope": "district"})
    assert r.status_code == 422 and "scope" in r.text
    assert (await api.post("/v1/reranks", headers=admin_token(), json={"scope": "national", "x": 1})).status_code == 422
    assert status.requests == []


async def test_a_rerank_run_shows_how_far_it_went(api, status):
    status.reranks = [{"id": 5, "scope": "regency", "area": None, "reason": "schedule", "model_version": "m",
                       "ranked": 400, "examined": 100, "changed": 7, "skipped": 0, "started_at": AT,
                       "updated_at": AT, "finished_at": None, "outcome": None}]
    body = (await api.get("/v1/reranks", headers=token())).json()
    assert body["reranks"][0]["progress"] == 0.25 and body["reranks"][0]["state"] == "interrupted"
