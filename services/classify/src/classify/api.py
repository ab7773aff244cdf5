"""Classify's read-only status API: which model, poverty lines and rules are in force, and the state of
re-ranks and replays. What no event carries (the policy files are classify's configuration; rankings
and replay runs are its own tables), for the operations console and operators. No family data:
versions, coefficients, lines, counts and times only. Reads go through the store (classify.store)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request

from classify.domain import Config
from classify.settings import ClassifySettings
from classify.store import StatusStore
from regsosek.auth import Role, TokenVerifier, bearer
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
    }


def _json(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def replay_state(run: dict, running: bool) -> str:
    """finished | superseded | running (unfinished while the lock is held) | interrupted (resumes on the next replay)."""
    if run["finished_at"] is not None:
        return run["outcome"] or "finished"
    return "running" if running else "interrupted"


def status_router(settings: ClassifySettings, config: Config, stores: Stores = pool_stores,
                  verifier: Callable[[Request], TokenVerifier] | None = None) -> APIRouter:
    """GET /v1/policy and GET /v1/reranks, for any signed-in role (nothing personal)."""
    router = APIRouter(prefix="/v1", tags=["policy"])
    signed_in = bearer(verifier or (lambda _request: settings.token_verifier()), *Role)

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

    @router.get("/reranks", summary="Re-ranks and replays: running or not, recent rankings, replay runs with "
                                    "their progress, regencies waiting for an area re-rank")
    async def reranks(request: Request, limit: Annotated[int, Query(ge=1, le=100)] = 10, _principal=signed_in):
        async with stores(request) as store:
            running = await store.rerank_running()
            replays = await store.recent_replays(limit)
            rankings = await store.recent_rankings(limit)
            waiting = await store.areas_waiting()
            total = sum(r["families"] for r in await store.families_by_versions())
        return {"running": running, "families": total,
                "replays": [{**_json(r), "state": replay_state(r, running),
                             "progress": round(min(1.0, r["examined"] / total), 4) if total else None}
                            for r in replays],
                "rankings": [_json(r) for r in rankings],
                "areas_waiting": [_json(r) for r in waiting]}

    return router
