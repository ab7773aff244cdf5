"""The console's pages: server-rendered HTML (Jinja2), one route per person's task, plus the
fragment and JSON the pages poll for live numbers. Reads go to the read model (scoped by the
signed-in person's areas); actions go to the owning service's API with the person's token."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from console import charts, domain, i18n
from console.domain import Page
from console.gateway import Answer, Gateway, Unavailable
from console.session import LANG_COOKIE, SignedOut, principal_of
from console.settings import ConsoleSettings
from console.store import ConsoleStore
from regsosek import areas, audit
from regsosek.auth import Principal
from regsosek.service import runtime_of

TEMPLATES = Path(__file__).resolve().parent / "templates"
GROUP_KEYS = ("group_1", "group_2", "group_3", "group_4")
SUBSCRIPTION_ACTIONS = ("pause", "resume", "redeliver", "test-event")  # notify's, on one subscription


def safe_next(value: str | None) -> str:
    """A local path to return to (never another site)."""
    return value if value and value.startswith("/") and not value.startswith("//") else "/"


def area_name(code: str) -> str:
    ref = areas.reference()
    return ref.provinces.get(code) or ref.regencies.get(code) or ""


@dataclass
class Viewer:
    """The signed-in person on one request: who, their token, their words."""

    principal: Principal
    token: str
    t: i18n.Words

    @property
    def scope(self) -> tuple[str, ...] | None:
        return domain.area_scope(self.principal)


class Pages:
    def __init__(self, settings: ConsoleSettings, gateway: Gateway,
                 store_for: Callable[[asyncpg.Connection], ConsoleStore] = ConsoleStore) -> None:
        self.settings, self.gateway, self.store_for = settings, gateway, store_for
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self.templates.env.globals.update(area_name=area_name, level_name=domain.level_name, charts=charts,
                                          group_keys=GROUP_KEYS, outcomes=domain.OUTCOMES,
                                          responded=domain.responded)

    # ------------------------------------------------------------ shared

    def words(self, request: Request) -> i18n.Words:
        return i18n.Words(request.cookies.get(LANG_COOKIE, i18n.DEFAULT))

    async def viewer(self, request: Request, page: Page) -> Viewer:
        principal, token = await principal_of(request, self.settings)
        if not domain.may_open(principal, page):
            raise HTTPException(403, self.words(request)("error.page_not_for_role"))
        return Viewer(principal, token, self.words(request))

    def render(self, request: Request, name: str, status: int = 200, viewer: Viewer | None = None, **context: Any):
        t = viewer.t if viewer else self.words(request)
        nav = [p for p in Page if viewer and domain.may_open(viewer.principal, p)]
        return self.templates.TemplateResponse(request, name, {
            "t": t, "lang": t.lang, "me": viewer.principal if viewer else None, "nav": nav,
            "live_ms": int(self.settings.live_interval_s * 1000), "path": request.url.path,
            "query": str(request.url.query), "notice": request.query_params.get("notice"),
            "refused": request.query_params.get("refused"), **context}, status_code=status)

    async def store_read(self, request: Request, read: Callable[[ConsoleStore], Any]) -> Any:
        async with runtime_of(request).pool.acquire() as conn:
            return await read(self.store_for(conn))

    def area_of(self, viewer: Viewer, area: str | None) -> str:
        area = domain.home_area(viewer.principal) if area is None else area.strip()
        if not domain.valid_area(area):
            raise HTTPException(422, viewer.t("error.area", field="area"))
        return area

    # ------------------------------------------------------------ operations

    async def operations_data(self, request: Request, viewer: Viewer, area: str) -> dict[str, Any]:
        scope = viewer.scope

        async def read(store: ConsoleStore):
            # the areas one level below; an SLS, the lowest level, shows itself
            rows = await store.progress(area, scope, domain.child_length(area) or len(area))
            return rows, await store.daily_interviews(area, scope)

        rows, days = await self.store_read(request, read)
        overall = domain.total(area, rows)
        start, end = self.settings.collection_start, self.settings.collection_end
        plan = domain.plan_per_day(overall.expected, start, end)
        rows = domain.behind_first(rows) if domain.child_length(area) else []
        return {"area": area, "rows": rows, "overall": overall, "days": domain.daily_series(days, start, end),
                "plan": plan, "withheld": domain.disclosure(overall, rows, domain.exact_counts(viewer.principal)),
                "child_level": domain.child_level_name(area),
                "updated": datetime.now(UTC).strftime("%H:%M:%S UTC")}

    async def operations(self, request: Request, area: str | None = None):
        v = await self.viewer(request, Page.OPERATIONS)
        area = self.area_of(v, area)
        return self.render(request, "operations.html", viewer=v, page=Page.OPERATIONS,
                           **await self.operations_data(request, v, area))

    async def operations_live(self, request: Request, area: str | None = None):
        v = await self.viewer(request, Page.OPERATIONS)
        area = self.area_of(v, area)
        return self.render(request, "_progress.html", viewer=v, **await self.operations_data(request, v, area))

    async def progress_json(self, request: Request, area: str | None = None):
        v = await self.viewer(request, Page.OPERATIONS)
        area = self.area_of(v, area)
        data = await self.operations_data(request, v, area)
        withheld: domain.Disclosure = data["withheld"]

        def cell(p: domain.Progress, hidden: frozenset[str]) -> dict[str, Any]:
            return {"area": p.area, **domain.shown(p, hidden), "suppressed": sorted(hidden)}

        return JSONResponse({"area": area, "total": cell(data["overall"], withheld.total),
                             "areas": [cell(r, withheld.of(r.area)) for r in data["rows"]]})

    # ------------------------------------------------------------ supervisors

    async def worklist(self, request: Request, template: str = "worklist.html"):
        v = await self.viewer(request, Page.WORKLIST)

        async def read(store: ConsoleStore):
            return await store.worklist(v.scope), await store.recently_resolved(v.scope)

        flagged, resolved = await self.store_read(request, read)
        return self.render(request, template, viewer=v, page=Page.WORKLIST, flagged=flagged, resolved=resolved,
                           awaiting=domain.awaiting_resolution, resolutions=list(domain.RESOLUTIONS))

    async def worklist_live(self, request: Request):
        """The work list's content alone, for the page's live refresh."""
        return await self.worklist(request, "_worklist.html")

    async def resolve(self, request: Request, family_id: str, sls_id: str, kind: str, note: str):
        v = await self.viewer(request, Page.WORKLIST)
        if kind not in domain.RESOLUTIONS:
            raise HTTPException(422, v.t("error.field", field="kind"))
        body = {"submission_id": str(uuid.uuid4()), "family_id": family_id, "sls_id": sls_id,
                "decision": domain.RESOLUTIONS[kind].value, "supervisor_id": v.principal.subject,
                "reason": domain.resolution_reason(kind, note)[:500], "decided_at": datetime.now(UTC).isoformat()}
        return await self.act(request, v, "/worklist", self.gateway.resolve(v.token, body), "notice.resolution_sent")

    @staticmethod
    def refusal(v: Viewer, answer: Answer) -> str:
        """A service's refusal in the person's words: a refused token or permission says so (the console's
        token for that service is wrong or lacks its audience), anything else gives the service's reason."""
        if answer.denied:
            return v.t("error.denied", service=answer.service, status=answer.status, reason=answer.reason())
        return answer.reason()

    async def act(self, request: Request, v: Viewer, back: str, call, notice: str) -> Response:
        """Runs an action on a service and returns to the page with its outcome."""
        back += "&" if "?" in back else "?"
        try:
            answer = await call
        except Unavailable as e:
            return RedirectResponse(f"{back}refused={quote(v.t('error.unavailable', service=e.service))}", 303)
        if not answer.ok:
            return RedirectResponse(f"{back}refused={quote(self.refusal(v, answer)[:300])}", 303)
        return RedirectResponse(f"{back}notice={notice}", 303)

    # ------------------------------------------------------------ journey

    async def journey(self, request: Request, id: str = ""):
        v = await self.viewer(request, Page.JOURNEY)
        wanted = id.strip()[:64]
        family, steps = (None, [])
        if wanted:
            family, steps = await self.store_read(request, lambda s: s.family_by_id(wanted, v.scope))
        if family is not None:  # a read of a family's journey: who, which family, when (ids only)
            entry = audit.of_request(request, v.principal, "journey.read", "family", family.family_id)
            await self.store_read(request, lambda s: s.record_audit(entry))
        status = 404 if wanted and family is None else 200
        return self.render(request, "journey.html", status=status, viewer=v, page=Page.JOURNEY, wanted=wanted,
                           family=family, steps=steps)

    # ------------------------------------------------------------ village

    async def village(self, request: Request, area: str | None = None):
        v = await self.viewer(request, Page.VILLAGE)
        area = self.area_of(v, area)
        families = await self.store_read(request, lambda s: s.families_of(area, v.scope)) if len(area) >= 10 else []
        forums = await self.store_read(request, lambda s: s.forums_of(area, v.scope)) if len(area) >= 10 else []
        return self.render(request, "village.html", viewer=v, page=Page.VILLAGE, area=area, families=families,
                           forums=forums)

    async def fkp(self, request: Request, family_id: str, sls_id: str, welfare_group: int, reason: str):
        v = await self.viewer(request, Page.VILLAGE)
        body = {"submission_id": str(uuid.uuid4()), "family_id": family_id, "sls_id": sls_id,
                "welfare_group": welfare_group, "reason": reason.strip()[:500] or "-",
                "decided_by": v.principal.subject, "decided_at": datetime.now(UTC).isoformat()}
        back = f"/village?area={sls_id[:10]}"
        return await self.act(request, v, back, self.gateway.fkp_decision(v.token, body), "notice.fkp_sent")

    # ------------------------------------------------------------ policy

    async def policy(self, request: Request, area: str | None = None):
        v = await self.viewer(request, Page.POLICY)
        area = self.area_of(v, area)

        async def read(store: ConsoleStore):
            return await store.distributions(area, v.scope), await store.versions()

        (dist, versions), (policy, reranks, problem) = await asyncio.gather(self.store_read(request, read),
                                                                              self.classify_status(v))
        return self.render(request, "policy.html", viewer=v, page=Page.POLICY, area=area, dist=dist,
                           versions=versions, colours=charts.GROUP_COLOURS, policy=policy, reranks=reranks,
                           problem=problem)

    async def classify_status(self, v: Viewer) -> tuple[dict | None, dict | None, str | None]:
        """classify's policy in force and its re-ranks and replays (its status API, with the person's token);
        what it refused or that it is not answering, in words, instead."""
        try:
            policy, reranks = await asyncio.gather(self.gateway.policy(v.token), self.gateway.reranks(v.token))
        except Unavailable as e:
            return None, None, v.t("error.unavailable", service=e.service)
        refused = next((a for a in (policy, reranks) if not a.ok), None)
        if refused is not None:
            return None, None, self.refusal(v, refused)
        return policy.body, reranks.body, None

    # ------------------------------------------------------------ programme integrators

    async def integrator(self, request: Request):
        v = await self.viewer(request, Page.INTEGRATOR)
        try:
            listing = await self.gateway.subscriptions(v.token)
            found = (listing.body or {}).get("subscriptions", []) if listing.ok else []
            subs = await asyncio.gather(*(self.gateway.subscription_view(v.token, s) for s in found))
        except Unavailable as e:
            return self.render(request, "integrator.html", status=503, viewer=v, page=Page.INTEGRATOR, subs=[],
                               problem=v.t("error.unavailable", service=e.service))
        problem = None if listing.ok else self.refusal(v, listing)
        status = 403 if listing.denied else 200  # notify refused the person's token: a refusal, not a fault
        return self.render(request, "integrator.html", status=status, viewer=v, page=Page.INTEGRATOR, subs=subs,
                           problem=problem)

    async def subscription_action(self, request: Request, sub_id: uuid.UUID, action: str):
        v = await self.viewer(request, Page.INTEGRATOR)
        if action not in SUBSCRIPTION_ACTIONS:
            raise HTTPException(404, v.t("error.field", field="action"))
        return await self.act(request, v, "/integrator", self.gateway.subscription_action(v.token, sub_id, action),
                              f"notice.{action}")

    # ------------------------------------------------------------ routes

    def router(self) -> APIRouter:
        r = APIRouter(default_response_class=HTMLResponse, include_in_schema=False)
        r.add_api_route("/operations", self.operations, methods=["GET"])
        r.add_api_route("/operations/live", self.operations_live, methods=["GET"])
        r.add_api_route("/api/progress", self.progress_json, methods=["GET"], response_class=JSONResponse,
                        include_in_schema=True, summary="Progress of the areas below `area`, scoped to the caller")
        r.add_api_route("/worklist", self.worklist, methods=["GET"])
        r.add_api_route("/worklist/live", self.worklist_live, methods=["GET"])
        r.add_api_route("/journey", self.journey, methods=["GET"])
        r.add_api_route("/village", self.village, methods=["GET"])
        r.add_api_route("/policy", self.policy, methods=["GET"])
        r.add_api_route("/integrator", self.integrator, methods=["GET"])

        @r.post("/worklist/resolve")
        async def resolve(request: Request, family_id: str = Form(..., max_length=30), sls_id: str = Form(..., max_length=14),
                          kind: str = Form(..., max_length=30), note: str = Form("", max_length=400)):
            return await self.resolve(request, family_id, sls_id, kind, note)

        @r.post("/village/fkp")
        async def fkp(request: Request, family_id: str = Form(..., max_length=30), sls_id: str = Form(..., max_length=14),
                      welfare_group: int = Form(..., ge=1, le=4), reason: str = Form("", max_length=400)):
            return await self.fkp(request, family_id, sls_id, welfare_group, reason)

        @r.post("/integrator/{sub_id}/{action}")
        async def subscription_action(request: Request, sub_id: uuid.UUID, action: str):
            return await self.subscription_action(request, sub_id, action)

        return r

    def signed_out(self, request: Request, exc: SignedOut) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"reason": exc.reason}, status_code=401)
        target = f"/signin?next={quote(request.url.path + ('?' + request.url.query if request.url.query else ''))}"
        return RedirectResponse(target, 303)
