"""The DCI Social Registry API on notify's port, under /dci (vendor/dci/social_api_v1.0.0.yaml):
sync and async search, transaction status, subscribe and unsubscribe. README "DCI Social Registry API".

Every request: a programme bearer token (its areas and programmes bound what it sees), a DCI envelope
whose header.sender_id is registered in the requester key registry for the token's subject, and a
`signature` over header and message made with that sender's Ed25519 key. Answers and callbacks are
signed with notify's webhook key (GET /v1/webhook-keys). A header.message_ts further than
dci_message_window_s from now, or a message_id the sender used before, is refused (replay protection).
Callbacks go to header.sender_uri followed by the specification's path (/registry/on-search,
/registry/on-subscribe, /registry/on-unsubscribe, /registry/txn/on-status): queued in the request's
transaction and sent by `DciCallbackWorker` (retried with backoff, kept across restarts); notify events
of a DCI subscription go to {sender_uri}/registry/notify through the delivery queue (notify.delivery).
No 5xx for a bad request: the spec's ERR answer or item status. docs/DCI.md.

Every endpoint is one `DciApi` method taking the accepted request (`DciCall`); what they share (token,
envelope, sender and signature checks; the refusal of a message; signed answers; callbacks) is written
once in `DciApi`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import jwt
import orjson
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from notify import dci_domain as dd
from notify.callbacks import acked, callback_problem_now, err_answer, make_client, post_capped
from notify.delivery import lease_for
from notify.domain import (
    AccessRules,
    Outcome,
    Refusal,
    identity_key,
    narrow,
    open_lists,
    outcome_of,
    payload_for,
    retry_delay,
    subscription_limit_problem,
    with_niks,
)
from notify.settings import NotifySettings
from notify.store import NotifyStore, Stores, open_store, pool_stores
from regsosek import audit
from regsosek.auth import KeysUnavailable, Principal, Role, refusal_reason
from regsosek.background import IdlePoll, run_forever, wait_woken
from regsosek.db import Backoff, is_transient
from regsosek.pseudonyms import nik_hash
from regsosek.service import Runtime

log = logging.getLogger("notify.dci")


def load_requesters(path: str) -> dict[str, dd.Requester]:
    """The DCI requester key registry; refuses (ValueError) a bad one."""
    return dd.parse_requesters(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})


def load_encryption_key(path: str) -> RSAPrivateKey | None:
    """The registry's DCI decryption key (PEM, RSA of 2048 bits or more), None when not configured;
    refuses (ValueError) a bad one, naming no key material."""
    if not path:
        return None
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"REGSOSEK_DCI_ENCRYPTION_KEY_FILE cannot be loaded ({type(e).__name__})") from None
    if not isinstance(key, RSAPrivateKey) or key.key_size < 2048:
        raise ValueError("REGSOSEK_DCI_ENCRYPTION_KEY_FILE must hold an RSA private key of 2048 bits or more")
    return key


def _now() -> datetime:
    return datetime.now(UTC)


def _json(status: int, body: dict) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def signed_envelope(settings: NotifySettings, header: dict, message: dict | None,
                    encrypt_to: RSAPublicKey | None = None) -> dict:
    """A DCI envelope signed with notify's current webhook key (GET /v1/webhook-keys), its message
    encrypted to `encrypt_to` first when given (the signature covers the encrypted message)."""
    if encrypt_to is not None and message is not None:
        message = dd.encrypt_message(encrypt_to, message)
    key = settings.webhook_signing_keys()[0]
    out: dict[str, Any] = {"signature": dd.sign_envelope(key.key, key.kid, header, message or {}), "header": header}
    if message is not None:
        out["message"] = message
    return out


class _Answer(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


@dataclasses.dataclass(frozen=True)
class DciCall:
    """An accepted DCI request: who sent it and its envelope."""

    request: Request
    principal: Principal
    header: dict
    message: dict  # decrypted, when it came encrypted
    encrypt_to: RSAPublicKey | None = None  # the requester's key, when it wrote encrypted: answers are too

    @property
    def sender(self) -> str:
        return self.header["sender_id"]


Endpoint = Callable[[DciCall], Awaitable[JSONResponse]]


class DciApi:
    def __init__(self, settings: NotifySettings, access: AccessRules, requesters: dict[str, dd.Requester],
                 stores: Stores = pool_stores) -> None:
        self.settings = settings
        self.stores = stores  # stores(request, transaction=False): the store a request reads and writes through
        self.access = access  # what each programme may receive (the Group records are narrowed with it)
        self.requesters = requesters  # sender_id -> token subject, Ed25519 public key, encryption key
        self.encryption_key = load_encryption_key(settings.dci_encryption_key_file)

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/dci", tags=["DCI Social Registry"])
        routes: list[tuple[str, str, str | None, Endpoint, str]] = [
            ("/registry/sync/search", "search", "on-search", self.sync_search,
             "DCI synchronous search (answers with the on-search envelope)"),
            ("/registry/search", "search", None, self.search,
             "DCI asynchronous search (ACK; results to {sender_uri}/registry/on-search)"),
            ("/registry/sync/txn/status", "txn-status", "txn-on-status", self.sync_txn_status,
             "DCI transaction status, answered at once"),
            ("/registry/txn/status", "txn-status", None, self.txn_status,
             "DCI transaction status (ACK; answer to {sender_uri}/registry/txn/on-status)"),
            ("/registry/subscribe", "subscribe", None, self.subscribe,
             "DCI subscribe (ACK; on-subscribe callback; events to /registry/notify)"),
            ("/registry/unsubscribe", "unsubscribe", None, self.unsubscribe,
             "DCI unsubscribe (ACK; on-unsubscribe callback)"),
        ]
        for path, action, sync_action, endpoint, summary in routes:
            router.add_api_route(path, self._endpoint(action, sync_action, endpoint), methods=["POST"],
                                 summary=summary, name=endpoint.__name__)
        router.add_api_route("/registry/encryption-keys", self.encryption_keys, methods=["GET"],
                             summary="The public key encrypted DCI requests are made to (JWKS; empty: none taken)")
        return router

    async def encryption_keys(self) -> dict:
        return {"keys": [dd.rsa_jwk(self.encryption_key.public_key())] if self.encryption_key else []}

    def _endpoint(self, action: str, sync_action: str | None, endpoint: Endpoint):
        """The route of one endpoint: the request accepted (else refused), then the endpoint; a DciError
        it raises (before anything is stored) refuses the message: the ERR ack of an asynchronous endpoint,
        the signed rjct answer (`sync_action`) of a synchronous one."""

        async def route(request: Request) -> JSONResponse:
            try:
                call = await self._accept(request, action, sync_action)
                return await endpoint(call)
            except _Answer as a:
                return a.response
            except dd.DciError as e:
                return self._refusal(e, sync_action)

        return route

    # ---------------------------------------------------------------- what every endpoint shares

    async def _accept(self, request: Request, action: str, sync_action: str | None) -> DciCall:
        """The request, once its token, envelope, sender, signature, encryption, message_ts and message_id
        are checked; _Answer or DciError otherwise."""
        s = self.settings
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Answer(_json(401, dd.http_error("err.request.unauthorized", "missing bearer token")))
        try:
            principal = await s.token_verifier().verify(token.strip())
        except (jwt.InvalidTokenError, KeysUnavailable, ValueError) as e:
            raise _Answer(_json(401, dd.http_error("err.request.unauthorized", refusal_reason(e)))) from None
        if principal.role is not Role.PROGRAMME:
            raise _Answer(_json(403, dd.http_error("err.request.forbidden", "a programme token is needed")))
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise dd.DciError("err.request.bad", "the body is not JSON") from None
        header, message, signature = dd.check_envelope(body, action)
        requester = self.requesters.get(header["sender_id"])
        if requester is None or requester.subject != principal.subject:
            raise dd.DciError("err.sender_id.invalid", "header.sender_id: not registered for this token's subject", 403)
        if signature is None:
            raise dd.DciError("err.signature.missing", "signature: required (Ed25519 over header and message)", 401)
        if not dd.verify_envelope(requester.public_key, signature, header, message):
            raise dd.DciError("err.signature.invalid", "signature: does not verify with the sender's key", 401)
        if header.get("receiver_id") not in (None, s.dci_sender_id):
            raise dd.DciError("err.receiver_id.invalid", f"header.receiver_id: this registry is {s.dci_sender_id}")
        message, encrypt_to = self._opened(header, message, requester)
        window = timedelta(seconds=s.dci_message_window_s)
        dd.check_message_ts(header, _now(), window)
        async with self.stores(request) as store:  # ids kept twice the window: a future-dated replay is caught too
            if not await store.remember_dci_message(header["sender_id"], header["message_id"], 2 * window):
                raise dd.duplicate_message()
        return DciCall(request, principal, header, message, encrypt_to)

    def _opened(self, header: dict, message: dict, requester: dd.Requester) -> tuple[dict, RSAPublicKey | None]:
        """(the message, decrypted when it came encrypted; the key its answers are encrypted to, if so)."""
        if not header.get("is_msg_encrypted"):
            return message, None
        if self.encryption_key is None:
            raise dd.DciError("err.encryption.invalid", "header.is_msg_encrypted: this registry takes no "
                                                        "encrypted messages (no encryption key configured)")
        if requester.encryption_key is None:
            raise dd.DciError("err.encryption.invalid", "header.is_msg_encrypted: register an encryption_key "
                                                        "for this sender_id to receive encrypted answers")
        return dd.decrypt_message(self.encryption_key, message), requester.encryption_key

    def _refusal(self, e: dd.DciError, sync_action: str | None) -> JSONResponse:
        """An envelope the registry will not take: the ack Response with ERR (async endpoints), or a
        signed callback envelope whose header status is rjct (sync endpoints, whose answer is that)."""
        if e.status in (401, 403):
            return _json(e.status, dd.http_error(e.code, e.message))
        if sync_action is None:
            return _json(e.status, dd.err_ack(e, str(uuid4()), _now()))
        reason_code = e.reason_code or {"err.version.not_supported": "rjct.version.invalid"}.get(e.code)
        if e.message.startswith("header.action"):
            reason_code = "rjct.action.invalid"
        header = dd.callback_header(sync_action, message_id=str(uuid4()), now=_now(),
                                    sender_id=self.settings.dci_sender_id, receiver_id="", total_count=0,
                                    completed_count=0, status="rjct", reason_code=reason_code,
                                    reason=f"{e.code}: {e.message}")
        return _json(e.status, self._signed(header, None))

    def _signed(self, header: dict, message: dict | None) -> dict:
        return signed_envelope(self.settings, header, message)

    def _answer(self, call: DciCall, action: str, message: dict, total: int) -> JSONResponse:
        """The signed answer of a synchronous endpoint."""
        header = dd.callback_header(action, message_id=str(uuid4()), now=_now(), sender_id=self.settings.dci_sender_id,
                                    receiver_id=call.sender, total_count=total, completed_count=total,
                                    encrypted=call.encrypt_to is not None)
        return _json(200, signed_envelope(self.settings, header, message, call.encrypt_to))

    async def _callback_url(self, call: DciCall, path: str) -> str:
        base = call.header.get("sender_uri")
        if not isinstance(base, str) or not base:
            raise dd.DciError("err.sender_uri.invalid", "header.sender_uri: required for asynchronous calls (callbacks)")
        url = base.rstrip("/") + path
        problem = await callback_problem_now(url, self.settings.env == "production", self.settings.resolve_timeout_s)
        if problem:
            raise dd.DciError("err.sender_uri.invalid", f"header.sender_uri: {problem}")
        return url

    async def _queue_callback(self, store: NotifyStore, call: DciCall, url: str, action: str, message: dict,
                              total: int, correlation_id: str) -> None:
        """Queues the signed callback `message` for the requester (DciCallbackWorker sends it), in the
        caller's transaction: it survives a restart and is retried until acknowledged or given up."""
        header = dd.callback_header(action, message_id=str(uuid4()), now=_now(), sender_id=self.settings.dci_sender_id,
                                    receiver_id=call.sender, total_count=total, completed_count=total,
                                    encrypted=call.encrypt_to is not None)  # encrypted when sent
        await store.enqueue_dci_callback(correlation_id=correlation_id, requester=call.principal.subject, url=url,
                                         action=action, header=header, message=message)

    async def _call_back(self, call: DciCall, url: str, action: str, message: dict, total: int,
                         correlation_id: str) -> JSONResponse:
        """Queues `message` for the requester's callback; the ACK answered now."""
        async with self.stores(call.request, True) as store:
            await self._queue_callback(store, call, url, action, message, total, correlation_id)
        return _json(200, dd.ack(correlation_id, _now()))

    # ---------------------------------------------------------------- search

    async def _run_search(self, call: DciCall, store: NotifyStore) -> tuple[list[dict], dict]:
        """The search_response items of a search message, and per reference id what txn status tells."""
        principal = call.principal
        items = dd.items_of(call.message, "search_request")
        out: list[dict] = []
        detail: dict[str, dict[str, Any]] = {}
        for it in items:
            now = _now()
            ref = it["reference_id"]
            try:
                criteria = dd.parse_criteria(it.get("search_criteria"), token_programmes=principal.programmes,
                                             token_areas=principal.areas, locale=it.get("locale"),
                                             nik_lookup=self._nik_lookup(principal))
            except dd.Rejected as r:
                out.append(dd.rejected_item(ref, now, r))
                detail[ref] = {"status": "rjct", "code": r.code}
                continue
            if not principal.areas or not principal.programmes:
                decisions: list[dict] = []  # a token without areas or programmes sees nothing
                total = 0
            else:
                decisions, total = await store.search_registry(criteria.conditions, principal.areas,
                                                               criteria.sort, criteria.page_size, criteria.offset)
            records = await self._records(store, decisions, principal.programmes)
            out.append(dd.search_item(ref, now, criteria, records, total))
            detail[ref] = {"status": "succ", "total_count": total, "returned": len(records)}
        return out, detail

    def _nik_lookup(self, principal: Principal) -> dd.NikLookup | None:
        """The member index's keyed hash, for a requester one of whose programmes is granted member
        identifiers (it may search by a member's NIK); None for any other."""
        if not any(p in self.access.programmes and self.access.programmes[p].member_identifiers
                   for p in principal.programmes):
            return None
        key = self.settings.nik_lookup_key
        return lambda nik: nik_hash(key, nik).hex()

    async def _records(self, store: NotifyStore, decisions: list[dict], programmes: tuple[str, ...]) -> list[dict]:
        """The Group records of a page of decisions, narrowed for the requester's programmes; member-level
        decisions (a requester granted member identifiers) carry each member's NIK from the identity feed."""
        narrowed = [payload_for(d, programmes, self.access) for d in decisions]
        keys = [k for n in narrowed if (k := identity_key({"data": n})) is not None]
        niks, failed = open_lists(await store.member_identities(keys), self.settings.identity_keyring()) \
            if keys else ({}, [])
        if failed:
            log.warning("identity lists do not open", extra={"fields": {"kids": sorted(set(failed))}})
        return [dd.group_record(with_niks(n, niks.get(k, {})) if (k := identity_key({"data": n})) else n)
                for n in narrowed]

    @staticmethod
    def _search_message(call: DciCall, correlation_id: str, items: list[dict]) -> dict:
        return {"transaction_id": call.message["transaction_id"], "correlation_id": correlation_id,
                "search_response": items}

    async def sync_search(self, call: DciCall) -> JSONResponse:
        correlation_id = str(uuid4())
        async with self.stores(call.request, True) as store:
            items, detail = await self._run_search(call, store)
            await store.save_dci_transaction(
                correlation_id=correlation_id, requester=call.principal.subject, kind="search",
                transaction_id=call.message["transaction_id"], reference_ids=list(detail), status="succ", detail=detail)
            await store.record_audit(audit.of_request(  # a read of personal data, audited
                call.request, call.principal, "dci.search", "dci_transaction", correlation_id,
                detail={"rows": sum(d.get("returned", 0) for d in detail.values())}))
        return self._answer(call, "on-search", self._search_message(call, correlation_id, items), len(items))

    async def search(self, call: DciCall) -> JSONResponse:
        """Runs the search now and queues its results for {sender_uri}/registry/on-search, in one
        transaction; the transaction stays pdng until the callback is acknowledged (then succ) or
        given up (then rjct, with why)."""
        dd.items_of(call.message, "search_request")
        url = await self._callback_url(call, "/registry/on-search")
        correlation_id = str(uuid4())
        async with self.stores(call.request, True) as store:
            items, detail = await self._run_search(call, store)
            await store.save_dci_transaction(
                correlation_id=correlation_id, requester=call.principal.subject, kind="search",
                transaction_id=call.message["transaction_id"], reference_ids=list(detail), status="pdng", detail=detail)
            await self._queue_callback(store, call, url, "on-search", self._search_message(call, correlation_id, items),
                                       len(items), correlation_id)
            await store.record_audit(audit.of_request(
                call.request, call.principal, "dci.search", "dci_transaction", correlation_id,
                detail={"rows": sum(d.get("returned", 0) for d in detail.values()), "callback": "queued"}))
        return _json(200, dd.ack(correlation_id, _now()))

    # ---------------------------------------------------------------- transaction status

    async def _status_message(self, call: DciCall, correlation_id: str) -> tuple[dict, int]:
        """The txnstatus_response message and how many items it holds."""
        tid, txn_type, value, attr = _txn_status(call.message)
        kinds = ("search",) if txn_type == "search" else ("subscribe", "unsubscribe")
        async with self.stores(call.request) as store:
            rows = [r for k in kinds for r in await store.find_dci_transactions(call.principal.subject, k, attr, value)]
        items = [_status_item(r, ref) for r in rows for ref in r["reference_ids"]]
        latest = rows[0] if rows else None
        return {"transaction_id": tid, "correlation_id": correlation_id,
                "txnstatus_response": {"txn_type": txn_type, "txn_status": {
                    "transaction_id": latest["transaction_id"] if latest else (value if attr == "transaction_id" else tid),
                    "correlation_id": latest["correlation_id"] if latest else correlation_id,
                    "search_response": items}}}, len(items)

    async def sync_txn_status(self, call: DciCall) -> JSONResponse:
        out, n = await self._status_message(call, str(uuid4()))
        return self._answer(call, "txn-on-status", out, n)

    async def txn_status(self, call: DciCall) -> JSONResponse:
        correlation_id = str(uuid4())
        out, n = await self._status_message(call, correlation_id)
        url = await self._callback_url(call, "/registry/txn/on-status")
        return await self._call_back(call, url, "txn-on-status", out, n, correlation_id)

    # ---------------------------------------------------------------- subscribe, unsubscribe

    async def subscribe(self, call: DciCall) -> JSONResponse:
        items = dd.items_of(call.message, "subscribe_request")
        notify_url = await self._callback_url(call, "/registry/notify")
        url = await self._callback_url(call, "/registry/on-subscribe")
        correlation_id = str(uuid4())
        out_items, detail = [], {}
        for it in items:
            ref, now = it["reference_id"], _now()
            try:
                code = await self._subscribe_one(call, it, notify_url)
            except dd.Rejected as r:
                out_items.append(dd.rejected_item(ref, now, r))
                detail[ref] = {"status": "rjct", "code": r.code}
                continue
            out_items.append({"reference_id": ref, "timestamp": now.isoformat(), "status": "succ", "subscriptions": [
                {"version": dd.VERSION, "code": code, "status": "subscribe", "timestamp": now.isoformat(),
                 "reg_type": dd.REG_TYPE, "reg_event_type": "REGISTER", "notify_record_type": dd.RECORD_TYPE}]})
            detail[ref] = {"status": "succ", "subscription": code}
        out = {"transaction_id": call.message["transaction_id"], "correlation_id": correlation_id,
               "subscribe_response": out_items}
        async with self.stores(call.request, True) as store:
            await store.save_dci_transaction(
                correlation_id=correlation_id, requester=call.principal.subject, kind="subscribe",
                transaction_id=call.message["transaction_id"], reference_ids=list(detail), status="succ", detail=detail)
            await self._queue_callback(store, call, url, "on-subscribe", out, len(out_items), correlation_id)
        return _json(200, dd.ack(correlation_id, _now()))

    async def _subscribe_one(self, call: DciCall, item: dict, notify_url: str) -> str:
        """One subscribe item made a (DCI format) subscription, narrowed to the token: its code; Rejected else."""
        principal = call.principal
        requested = dd.subscription_filters(item.get("subscribe_criteria"))
        try:
            scoped = narrow(requested, token_programmes=principal.programmes, token_areas=principal.areas)
        except Refusal as e:
            raise dd.Rejected("rjct.notify_details.invalid", e.reason) from None
        limit = self.settings.max_subscriptions_per_programme
        async with self.stores(call.request, True) as store:
            row, refused = await store.create_subscription(
                sub_id=uuid4(), owner=principal.subject, callback_url=notify_url, secret=None,
                signature="ed25519", scope=scoped.programmes, filters=scoped.filters,
                limit_problem=lambda counts: subscription_limit_problem(counts, scoped.programmes, limit),
                fmt="dci", dci_sender=call.sender)
            if row is None:
                raise dd.Rejected("rjct.notify_details.invalid", refused or "refused")
            await store.record_audit(audit.of_request(call.request, principal, "subscription.create", "subscription",
                                                      row["id"], detail={"format": "dci"}))
        return str(row["id"])

    async def unsubscribe(self, call: DciCall) -> JSONResponse:
        tid = dd.id_field(call.message, "transaction_id", "message")
        codes = call.message.get("subscription_codes")
        if not isinstance(codes, list) or not 1 <= len(codes) <= 100 or not all(
                isinstance(c, str) and 0 < len(c) <= dd.ID_MAX for c in codes):
            raise dd.DciError("err.request.bad", "message.subscription_codes: a list of 1 to 100 subscription codes")
        url = await self._callback_url(call, "/registry/on-unsubscribe")
        correlation_id = str(uuid4())
        async with self.stores(call.request, True) as store:
            result = await store.delete_dci_subscriptions(call.principal.subject, list(dict.fromkeys(codes)))
            for code, what in result.items():
                if what == "unsubscribe":
                    await store.record_audit(audit.of_request(call.request, call.principal, "subscription.delete",
                                                              "subscription", code, detail={"format": "dci"}))
            out = _unsubscribe_message(tid, correlation_id, result)
            await store.save_dci_transaction(
                correlation_id=correlation_id, requester=call.principal.subject, kind="unsubscribe",
                transaction_id=tid, reference_ids=[tid], status=out["status"],
                detail={tid: {"status": out["status"],
                              **({"code": out["status_reason_code"]} if "status_reason_code" in out else {})}})
            await self._queue_callback(store, call, url, "on-unsubscribe", out, 1, correlation_id)
        return _json(200, dd.ack(correlation_id, _now()))


class DciCallbackWorker:
    """Sends the queued DCI callbacks (on-search, on-subscribe, on-unsubscribe, txn/on-status): a
    background loop of notify (app.py) like the delivery worker, over the same store. Each due callback
    is leased (one instance sends it), POSTed signed (the same message_id on every attempt, the
    signature made when sent; an on-search without the families erased since the search ran), and its
    outcome recorded: acknowledged; refused (an ERR answer or a 4xx
    other than 408/429: given up at once, not retried as a network failure); else retried with
    exponential backoff and jitter until `dci_callback_attempts`, then given up. A given-up search
    callback turns the transaction rjct with the reason (txn/status tells it)."""

    def __init__(self, settings: NotifySettings, requesters: dict[str, dd.Requester],
                 stores: Callable[..., contextlib.AbstractAsyncContextManager[NotifyStore]] = open_store) -> None:
        self.settings = settings
        self.requesters = requesters  # the encryption key of a requester that wrote encrypted
        self.stores = stores  # a store on a connection of the pool: stores(pool, transaction=False)

    async def deliver_forever(self, runtime: Runtime) -> None:
        s = self.settings
        idle, woken = IdlePoll(s.delivery_idle_poll_s, s.delivery_idle_poll_max_s), runtime.wakeup.listener()
        async with make_client(s) as client:

            async def once() -> None:
                woken.clear()  # before looking: a commit meanwhile cuts the wait short
                await wait_woken(woken, idle.after(await self.deliver_due(runtime.pool, client)))

            await run_forever("dci callbacks", once, backoff=Backoff(s.retry_initial_s, s.retry_max_s),
                              expected=is_transient, logger=log)

    async def deliver_due(self, pool: Any, client: httpx.AsyncClient) -> int:
        """Sends the callbacks due now (at most delivery_concurrency, at the same time); how many."""
        s = self.settings
        async with self.stores(pool) as store:
            due = await store.claim_dci_callbacks(s.delivery_concurrency, lease_for(s))
        await asyncio.gather(*(self._deliver(pool, client, cb) for cb in due))
        return len(due)

    async def _deliver(self, pool: Any, client: httpx.AsyncClient, cb: dict) -> None:
        s = self.settings
        if cb["action"] == "on-search" and (families := dd.families_in(cb["message"])):
            async with self.stores(pool) as store:  # a family erased since the search is not sent
                if erased := await store.erased_among(families):
                    cb = {**cb, "message": dd.without_families(cb["message"], erased)}
        outcome, status, error, retry_after = await self._post(client, cb)
        if outcome is Outcome.RETRY and cb["attempts"] + 1 >= s.dci_callback_attempts:
            outcome, error = Outcome.REFUSED, f"given up after {cb['attempts'] + 1} attempts: {error}"
        async with self.stores(pool, transaction=True) as store:
            if outcome is Outcome.RETRY:
                wait = retry_delay(cb["attempts"] + 1, s.retry_base_s, s.retry_cap_s, retry_after)
                await store.finish_dci_callback(cb["id"], outcome="retry", status=status, error=error,
                                                wait=timedelta(seconds=wait))
                return
            delivered = outcome is Outcome.DELIVERED
            await store.finish_dci_callback(cb["id"], outcome="delivered" if delivered else "dead", status=status,
                                            error=error)
            await store.settle_dci_transaction(cb["correlation_id"], error=None if delivered else error)
        if not delivered:
            log.warning("DCI callback given up", extra={"fields": {
                "correlation_id": cb["correlation_id"], "action": cb["action"], "status": status}})

    async def _post(self, client: httpx.AsyncClient, cb: dict) -> tuple[Outcome, int | None, str | None, str | None]:
        """(outcome, HTTP status, error, Retry-After) of one POST of the callback."""
        s = self.settings
        encrypt_to = None
        if cb["header"].get("is_msg_encrypted"):
            requester = self.requesters.get(cb["header"]["receiver_id"])
            if requester is None or requester.encryption_key is None:
                return Outcome.REFUSED, None, "the receiver has no encryption key registered any more", None
            encrypt_to = requester.encryption_key
        problem = await callback_problem_now(cb["url"], s.env == "production", s.resolve_timeout_s)
        if problem:
            return Outcome.RETRY, None, problem, None
        body = orjson.dumps(signed_envelope(s, cb["header"], cb["message"], encrypt_to))
        try:
            async with asyncio.timeout(s.delivery_timeout_s):
                status, retry_after, reply, refused_reply = await post_capped(
                    client, cb["url"], body, {"content-type": "application/json"}, s.max_reply_bytes)
        except (TimeoutError, httpx.TimeoutException):
            return Outcome.RETRY, None, f"no answer within {s.delivery_timeout_s:g} s", None
        except httpx.HTTPError as e:
            return Outcome.RETRY, None, type(e).__name__, None
        if refused_reply:
            return Outcome.RETRY, status, f"HTTP {status}: {refused_reply}", retry_after
        if acked(status, reply):
            return Outcome.DELIVERED, status, None, retry_after
        if refused := err_answer(status, reply):  # the requester says ERR: given up, not retried
            return Outcome.REFUSED, status, refused, retry_after
        outcome = outcome_of(status, False)
        return outcome, status, f"HTTP {status}" + ("" if status >= 300 else " without ACK"), retry_after


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


def _status_item(r: dict, ref: str) -> dict:
    """One reference id of a stored transaction, as a txn status item."""
    d = r["detail"].get(ref, {})
    callback_error = r["detail"].get("callback_error")
    # a search is pdng until its on-search callback is acknowledged, rjct when the callback was given up
    status = r["status"] if r["status"] == "pdng" or callback_error and r["status"] == "rjct" else d.get(
        "status", r["status"])
    item = {"reference_id": ref, "timestamp": r["updated_at"].isoformat(), "status": status}
    if d.get("code"):
        item["status_reason_code"] = d["code"]
    note = {k: v for k, v in d.items() if k not in ("status", "code")}
    if callback_error:
        note["callback"] = callback_error
    note_text = f"{r['kind']} {r['transaction_id']} (correlation_id {r['correlation_id']})" + (
        "".join(f", {k} {v}" for k, v in note.items()))
    item["status_reason_message"] = note_text[:999]
    return item


def _unsubscribe_message(tid: str, correlation_id: str, result: dict[str, str]) -> dict:
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
    return out
