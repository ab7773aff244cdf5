"""Classify's status API: which model, poverty lines and rules are in force, and the state of re-ranks
and replays. What no event carries (the policy files are classify's configuration; rankings, re-rank
and replay runs are its own tables), for the operations console and operators. No family data:
versions, coefficients, lines, counts and times only. One write: an administrator asks for a re-rank
(POST /v1/reranks), which the service's re-rank task does. All SQL is the store's (classify.store)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict

from classify.domain import Config
from classify.settings import ClassifySettings
from classify.store import StatusStore
from regsosek import areas
from regsosek.auth import Role, TokenVerifier
from regsosek.bearer import bearer
from regsosek.service import runtime_of

log = logging.getLogger("classify.api")

Stores = Callable[[Request], contextlib.AbstractAsyncContextManager[StatusStore]]


@contextlib.asynccontextmanager
async def pool_stores(request: Request) -> AsyncIterator[StatusStore]:
    """The status store on a connection of the service's pool (what app.py gives the routes)."""
    async with runtime_of(request).pool.acquire() as conn:
        yield StatusStore(conn)


def _largest(coefficients: dict[str, float], n: int = 5) -> list[dict[str, Any]]:
    top = sorted(coefficients.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:n]
    return [{"name": k, "coefficient": v} for k, v in top]


def policy_of(config: Config, settings: ClassifySettings) -> dict[str, Any]:
    """The model, poverty lines and rules in force (the files the settings name), summarised."""
    m, lines, rules = config.model, config.lines, config.rules
    lines_file = yaml.safe_load(settings.poverty_lines_file.read_text(encoding="utf-8")) or {}
    return {
        "model": {"version": m.version, "illustrative": m.illustrative, "file": settings.pmt_model_file.name,
                  "intercept": m.intercept, "coefficients": len(m.coefficients), "largest": _largest(m.coefficients),
                  "regency_effects": len(m.regency_effects), "decile_cutpoints": len(m.decile_cutpoints)},
        "poverty_lines": {"version": lines.version, "file": settings.poverty_lines_file.name,
                          "extreme_poor": lines.extreme_poor,
                          "extreme_poor_source": lines_file.get("extreme_poor_source"),
                          "source": lines.source or lines_file.get("source"), "in_force": lines.in_force,
                          "vulnerable_multiple": lines.vulnerable_multiple, "provinces": lines.provinces,
                          "regencies": lines.regencies},
        "rules": {"version": rules.version, "file": settings.rules_file.name,
                  "programmes": [{"programme": r.programme, "name": r.name, "max_decile": r.max_decile,
                                  "max_welfare_group": r.max_welfare_group, "requires_any": list(r.requires_any)}
                                 for r in rules.rules]},
        "decile_scope": settings.decile_scope,
        # per-village urban/rural (docs/DOMAIN.md): how much of the area reference BPS's classification
        # covers, and what the illustrative PMT's `urban` feature does for a village it does not
        "urban_classification": {**areas.reference().urban_coverage(),
                                 "pmt_fallback": "regency_is_kota", "poverty_line_fallback": "province"},
    }


def _json(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def replay_state(run: dict, running: bool) -> str:
    """finished | superseded | running (unfinished while the lock is held) | interrupted (resumes on the next replay)."""
    if run["finished_at"] is not None:
        return run["outcome"] or "finished"
    return "running" if running else "interrupted"


def run_state(run: dict, running: bool) -> str:
    """A re-rank run's state: as a replay's (an interrupted one resumes with the next re-rank of its scope)."""
    return replay_state(run, running)


class RerankRequest(BaseModel):
    """A re-rank to do now: national, each province, or each regency/city (the final ranking)."""

    model_config = ConfigDict(extra="forbid")
    scope: Literal["national", "province", "regency"]


def status_router(settings: ClassifySettings, config: Config, stores: Stores = pool_stores,
                  verifier: Callable[[Request], TokenVerifier] | None = None) -> APIRouter:
    """GET /v1/policy and GET /v1/reranks, for any signed-in role (nothing personal); POST /v1/reranks for
    administrators."""
    router = APIRouter(prefix="/v1", tags=["policy"])
    token_verifier = verifier or (lambda _request: settings.token_verifier())
    signed_in = bearer(token_verifier, *Role)
    admin = bearer(token_verifier, Role.ADMIN)

    @router.get("/policy", summary="The PMT model, poverty lines and eligibility rules in force, and the families "
                                   "classified with each set of versions")
    async def policy(request: Request, _principal=signed_in):
        async with stores(request) as store:
            by_versions = await store.families_by_versions()
        in_force = config.versions
        on_other = sum(r["families"] for r in by_versions
                       if (r["model_version"], r["lines_version"], r["rule_version"]) != in_force)
        return {**policy_of(config, settings),
                "families": {"total": sum(r["families"] for r in by_versions), "on_other_versions": on_other,
                             "by_versions": by_versions}}

    @router.get("/reranks", summary="Re-ranks and replays: running or not, recent re-rank runs and rankings, "
                                    "replay runs with their progress, re-ranks and regencies waiting, the schedule")
    async def reranks(request: Request, limit: Annotated[int, Query(ge=1, le=100)] = 10, _principal=signed_in):
        async with stores(request) as store:
            running = await store.rerank_running()
            replays = await store.recent_replays(limit)
            runs = await store.recent_reranks(limit)
            rankings = await store.recent_rankings(limit)
            waiting = await store.areas_waiting()
            requested = await store.reranks_waiting()
            total = sum(r["families"] for r in await store.families_by_versions())
        return {"running": running, "families": total, "schedule": settings.rerank_schedule,
                "scope": settings.decile_scope,
                "replays": [{**_json(r), "state": replay_state(r, running),
                             "progress": round(min(1.0, r["examined"] / total), 4) if total else None}
                            for r in replays],
                "reranks": [{**_json(r), "state": run_state(r, running),
                             "progress": round(min(1.0, r["examined"] / r["ranked"]), 4) if r["ranked"] else None}
                            for r in runs],
                "rankings": [_json(r) for r in rankings],
                "reranks_waiting": [_json(r) for r in requested],
                "areas_waiting": [_json(r) for r in waiting]}

    @router.post("/reranks", status_code=202, summary="Ask for a re-rank of a scope now (administrators); the "
                                                      "service does it after those asked before, one at a time")
    async def request_rerank(body: RerankRequest, request: Request, principal=admin):
        async with stores(request) as store:
            request_id = await store.request_rerank(body.scope, principal.subject)
        log.info("re-rank requested", extra={"fields": {"scope": body.scope, "request_id": request_id}})
        return {"request_id": request_id, "scope": body.scope, "status_url": "/v1/reranks"}

    return router
