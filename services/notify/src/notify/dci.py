"""The DCI Social Registry API on notify's port, under /dci (vendor/dci/social_api_v1.0.0.yaml):
sync and async search, transaction status, subscribe and unsubscribe. README "DCI Social Registry API".

Every request: a programme bearer token (its areas and programmes bound what it sees), a DCI envelope
whose header.sender_id is registered in the requester key registry for the token's subject, and a
`signature` over header and message made with that sender's Ed25519 key. Answers and callbacks are
signed with notify's webhook key (GET /v1/webhook-keys). Callbacks go to header.sender_uri followed by
the specification's path (/registry/on-search, /registry/on-subscribe, /registry/on-unsubscribe,
/registry/txn/on-status); notify events of a DCI subscription to {sender_uri}/registry/notify, through
the delivery queue (notify.delivery). No 5xx for a bad request: the spec's ERR answer or item status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import jwt
import orjson
import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from notify import dci_domain as dd
from notify import handlers, store
from notify.delivery import _acked, callback_problem_now, make_client
from notify.domain import Refusal, narrow, subscription_limit_problem
from regsosek import audit
from regsosek.auth import KeysUnavailable, Principal, Role, refusal_reason
from regsosek.service import Runtime, runtime_of

log = logging.getLogger("notify.dci")
router = APIRouter(prefix="/dci", tags=["DCI Social Registry"])
_background: set[asyncio.Task] = set()  # callbacks in flight (kept referenced until done)


class _Answer(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


@functools.cache
def requesters(path: str) -> dict[str, dd.Requester]:
    return dd.parse_requesters(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})


def _now() -> datetime:
    return datetime.now(UTC)


def _json(status: int, body: dict) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _refusal(e: dd.DciError, sync_action: str | None, rt: Runtime) -> JSONResponse:
    """An envelope the registry will not take: the ack Response with ERR (async endpoints), or a
    signed callback envelope whose header status is rjct (sync endpoints, whose answer is that)."""
    if e.status in (401, 403):
        return _json(e.status, dd.http_error(e.code, e.message))
    if sync_action is None:
        return _json(e.status, dd.err_ack(e, str(uuid4()), _now()))
    reason_code = {"err.version.not_supported": "rjct.version.invalid"}.get(e.code)
    if e.message.startswith("header.action"):
        reason_code = "rjct.action.invalid"
    header = dd.callback_header(sync_action, message_id=str(uuid4()), now=_now(), sender_id=rt.settings.dci_sender_id,
                                receiver_id="", total_count=0, completed_count=0, status="rjct",
                                reason_code=reason_code, reason=f"{e.code}: {e.message}")
    return _json(e.status, _signed(rt, header, None))


def _signed(rt: Runtime, header: dict, message: dict | None) -> dict:
    key = rt.settings.webhook_signing_keys()[0]
    out: dict[str, Any] = {"signature": dd.sign_envelope(key.key, key.kid, header, message or {}), "header": header}
    if message is not None:
        out["message"] = message
    return out


async def _accept(request: Request, action: str, sync_action: str | None = None) -> tuple[Principal, dict, dict]:
    """(principal, header, message) of a request to take; _Answer with the refusal otherwise."""
    rt = runtime_of(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Answer(_json(401, dd.http_error("err.request.unauthorized", "missing bearer token")))
    try:
        principal = await rt.settings.token_verifier().verify(token.strip())
    except (jwt.InvalidTokenError, KeysUnavailable, ValueError) as e:
        raise _Answer(_json(401, dd.http_error("err.request.unauthorized", refusal_reason(e)))) from None
    if principal.role is not Role.PROGRAMME:
        raise _Answer(_json(403, dd.http_error("err.request.forbidden", "a programme token is needed")))
    try:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise dd.DciError("err.request.bad", "the body is not JSON") from None
        header, message, signature = dd.check_envelope(body, action)
        requester = requesters(rt.settings.dci_requesters_file).get(header["sender_id"])
        if requester is None or requester.subject != principal.subject:
            raise dd.DciError("err.sender_id.invalid", "header.sender_id: not registered for this token's subject", 403)
        if signature is None:
            raise dd.DciError("err.signature.missing", "signature: required (Ed25519 over header and message)", 401)
        if not dd.verify_envelope(requester.public_key, signature, header, message):
            raise dd.DciError("err.signature.invalid", "signature: does not verify with the sender's key", 401)
        if header.get("receiver_id") not in (None, rt.settings.dci_sender_id):
            raise dd.DciError("err.receiver_id.invalid", f"header.receiver_id: this registry is {rt.settings.dci_sender_id}")
    except dd.DciError as e:
        raise _Answer(_refusal(e, sync_action, rt)) from None
    return principal, header, message


async def _callback_url(rt: Runtime, header: dict, path: str) -> str:
    base = header.get("sender_uri")
    if not isinstance(base, str) or not base:
        raise dd.DciError("err.sender_uri.invalid", "header.sender_uri: required for asynchronous calls (callbacks)")
    url = base.rstrip("/") + path
    problem = await callback_problem_now(url, rt.settings.env == "production", rt.settings.resolve_timeout_s)
    if problem:
        raise dd.DciError("err.sender_uri.invalid", f"header.sender_uri: {problem}")
    return url


def _spawn(coro) -> None:
    task = asyncio.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _post_callback(rt: Runtime, url: str, action: str, receiver_id: str, message: dict, total: int) -> str | None:
    """POSTs a signed callback envelope, retrying network failures and 5xx; None when acknowledged,
    else why not (an ERR answer is not retried)."""
    s = rt.settings
    header = dd.callback_header(action, message_id=str(uuid4()), now=_now(), sender_id=s.dci_sender_id,
                                receiver_id=receiver_id, total_count=total, completed_count=total)
    body = orjson.dumps(_signed(rt, header, message))
    error = None
    async with make_client(s) as client:
        for attempt in range(s.dci_callback_attempts):
            if attempt:
                await asyncio.sleep(min(s.retry_cap_s, s.retry_base_s * 2 ** attempt))
            try:
                r = await client.post(url, content=body, headers={"content-type": "application/json"})
            except httpx.HTTPError as e:
                error = type(e).__name__
                continue
            if _acked(r.status_code, r.content):
                return None
            error = f"HTTP {r.status_code} without ACK"
            if 400 <= r.status_code < 500 and r.status_code not in (408, 429) or _err_status(r.content):
                return error
    return error


def _err_status(reply: bytes) -> bool:
    try:
        return orjson.loads(reply).get("message", {}).get("ack_status") == "ERR"
    except (ValueError, AttributeError):
        return False


# ---------------------------------------------------------------- search


async def _run_search(rt: Runtime, principal: Principal, message: dict) -> tuple[list[dict], dict]:
    """The search_response items of a search message, and per reference id what txn status tells."""
    items = dd.items_of(message, "search_request")
    out, detail = [], {}
    for it in items:
        now = _now()
        ref = it["reference_id"]
        try:
            criteria = dd.parse_criteria(it.get("search_criteria"), token_programmes=principal.programmes,
                                         token_areas=principal.areas, locale=it.get("locale"))
        except dd.Rejected as r:
            out.append(dd.rejected_item(ref, now, r))
            detail[ref] = {"status": "rjct", "code": r.code}
            continue
        if not principal.areas or not principal.programmes:
            decisions, total = [], 0  # a token without areas or programmes sees nothing
        else:
            async with rt.pool.acquire() as conn:
                decisions, total = await store.search_registry(conn, criteria.conditions, principal.areas, criteria.sort,
                                                               criteria.page_size, criteria.offset)
        records = [dd.record_of(d, principal.programmes, handlers.access) for d in decisions]
        out.append(dd.search_item(ref, now, criteria, records, total))
        detail[ref] = {"status": "succ", "total_count": total, "returned": len(records)}
    return out, detail


@router.post("/registry/sync/search", summary="DCI synchronous search (answers with the on-search envelope)")
async def sync_search(request: Request):
    rt = runtime_of(request)
    try:
        principal, header, message = await _accept(request, "search", "on-search")
        try:
            items, detail = await _run_search(rt, principal, message)
        except dd.DciError as e:
            return _refusal(e, "on-search", rt)
    except _Answer as a:
        return a.response
    correlation_id = str(uuid4())
    async with rt.pool.acquire() as conn:
        await store.save_dci_transaction(conn, correlation_id=correlation_id, requester=principal.subject, kind="search",
                                         transaction_id=message["transaction_id"], reference_ids=list(detail),
                                         status="succ", detail=detail)
    await audit.record_read(request, principal, "dci.search", "dci_transaction", correlation_id,
                            detail={"rows": sum(d.get("returned", 0) for d in detail.values())})
    out = {"transaction_id": message["transaction_id"], "correlation_id": correlation_id, "search_response": items}
    hdr = dd.callback_header("on-search", message_id=str(uuid4()), now=_now(), sender_id=rt.settings.dci_sender_id,
                             receiver_id=header["sender_id"], total_count=len(items),
                             completed_count=len(items))
    return _json(200, _signed(rt, hdr, out))


@router.post("/registry/search", summary="DCI asynchronous search (ACK; results to {sender_uri}/registry/on-search)")
async def search(request: Request):
    rt = runtime_of(request)
    try:
        principal, header, message = await _accept(request, "search")
        try:
            items = dd.items_of(message, "search_request")
            url = await _callback_url(rt, header, "/registry/on-search")
        except dd.DciError as e:
            return _refusal(e, None, rt)
    except _Answer as a:
        return a.response
    correlation_id = str(uuid4())
    refs = [it["reference_id"] for it in items]
    async with rt.pool.acquire() as conn:
        await store.save_dci_transaction(conn, correlation_id=correlation_id, requester=principal.subject, kind="search",
                                         transaction_id=message["transaction_id"], reference_ids=refs, status="pdng",
                                         detail={r: {"status": "pdng"} for r in refs})
    entry = audit.of_request(request, principal, "dci.search", "dci_transaction", correlation_id)
    _spawn(_search_then_callback(rt, principal, header, message, correlation_id, url, entry))
    return _json(200, dd.ack(correlation_id, _now()))


async def _search_then_callback(rt: Runtime, principal: Principal, header: dict, message: dict, correlation_id: str,
                                url: str, entry) -> None:
    try:
        items, detail = await _run_search(rt, principal, message)
        out = {"transaction_id": message["transaction_id"], "correlation_id": correlation_id, "search_response": items}
        error = await _post_callback(rt, url, "on-search", header["sender_id"], out, len(items))
        async with rt.pool.acquire() as conn:
            await store.save_dci_transaction(
                conn, correlation_id=correlation_id, requester=principal.subject, kind="search",
                transaction_id=message["transaction_id"], reference_ids=list(detail),
                status="succ" if error is None else "rjct",
                detail={**detail, **({"callback_error": error} if error else {})})
            await audit.record(conn, dataclasses.replace(entry, detail={
                "rows": sum(d.get("returned", 0) for d in detail.values()), "callback": error or "acknowledged"}))
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - logged without personal data; txn status stays pdng
        log.exception("DCI search callback failed", extra={"fields": {"correlation_id": correlation_id}})


# ---------------------------------------------------------------- transaction status


def _txn_status(message: dict) -> tuple[str, str, Any, str]:
    tid = dd.id_field(message, "transaction_id", "message")
    q = message.get("txnstatus_request")
    if not isinstance(q, dict):
        raise dd.DciError("err.request.bad", "message.txnstatus_request: required, an object")
    dd.id_field(q, "reference_id", "message.txnstatus_request")
    if q.get("txn_type") not in ("search", "subscribe"):
        raise dd.DciError("err.request.bad", "message.txnstatus_request.txn_type: search or subscribe "
                                             "(receipt is not kept by this registry)")
    attr, value = q.get("attribute_type"), q.get("attribute_value")
    if attr in ("transaction_id", "correlation_id"):
        if not isinstance(value, str) or not value or len(value) > dd.ID_MAX:
            raise dd.DciError("err.request.bad", f"message.txnstatus_request.attribute_value: a {attr}")
    elif attr == "reference_id_list":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise dd.DciError("err.request.bad", "message.txnstatus_request.attribute_value: a list of reference ids")
    else:
        raise dd.DciError("err.request.bad", "message.txnstatus_request.attribute_type: transaction_id, "
                                             "reference_id_list or correlation_id")
    return tid, q["txn_type"], value, attr


async def _status_message(rt: Runtime, principal: Principal, message: dict, correlation_id: str) -> dict:
    tid, txn_type, value, attr = _txn_status(message)
    kinds = ("search",) if txn_type == "search" else ("subscribe", "unsubscribe")
    async with rt.pool.acquire() as conn:
        rows = [r for k in kinds for r in await store.find_dci_transactions(conn, principal.subject, k, attr, value)]
    items = []
    for r in rows:
        for ref in r["reference_ids"]:
            d = r["detail"].get(ref, {})
            item = {"reference_id": ref, "timestamp": r["updated_at"].isoformat(), "status": d.get("status", r["status"])}
            if d.get("code"):
                item["status_reason_code"] = d["code"]
            note = {k: v for k, v in d.items() if k not in ("status", "code")}
            note_text = f"{r['kind']} {r['transaction_id']} (correlation_id {r['correlation_id']})" + (
                "".join(f", {k} {v}" for k, v in note.items()))
            item["status_reason_message"] = note_text[:999]
            items.append(item)
    latest = rows[0] if rows else None
    return {"transaction_id": tid, "correlation_id": correlation_id,
            "txnstatus_response": {"txn_type": txn_type, "txn_status": {
                "transaction_id": latest["transaction_id"] if latest else (value if attr == "transaction_id" else tid),
                "correlation_id": latest["correlation_id"] if latest else correlation_id,
                "search_response": items}}}


@router.post("/registry/sync/txn/status", summary="DCI transaction status, answered at once")
async def sync_txn_status(request: Request):
    rt = runtime_of(request)
    try:
        principal, header, message = await _accept(request, "txn-status", "txn-on-status")
        try:
            out = await _status_message(rt, principal, message, str(uuid4()))
        except dd.DciError as e:
            return _refusal(e, "txn-on-status", rt)
    except _Answer as a:
        return a.response
    n = len(out["txnstatus_response"]["txn_status"]["search_response"])
    hdr = dd.callback_header("txn-on-status", message_id=str(uuid4()), now=_now(), sender_id=rt.settings.dci_sender_id,
                             receiver_id=header["sender_id"], total_count=n, completed_count=n)
    return _json(200, _signed(rt, hdr, out))


@router.post("/registry/txn/status", summary="DCI transaction status (ACK; answer to {sender_uri}/registry/txn/on-status)")
async def txn_status(request: Request):
    rt = runtime_of(request)
    correlation_id = str(uuid4())
    try:
        principal, header, message = await _accept(request, "txn-status")
        try:
            out = await _status_message(rt, principal, message, correlation_id)
            url = await _callback_url(rt, header, "/registry/txn/on-status")
        except dd.DciError as e:
            return _refusal(e, None, rt)
    except _Answer as a:
        return a.response
    n = len(out["txnstatus_response"]["txn_status"]["search_response"])
    _spawn(_post_callback(rt, url, "txn-on-status", header["sender_id"], out, n))
    return _json(200, dd.ack(correlation_id, _now()))


# ---------------------------------------------------------------- subscribe, unsubscribe


@router.post("/registry/subscribe", summary="DCI subscribe (ACK; on-subscribe callback; events to /registry/notify)")
async def subscribe(request: Request):
    rt = runtime_of(request)
    try:
        principal, header, message = await _accept(request, "subscribe")
        try:
            items = dd.items_of(message, "subscribe_request")
            notify_url = await _callback_url(rt, header, "/registry/notify")
            url = await _callback_url(rt, header, "/registry/on-subscribe")
        except dd.DciError as e:
            return _refusal(e, None, rt)
    except _Answer as a:
        return a.response
    correlation_id = str(uuid4())
    out_items, detail = [], {}
    for it in items:
        ref, now = it["reference_id"], _now()
        try:
            requested = dd.subscription_filters(it.get("subscribe_criteria"))
            try:
                scoped = narrow(requested, token_programmes=principal.programmes, token_areas=principal.areas)
            except Refusal as e:
                raise dd.Rejected("rjct.notify_details.invalid", e.reason) from None
            limit = rt.settings.max_subscriptions_per_programme
            async with rt.pool.acquire() as conn, conn.transaction():
                row, refused = await store.create_subscription(
                    conn, sub_id=uuid4(), owner=principal.subject, callback_url=notify_url, secret=None,
                    signature="ed25519", scope=scoped.programmes, filters=scoped.filters,
                    limit_problem=lambda counts: subscription_limit_problem(counts, scoped.programmes, limit))
                if row is None:
                    raise dd.Rejected("rjct.notify_details.invalid", refused or "refused")
                await store.set_subscription_format(conn, row["id"], "dci", header["sender_id"])
                await audit.record(conn, audit.of_request(request, principal, "subscription.create", "subscription",
                                                          row["id"], detail={"format": "dci"}))
        except dd.Rejected as r:
            out_items.append(dd.rejected_item(ref, now, r))
            detail[ref] = {"status": "rjct", "code": r.code}
            continue
        code = str(row["id"])
        out_items.append({"reference_id": ref, "timestamp": now.isoformat(), "status": "succ", "subscriptions": [
            {"version": dd.VERSION, "code": code, "status": "subscribe", "timestamp": now.isoformat(),
             "reg_type": dd.REG_TYPE, "reg_event_type": "REGISTER", "notify_record_type": dd.RECORD_TYPE}]})
        detail[ref] = {"status": "succ", "subscription": code}
    async with rt.pool.acquire() as conn:
        await store.save_dci_transaction(conn, correlation_id=correlation_id, requester=principal.subject,
                                         kind="subscribe", transaction_id=message["transaction_id"],
                                         reference_ids=list(detail), status="succ", detail=detail)
    out = {"transaction_id": message["transaction_id"], "correlation_id": correlation_id, "subscribe_response": out_items}
    _spawn(_post_callback(rt, url, "on-subscribe", header["sender_id"], out, len(out_items)))
    return _json(200, dd.ack(correlation_id, _now()))


@router.post("/registry/unsubscribe", summary="DCI unsubscribe (ACK; on-unsubscribe callback)")
async def unsubscribe(request: Request):
    rt = runtime_of(request)
    try:
        principal, header, message = await _accept(request, "unsubscribe")
        try:
            tid = dd.id_field(message, "transaction_id", "message")
            codes = message.get("subscription_codes")
            if not isinstance(codes, list) or not 1 <= len(codes) <= 100 or not all(
                    isinstance(c, str) and 0 < len(c) <= dd.ID_MAX for c in codes):
                raise dd.DciError("err.request.bad", "message.subscription_codes: a list of 1 to 100 subscription codes")
            url = await _callback_url(rt, header, "/registry/on-unsubscribe")
        except dd.DciError as e:
            return _refusal(e, None, rt)
    except _Answer as a:
        return a.response
    correlation_id = str(uuid4())
    async with rt.pool.acquire() as conn, conn.transaction():
        result = await store.delete_dci_subscriptions(conn, principal.subject, list(dict.fromkeys(codes)))
        for code, what in result.items():
            if what == "unsubscribe":
                await audit.record(conn, audit.of_request(request, principal, "subscription.delete", "subscription",
                                                          code, detail={"format": "dci"}))
        unknown = [c for c, w in result.items() if w == "unknown"]
        already = [c for c, w in result.items() if w == "already"]
        out: dict[str, Any] = {"transaction_id": tid, "correlation_id": correlation_id, "timestamp": _now().isoformat(),
                               "status": "rjct" if unknown or already else "succ",
                               "subscription_status": [{"code": c, "status": "unsubscribe"}
                                                       for c, w in result.items() if w != "unknown"]}
        if unknown:
            out["status_reason_code"] = "rjct.subscription_code.invalid"
            out["status_reason_message"] = f"not your DCI subscriptions: {', '.join(unknown)}"[:999]
        elif already:
            out["status_reason_code"] = "rjct.event.already_unsubscribed"
            out["status_reason_message"] = f"already unsubscribed: {', '.join(already)}"[:999]
        await store.save_dci_transaction(conn, correlation_id=correlation_id, requester=principal.subject,
                                         kind="unsubscribe", transaction_id=tid, reference_ids=[tid],
                                         status=out["status"], detail={tid: {"status": out["status"],
                                                                             **({"code": out["status_reason_code"]}
                                                                                if "status_reason_code" in out else {})}})
    _spawn(_post_callback(rt, url, "on-unsubscribe", header["sender_id"], out, 1))
    return _json(200, dd.ack(correlation_id, _now()))
