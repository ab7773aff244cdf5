"""Subscription API for programme systems: subscribe, list, pause, resume,
unsubscribe, dead letters, re-send and replay, delivery log."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID, uuid4

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, StringConstraints

from notify import store
from notify.delivery import callback_problem_now
from notify.domain import Filters, Refusal, narrow, subscription_limit_problem
from regsosek import audit
from regsosek.auth import Principal, Role, bearer
from regsosek.contracts.identifiers import AreaPrefix
from regsosek.service import runtime_of
from regsosek.standard_webhooks import whsec_form
from regsosek.topics import Topic

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
PROGRAMME = bearer(lambda r: runtime_of(r).settings.token_verifier(), Role.PROGRAMME)


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


async def _owned(request: Request, sub_id: UUID, p: Principal):
    async with runtime_of(request).pool.acquire() as conn:
        row = await store.get(conn, sub_id)
    if row is None or (row["owner"] != p.subject and p.role is not Role.ADMIN):
        raise HTTPException(404, {"reason": "no such subscription"})
    if p.role is not Role.ADMIN and not set(row["scope_programmes"]) <= set(p.programmes):
        # the owner's token no longer names every programme of the subscription
        raise HTTPException(403, {"reason": "the token does not name every programme of this subscription"})
    return row


@router.post("", status_code=201, summary="Subscribe a callback to eligibility events")
async def subscribe(request: Request, body: SubscriptionIn, principal: Principal = PROGRAMME):
    rt = runtime_of(request)
    # In production the name must resolve, to public addresses only; checked again at every delivery.
    problem = await callback_problem_now(body.callback_url, rt.settings.env == "production", rt.settings.resolve_timeout_s)
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
    limit = rt.settings.max_subscriptions_per_programme
    async with rt.pool.acquire() as conn, conn.transaction():
        row, refused = await store.create_subscription(
            conn, sub_id=uuid4(), owner=principal.subject, callback_url=body.callback_url, secret=secret,
            signature=scheme, scope=scoped.programmes, filters=scoped.filters,
            limit_problem=lambda counts: subscription_limit_problem(counts, scoped.programmes, limit))
        if row is not None:
            await audit.record(conn, audit.of_request(request, principal, "subscription.create", "subscription", row["id"]))
    if refused:
        raise HTTPException(409, {"errors": [{"path": "/filters/programmes", "reason": refused}]})
    return _out(row, with_secret=True)


@router.get("", summary="List your subscriptions")
async def list_subscriptions(request: Request, principal: Principal = PROGRAMME):
    async with runtime_of(request).pool.acquire() as conn:
        rows = await conn.fetch(f"select {store.SUB_COLUMNS} from subscriptions where status <> 'deleted' "
                                "and (owner = $1 or $2) order by created_at", principal.subject,
                                principal.role is Role.ADMIN)
    return {"subscriptions": [_out(r) for r in rows]}


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


@router.get("/{sub_id}", summary="One subscription with its queue and delivery figures")
async def get_subscription(request: Request, sub_id: UUID, principal: Principal = PROGRAMME):
    row = await _owned(request, sub_id, principal)
    async with runtime_of(request).pool.acquire() as conn:
        (lag,) = await store.lag(conn, sub_id) or [None]
        last = await conn.fetchrow("select status_code, latency_ms, error, outcome, at from delivery_attempts "
                                   "where subscription_id = $1 order by id desc limit 1", sub_id)
        recent = await conn.fetchrow(
            "select count(*) n, percentile_cont(0.5) within group (order by latency_ms) p50, "
            "percentile_cont(0.95) within group (order by latency_ms) p95 from (select latency_ms "
            "from delivery_attempts where subscription_id = $1 order by id desc limit 100) a", sub_id)
    pending, dead = (lag["pending"], lag["dead"]) if lag else (0, 0)
    oldest = lag["oldest_pending_at"] if lag else None
    return {**_out(row), "deliveries": {"pending": pending, "dead": dead, "delivered": row["delivered_total"]},
            "figures": {
                "pending": pending,
                "oldest_pending_at": _iso(oldest),
                "lag_seconds": round(max(0.0, lag["now_s"] - oldest.timestamp()), 3) if oldest else 0.0,
                "dead": dead,
                "delivered_total": row["delivered_total"],
                "attempts_total": row["attempts_total"],
                "failed_attempts_total": row["failed_attempts_total"],
                "consecutive_failures": row["consecutive_failures"],
                "next_attempt_at": _iso(row["next_attempt_at"]) if pending else None,
                "last_attempt": {**dict(last), "at": last["at"].isoformat()} if last else None,
                "latency_ms_last_100": {"attempts": recent["n"], "p50": recent["p50"], "p95": recent["p95"]},
            }}


_ACTIONS = {"paused": "pause", "active": "resume", "deleted": "delete"}


async def _set_status(request: Request, sub_id: UUID, principal: Principal, status: str):
    await _owned(request, sub_id, principal)
    async with runtime_of(request).pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"update subscriptions set status = $2, consecutive_failures = 0, updated_at = now(), "
            f"next_attempt_at = case when $2 = 'active' then now() else next_attempt_at end where id = $1 "
            f"returning {store.SUB_COLUMNS}", sub_id, status)
        await audit.record(conn, audit.of_request(request, principal, f"subscription.{_ACTIONS[status]}", "subscription", sub_id))
    return _out(row)


@router.post("/{sub_id}/pause", summary="Stop deliveries; events keep queueing")
async def pause(request: Request, sub_id: UUID, principal: Principal = PROGRAMME):
    return await _set_status(request, sub_id, principal, "paused")


@router.post("/{sub_id}/resume", summary="Resume a paused or suspended subscription; its queue is delivered in order")
async def resume(request: Request, sub_id: UUID, principal: Principal = PROGRAMME):
    return await _set_status(request, sub_id, principal, "active")


@router.delete("/{sub_id}", summary="Unsubscribe")
async def unsubscribe(request: Request, sub_id: UUID, principal: Principal = PROGRAMME):
    return await _set_status(request, sub_id, principal, "deleted")


@router.get("/{sub_id}/deliveries", summary="Deliveries by status (dead = dead letters)")
async def deliveries(request: Request, sub_id: UUID, status: Literal["pending", "delivered", "dead"] = "dead",
                     limit: Annotated[int, Field(ge=1, le=1000)] = 100, principal: Principal = PROGRAMME):
    await _owned(request, sub_id, principal)
    async with runtime_of(request).pool.acquire() as conn:
        rows = await conn.fetch(
            "select event_id, family_id, status, attempts, last_status, last_error, created_at, delivered_at "
            "from deliveries where subscription_id = $1 and status = $2 order by id limit $3", sub_id, status, limit)
    # which families a programme was told about: a read of personal data, audited
    await audit.record_read(request, principal, "deliveries.read", "subscription", sub_id,
                            detail={"status": status, "rows": len(rows)})
    return {"deliveries": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows]}


class RedeliverIn(BaseModel):
    model_config = {"extra": "forbid"}
    dead_letters: bool = Field(False, description="Re-send every dead delivery")
    since: datetime | None = Field(None, description="Replay: re-send every event created at or after this time")


@router.post("/{sub_id}/redeliver", summary="Re-send dead letters, or replay from a point in time")
async def redeliver(request: Request, sub_id: UUID, body: RedeliverIn, principal: Principal = PROGRAMME):
    await _owned(request, sub_id, principal)
    if not body.dead_letters and body.since is None:
        raise HTTPException(422, {"errors": [{"path": "/", "reason": "set dead_letters or since"}]})
    async with runtime_of(request).pool.acquire() as conn, conn.transaction():
        # Replay covers what arrived, or was delivered, at or after `since`: all a subscriber
        # may have lost from that moment on. Re-sent rows keep their place (id order), so
        # each family's events go out again in their original order.
        n = await conn.fetchval(
            "with u as (update deliveries set status = 'pending', attempts = 0 "
            "where subscription_id = $1 and ((status = 'dead' and $2) or ($3::timestamptz is not null and "
            "status <> 'pending' and (created_at >= $3 or delivered_at >= $3))) and payload is not null "
            "returning 1) select count(*) from u",
            sub_id, body.dead_letters, body.since)
        # a delivery whose payload retention emptied (docs/RETENTION.md) has nothing left to re-send
        await audit.record(conn, audit.of_request(request, principal, "subscription.redeliver", "subscription", sub_id,
                                                  detail={"requeued": n, "dead_letters": body.dead_letters}))
        if n:
            await conn.execute("update subscriptions set next_attempt_at = now() where id = $1", sub_id)
    status = (await _owned(request, sub_id, principal))["status"]
    return {"requeued": n, "status": status,
            **({"note": f"the subscription is {status}: resume it to deliver"} if status != "active" else {})}


@router.get("/{sub_id}/log", summary="Delivery attempts: status codes, latency, errors")
async def delivery_log(request: Request, sub_id: UUID, limit: Annotated[int, Field(ge=1, le=1000)] = 100,
                       principal: Principal = PROGRAMME):
    await _owned(request, sub_id, principal)
    async with runtime_of(request).pool.acquire() as conn:
        rows = await conn.fetch("select message_id, events, status_code, latency_ms, error, outcome, at "
                                "from delivery_attempts where subscription_id = $1 order by id desc limit $2",
                                sub_id, limit)
        pending = await conn.fetchval("select count(*) from deliveries where subscription_id = $1 and "
                                      "status = 'pending'", sub_id)
    return {"pending": pending, "attempts": [{**dict(r), "at": r["at"].isoformat()} for r in rows]}
