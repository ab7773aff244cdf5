"""Subscription API for programme systems: subscribe, list, pause, resume,
unsubscribe, dead letters, re-send and replay, delivery log. Reads and writes go through
the store (notify.store); a re-send or replay only queues again: the delivery worker sends."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID, uuid4

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, StringConstraints

from notify.callbacks import callback_problem_now
from notify.domain import Filters, Refusal, narrow, subscription_limit_problem
from notify.publisher import TEST_EVENT_TYPE, test_event
from notify.settings import NotifySettings
from notify.store import Stores, pool_stores
from regsosek import audit
from regsosek.auth import Principal, Role
from regsosek.bearer import bearer
from regsosek.contracts.identifiers import AreaPrefix
from regsosek.standard_webhooks import whsec_form
from regsosek.topics import Topic


class FiltersIn(BaseModel):
    model_config = {"extra": "forbid"}
    programmes: list[Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,32}$")]] = Field(default_factory=list, max_length=20)
    area_prefixes: list[AreaPrefix] = Field(default_factory=list, max_length=500)
    welfare_groups: list[Annotated[int, Field(ge=1, le=4)]] = Field(default_factory=list, max_length=4)
    event_types: list[Literal["eligibility-decided"]] = Field(default_factory=list, max_length=1)


class SubscriptionIn(BaseModel):
    model_config = {"extra": "forbid"}
    callback_url: Annotated[str, StringConstraints(min_length=8, max_length=2000)]
    secret: Annotated[str, StringConstraints(min_length=32, max_length=256)] | None = Field(
        None, description="HMAC key (signature hmac or both); generated and returned once if omitted")
    signature: Literal["ed25519", "hmac", "both"] | None = Field(
        None, description="ed25519: Standard Webhooks v1a signatures with notify's published key "
                          "(GET /v1/webhook-keys), no shared secret; hmac: v1 HMAC-SHA256 with the secret plus "
                          "X-Regsosek-Signature; both. Default: hmac when a secret is sent, else ed25519")
    filters: FiltersIn = Field(default_factory=FiltersIn)

    def scheme(self) -> str:
        return self.signature or ("hmac" if self.secret else "ed25519")


def _out(row, *, with_secret: bool = False) -> dict:
    d = {"id": str(row["id"]), "owner": row["owner"], "callback_url": row["callback_url"], "status": row["status"],
         "consecutive_failures": row["consecutive_failures"],
         "programmes": row["scope_programmes"],  # whose decisions (with reasons) its payloads carry
         "filters": {"programmes": row["programmes"], "area_prefixes": row["area_prefixes"],
                     "welfare_groups": row["welfare_groups"], "event_types": row["event_types"]},
         "created_at": row["created_at"].isoformat(), "signature": row["signature"]}
    if row["signature"] in ("ed25519", "both"):
        d["webhook_keys"] = "/v1/webhook-keys"
    if with_secret and row["secret"]:
        d["secret"] = row["secret"]
        d["secret_whsec"] = whsec_form(row["secret"])  # the same key as Standard Webhooks verifiers take it
    return d


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


async def _owned(stores: Stores, request: Request, sub_id: UUID, p: Principal) -> dict:
    async with stores(request) as store:
        row = await store.subscription(sub_id)
    if row is None or (row["owner"] != p.subject and p.role is not Role.ADMIN):
        raise HTTPException(404, {"reason": "no such subscription"})
    if p.role is not Role.ADMIN and not set(row["scope_programmes"]) <= set(p.programmes):
        # the owner's token no longer names every programme of the subscription
        raise HTTPException(403, {"reason": "the token does not name every programme of this subscription"})
    return row


_ACTIONS = {"paused": "pause", "active": "resume", "deleted": "delete"}


async def _set_status(stores: Stores, request: Request, sub_id: UUID, principal: Principal, status: str) -> dict:
    await _owned(stores, request, sub_id, principal)
    async with stores(request, True) as store:
        row = await store.set_status(sub_id, status)
        await store.record_audit(audit.of_request(request, principal, f"subscription.{_ACTIONS[status]}",
                                                  "subscription", sub_id))
    return _out(row)


class RedeliverIn(BaseModel):
    model_config = {"extra": "forbid"}
    dead_letters: bool = Field(False, description="Re-send every dead delivery")
    since: datetime | None = Field(None, description="Replay: re-send every event created at or after this time")


def subscriptions_router(settings: NotifySettings, stores: Stores = pool_stores) -> APIRouter:
    """The subscription API, with the service's settings (app.py); `stores(request, transaction)` gives
    the store the routes read and write through."""
    router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
    programme = bearer(lambda _r: settings.token_verifier(), Role.PROGRAMME)
    _subscription_routes(router, programme, settings, stores)
    _status_routes(router, programme, stores)
    _delivery_routes(router, programme, stores)
    _test_event_route(router, programme, stores)
    return router


def _subscription_routes(router: APIRouter, programme, settings: NotifySettings, stores: Stores) -> None:
    @router.post("", status_code=201, summary="Subscribe a callback to eligibility events")
    async def subscribe(request: Request, body: SubscriptionIn, principal: Principal = programme):
        # In production the name must resolve, to public addresses only; checked again at every delivery.
        problem = await callback_problem_now(body.callback_url, settings.env == "production", settings.resolve_timeout_s)
        if problem:
            raise HTTPException(422, {"errors": [{"path": "/callback_url", "reason": problem}]})
        scheme = body.scheme()
        if scheme == "ed25519" and body.secret:
            # Not kept: an ed25519 subscription shares no secret with notify (nothing to leak).
            raise HTTPException(422, {"errors": [{"path": "/secret", "reason": "a secret is only for signature hmac or both"}]})
        secret = None if scheme == "ed25519" else body.secret or secrets.token_urlsafe(32)
        f = body.filters
        requested = Filters(tuple(f.programmes), tuple(f.area_prefixes), tuple(f.welfare_groups),
                            tuple(f.event_types or [Topic.ELIGIBILITY_DECIDED.value]))
        try:  # narrowed to the token's programmes and areas (domain.narrow): never more
            scoped = narrow(requested, token_programmes=principal.programmes, token_areas=principal.areas)
        except Refusal as e:
            raise HTTPException(e.status, {"errors": [{"path": e.path, "reason": e.reason}]}) from None
        limit = settings.max_subscriptions_per_programme
        async with stores(request, True) as store:
            row, refused = await store.create_subscription(
                sub_id=uuid4(), owner=principal.subject, callback_url=body.callback_url, secret=secret,
                signature=scheme, scope=scoped.programmes, filters=scoped.filters,
                limit_problem=lambda counts: subscription_limit_problem(counts, scoped.programmes, limit))
            if row is not None:
                await store.record_audit(audit.of_request(request, principal, "subscription.create", "subscription",
                                                          row["id"]))
        if refused:
            raise HTTPException(409, {"errors": [{"path": "/filters/programmes", "reason": refused}]})
        return _out(row, with_secret=True)

    @router.get("", summary="List your subscriptions")
    async def list_subscriptions(request: Request, principal: Principal = programme):
        async with stores(request) as store:
            rows = await store.subscriptions_of(principal.subject, every_owner=principal.role is Role.ADMIN)
        return {"subscriptions": [_out(r) for r in rows]}

    @router.get("/{sub_id}", summary="One subscription with its queue and delivery figures")
    async def get_subscription(request: Request, sub_id: UUID, principal: Principal = programme):
        row = await _owned(stores, request, sub_id, principal)
        async with stores(request) as store:
            lags = await store.lag(sub_id)
            lag = lags[0] if lags else None
            last = await store.last_attempt(sub_id)
            recent = await store.recent_latency(sub_id)
        return {**_out(row), **_figures(row, lag, last, recent)}


def _figures(row: dict, lag: dict | None, last: dict | None, recent: dict) -> dict:
    pending, dead = (lag["pending"], lag["dead"]) if lag else (0, 0)
    oldest = lag["oldest_pending_at"] if lag else None
    return {"deliveries": {"pending": pending, "dead": dead, "delivered": row["delivered_total"]},
            "figures": {
                "pending": pending,
                "oldest_pending_at": _iso(oldest),
                "lag_seconds": round(max(0.0, lag["now_s"] - oldest.timestamp()), 3) if lag and oldest else 0.0,
                "dead": dead,
                "delivered_total": row["delivered_total"],
                "attempts_total": row["attempts_total"],
                "failed_attempts_total": row["failed_attempts_total"],
                "consecutive_failures": row["consecutive_failures"],
                "next_attempt_at": _iso(row["next_attempt_at"]) if pending else None,
                "last_attempt": {**last, "at": last["at"].isoformat()} if last else None,
                "latency_ms_last_100": {"attempts": recent["n"], "p50": recent["p50"], "p95": recent["p95"]},
            }}


def _status_routes(router: APIRouter, programme, stores: Stores) -> None:
    @router.post("/{sub_id}/pause", summary="Stop deliveries; events keep queueing")
    async def pause(request: Request, sub_id: UUID, principal: Principal = programme):
        return await _set_status(stores, request, sub_id, principal, "paused")

    @router.post("/{sub_id}/resume", summary="Resume a paused or suspended subscription; its queue is delivered in order")
    async def resume(request: Request, sub_id: UUID, principal: Principal = programme):
        return await _set_status(stores, request, sub_id, principal, "active")

    @router.delete("/{sub_id}", summary="Unsubscribe")
    async def unsubscribe(request: Request, sub_id: UUID, principal: Principal = programme):
        return await _set_status(stores, request, sub_id, principal, "deleted")


def _delivery_routes(router: APIRouter, programme, stores: Stores) -> None:
    @router.get("/{sub_id}/deliveries", summary="Deliveries by status (dead = dead letters)")
    async def deliveries(request: Request, sub_id: UUID, status: Literal["pending", "delivered", "dead"] = "dead",
                         limit: Annotated[int, Field(ge=1, le=1000)] = 100, principal: Principal = programme):
        await _owned(stores, request, sub_id, principal)
        async with stores(request) as store:
            rows = await store.deliveries_of(sub_id, status, limit)
            # which families a programme was told about: a read of personal data, audited
            await store.record_audit(audit.of_request(request, principal, "deliveries.read", "subscription", sub_id,
                                                      detail={"status": status, "rows": len(rows)}))
        return {"deliveries": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
                               for r in rows]}

    @router.post("/{sub_id}/redeliver", summary="Re-send dead letters, or replay from a point in time")
    async def redeliver(request: Request, sub_id: UUID, body: RedeliverIn, principal: Principal = programme):
        await _owned(stores, request, sub_id, principal)
        if not body.dead_letters and body.since is None:
            raise HTTPException(422, {"errors": [{"path": "/", "reason": "set dead_letters or since"}]})
        async with stores(request, True) as store:
            n = await store.requeue(sub_id, dead_letters=body.dead_letters, since=body.since)
            await store.record_audit(audit.of_request(request, principal, "subscription.redeliver", "subscription",
                                                      sub_id, detail={"requeued": n, "dead_letters": body.dead_letters}))
        status = (await _owned(stores, request, sub_id, principal))["status"]
        return {"requeued": n, "status": status,
                **({"note": f"the subscription is {status}: resume it to deliver"} if status != "active" else {})}

    @router.get("/{sub_id}/log", summary="Delivery attempts: status codes, latency, errors")
    async def delivery_log(request: Request, sub_id: UUID, limit: Annotated[int, Field(ge=1, le=1000)] = 100,
                           principal: Principal = programme):
        await _owned(stores, request, sub_id, principal)
        async with stores(request) as store:
            rows = await store.attempts_of(sub_id, limit)
            pending = await store.pending_count(sub_id)
        return {"pending": pending, "attempts": [{**r, "at": r["at"].isoformat()} for r in rows]}


def _test_event_route(router: APIRouter, programme, stores: Stores) -> None:
    @router.post("/{sub_id}/test-event", status_code=202,
                 summary="Queue a test delivery (type regsosek.test, no personal data) through the normal delivery path")
    async def send_test_event(request: Request, sub_id: UUID, principal: Principal = programme):
        await _owned(stores, request, sub_id, principal)
        event_id = f"test-{uuid4()}"
        payload = test_event(event_id, sub_id, principal.subject, datetime.now(UTC))
        async with stores(request, True) as store:
            if not await store.queue_test_event(sub_id, event_id, TEST_EVENT_TYPE, payload):
                raise HTTPException(409, {"errors": [{"path": "/format",
                                                      "reason": "test events are for webhook subscriptions"}]})
            await store.record_audit(audit.of_request(request, principal, "subscription.test_event", "subscription",
                                                      sub_id, detail={"event_id": event_id}))
        status = (await _owned(stores, request, sub_id, principal))["status"]
        return {"event_id": event_id, "event_type": TEST_EVENT_TYPE, "status": status,
                **({"note": f"the subscription is {status}: resume it to deliver"} if status != "active" else {})}
