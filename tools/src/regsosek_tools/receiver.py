"""The reference programme-side receiver of eligibility notifications.

What a programme system (PKH, Sembako, BLT-Desa, ...) runs to take signed deliveries
from notify, modelled on the DCI social-registry notify API:

    POST /notify      a signed batch of events; answered synchronously with ACK
    GET  /stats       counts: received, unique, duplicates, out of order, per programme
    GET  /events      events received (?family_id=... for one family)
    GET  /families    the latest decision seen per family
    POST /control     fault injection for tests: fail_rate, status_429_rate, delay_ms, slow_rate, status_4xx_rate, ...
    GET  /healthz

It verifies signatures before parsing and answers 401 to a bad, missing or stale one:
Standard Webhooks `webhook-signature` (`v1a` Ed25519 with notify's published public keys, fetched
from REGSOSEK_RECEIVER_WEBHOOK_KEYS_URL, i.e. notify's GET /v1/webhook-keys, or given as whpk_ keys
in REGSOSEK_RECEIVER_PUBLIC_KEYS; `v1` HMAC-SHA256 with the secret), or the older
`X-Regsosek-Signature` (HMAC-SHA256 over "<t>." + body) with the secret. With public keys and no
secret configured it takes Ed25519 signatures only. It de-duplicates by event id (in memory, and in a SQLite file
when REGSOSEK_RECEIVER_DB is set, so a restart keeps it), and counts a family's event
that is older (lower decision_seq; without one, lower version or earlier decision) than one already
seen as out of order; a family's newest decision is the one with the highest decision_seq.

    REGSOSEK_RECEIVER_SECRET=... python -m regsosek_tools.receiver
    REGSOSEK_RECEIVER_WEBHOOK_KEYS_URL=http://127.0.0.1:8004/v1/webhook-keys python -m regsosek_tools.receiver

Environment: REGSOSEK_HTTP_PORT (8009), REGSOSEK_HTTP_HOST (127.0.0.1),
REGSOSEK_RECEIVER_SECRET, REGSOSEK_RECEIVER_WEBHOOK_KEYS_URL, REGSOSEK_RECEIVER_PUBLIC_KEYS,
REGSOSEK_RECEIVER_KEYS_REFRESH_S (300), REGSOSEK_RECEIVER_DB, REGSOSEK_RECEIVER_TOLERANCE_S (300),
REGSOSEK_RECEIVER_FAIL_RATE, REGSOSEK_RECEIVER_FAIL_AFTER_RATE,
REGSOSEK_RECEIVER_429_RATE, REGSOSEK_RECEIVER_RETRY_AFTER_S, REGSOSEK_RECEIVER_DELAY_MS,
REGSOSEK_RECEIVER_SLOW_RATE, REGSOSEK_RECEIVER_SLOW_MS, REGSOSEK_RECEIVER_4XX_RATE,
REGSOSEK_RECEIVER_4XX_STATUS, REGSOSEK_RECEIVER_SEED.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from regsosek import standard_webhooks
from regsosek.signing import HEADER as SIGNATURE_HEADER
from regsosek.signing import sign, verify

# At least 32 characters: notify refuses shorter subscription secrets.
DEFAULT_SECRET = "local-receiver-secret-change-me-0123456789"
DEFAULT_PORT = 8009
ELIGIBILITY_TYPE = "id.go.bps.regsosek.eligibility.decided.v1"

__all__ = ["DEFAULT_PORT", "DEFAULT_SECRET", "Faults", "ReceiverState", "create_app", "main", "sign", "verify",
           "SIGNATURE_HEADER"]


def _order(rec: dict) -> tuple:
    """A family's decisions in order: classify's decision sequence (events without one are 0, older
    than any with one), then interview version and decision time (as before sequences)."""
    return (rec.get("decision_seq") or 0, rec.get("version") or 0, rec.get("decided_at") or "")


@dataclass
class Faults:
    """Injected misbehaviour, to exercise the sender's retries."""

    fail_rate: float = 0.0  # answer 500 before processing
    fail_after_rate: float = 0.0  # process, then answer 500 (the sender re-sends: duplicates)
    status_429_rate: float = 0.0  # answer 429 with Retry-After
    retry_after_s: int = 1
    delay_ms: int = 0  # wait before answering
    slow_rate: float = 0.0  # now and then much slower: wait slow_ms more, then process (past the sender's timeout, say)
    slow_ms: int = 0
    status_4xx_rate: float = 0.0  # refuse the message with status_4xx (the sender must not retry it)
    status_4xx: int = 400

    _INTS = ("retry_after_s", "delay_ms", "slow_ms", "status_4xx")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Faults:
        given: Mapping[str, str] = os.environ if env is None else env

        def g(k: str, d: float) -> str | float:
            return given.get(f"REGSOSEK_RECEIVER_{k}", d)

        return cls(fail_rate=float(g("FAIL_RATE", 0)), fail_after_rate=float(g("FAIL_AFTER_RATE", 0)),
                   status_429_rate=float(g("429_RATE", 0)), retry_after_s=int(g("RETRY_AFTER_S", 1)),
                   delay_ms=int(g("DELAY_MS", 0)), slow_rate=float(g("SLOW_RATE", 0)), slow_ms=int(g("SLOW_MS", 0)),
                   status_4xx_rate=float(g("4XX_RATE", 0)), status_4xx=int(g("4XX_STATUS", 400)))

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        for k, v in changes.items():
            if k not in known:
                raise ValueError(f"unknown fault option {k!r}; known: {', '.join(known)}")
            if k == "status_4xx" and not (400 <= int(v) <= 499 and int(v) not in (408, 429)):
                raise ValueError("status_4xx must be a 4xx status the sender does not retry (not 408 or 429)")
            setattr(self, k, int(v) if k in self._INTS else float(v))


def _ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class ReceiverState:
    """Everything the receiver remembers; optionally persisted in SQLite."""

    def __init__(self, db_path: str | None = None) -> None:
        self.db_path = db_path
        self.db: sqlite3.Connection | None = None
        self.reset(clear_db=False)
        if db_path:
            self.db = sqlite3.connect(db_path, check_same_thread=False)
            self.db.execute("pragma journal_mode=wal")
            self.db.execute("create table if not exists events (seq integer primary key autoincrement, "
                            "event_id text unique not null, family_id text, record text not null)")
            self.db.execute("create table if not exists counters (name text primary key, value integer not null)")
            self.db.commit()
            self._load()

    def reset(self, *, clear_db: bool = True) -> None:
        self.events: dict[str, dict] = {}  # event id -> record, in arrival order
        self.by_family: dict[str, list[str]] = {}
        self.latest: dict[str, dict] = {}  # family id -> record of its newest decision
        self.counters: Counter[str] = Counter()
        if clear_db and self.db is not None:
            self.db.execute("delete from events")
            self.db.execute("delete from counters")
            self.db.commit()

    def _load(self) -> None:
        assert self.db is not None
        for (record,) in self.db.execute("select record from events order by seq"):
            self._remember(json.loads(record))
        for name, value in self.db.execute("select name, value from counters"):
            self.counters[name] = value

    def _remember(self, rec: dict) -> bool:
        """Index a new unique event; True when it is older than one already seen for its family."""
        self.events[rec["event_id"]] = rec
        fid = rec["family_id"]
        self.by_family.setdefault(fid, []).append(rec["event_id"])
        cur = self.latest.get(fid)
        key = _order(rec)
        if cur is not None and key < _order(cur):
            return True
        self.latest[fid] = rec
        return False

    def accept(self, event: dict, *, message_id: str, traceparent: str | None) -> str:
        """Record one event: 'new', 'duplicate' or 'out_of_order' (new, but older than one seen)."""
        self.counters["received"] += 1
        event_id = str(event["event_id"])
        if event_id in self.events:
            self.counters["duplicates"] += 1
            return "duplicate"
        data = event["data"] if isinstance(event.get("data"), dict) else {}
        decided = _ts(data.get("decided_at"))
        eligible: list[Any] = [d.get("programme") for d in data.get("decisions") or []
                               if isinstance(d, dict) and d.get("eligible")]
        rec = {
            "event_id": event_id,
            "event_type": event.get("event_type"),
            "family_id": str(event.get("subject") or data.get("family_id") or ""),
            "time": event.get("time"),
            "version": data.get("version"),
            "decision_seq": data.get("decision_seq") or 0,
            "decided_at": decided.astimezone(UTC).isoformat() if decided else None,
            "welfare_group": data.get("welfare_group"),
            "decile": data.get("decile"),
            "eligible": sorted(eligible),
            "message_id": message_id,
            "traceparent": traceparent,
            "received_at": datetime.now(UTC).isoformat(),
            "data": data,
        }
        older = self._remember(rec)
        if older:
            self.counters["out_of_order"] += 1
        if self.db is not None:
            self.db.execute("insert or ignore into events (event_id, family_id, record) values (?, ?, ?)",
                            (event_id, rec["family_id"], json.dumps(rec)))
        return "out_of_order" if older else "new"

    def flush(self) -> None:
        if self.db is not None:
            self.db.executemany("insert into counters (name, value) values (?, ?) "
                                "on conflict (name) do update set value = excluded.value", list(self.counters.items()))
            self.db.commit()

    def stats(self) -> dict:
        eligible: Counter[str] = Counter()
        groups: Counter[str] = Counter()
        for rec in self.latest.values():
            eligible.update(rec["eligible"])
            if rec.get("welfare_group") is not None:
                groups[str(rec["welfare_group"])] += 1
        return {
            "received": self.counters["received"],
            "unique": len(self.events),
            "duplicates": self.counters["duplicates"],
            "out_of_order": self.counters["out_of_order"],
            "families": len(self.latest),
            "by_programme_eligible": dict(sorted(eligible.items())),
            "by_welfare_group": dict(sorted(groups.items())),
            "messages": self.counters["messages"],
            "rejected": self.counters["rejected"],
            "verified": {"ed25519": self.counters["verified_v1a"], "hmac": self.counters["verified_v1"]},
            "injected_faults": {k.removeprefix("fault_"): v for k, v in self.counters.items() if k.startswith("fault_")},
        }


class PublishedKeys:
    """The sender's Ed25519 public keys from its JWK Set URL (notify's GET /v1/webhook-keys): the only
    place keys are taken from (never from a request). Kept for `refresh_s`; fetched again early when a
    signature does not verify (a rotation to a key not seen yet), at most every `min_refetch_s`."""

    def __init__(self, url: str, *, refresh_s: float = 300.0, min_refetch_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url, self.refresh_s, self.min_refetch_s, self.clock = url, refresh_s, min_refetch_s, clock
        self.transport = transport
        self.keys: list[Ed25519PublicKey] = []
        self.kids: list[str] = []
        self.fetched_at: float | None = None
        self.fetches = 0
        self._lock = asyncio.Lock()

    async def get(self) -> list[Ed25519PublicKey]:
        if self.fetched_at is None or self.clock() - self.fetched_at > self.refresh_s:
            await self.fetch()
        return self.keys

    async def refetch(self) -> bool:
        """Fetch again unless the last fetch is too recent; True when it fetched."""
        if self.fetched_at is not None and self.clock() - self.fetched_at < self.min_refetch_s:
            return False
        await self.fetch()
        return True

    async def fetch(self) -> None:
        async with self._lock:
            self.fetches += 1
            self.fetched_at = self.clock()  # also after a failure: no fetch storm while the sender is away
            async with httpx.AsyncClient(timeout=5, transport=self.transport) as client:
                r = await client.get(self.url)
                r.raise_for_status()
            keys, kids = [], []
            for k in r.json().get("keys", []):
                try:
                    keys.append(standard_webhooks.public_key_from_jwk(k))
                    kids.append(str(k.get("kid", "")))
                except standard_webhooks.MalformedKey:
                    continue  # not an Ed25519 key
            self.keys, self.kids = keys, kids


def _nack(status: int, correlation_id: str | None, reason: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"message": {"ack_status": "NACK", "correlation_id": correlation_id, "error": reason}},
                        status_code=status, headers=headers)


class SignatureCheck:
    """Which signatures the receiver trusts: the Standard Webhooks header with Ed25519 keys (pinned,
    or published at a URL) or the shared secret, else the legacy X-Regsosek-Signature with the secret.
    Counts, in the receiver's counters, the scheme that verified."""

    def __init__(self, *, secret: str | None, pinned: list, published: PublishedKeys | None,
                 clock: Callable[[], float], tolerance_s: float, state: ReceiverState) -> None:
        self.secret, self.pinned, self.published = secret, pinned, published
        self.clock, self.tolerance_s, self.state = clock, tolerance_s, state

    async def __call__(self, raw: bytes, headers) -> tuple[int, str | None]:
        """(status, reason): (200, None) when a trusted signature verifies, else 401 (or 503 when the
        published keys cannot be fetched, so the sender retries rather than giving up)."""
        if headers.get(standard_webhooks.HEADER_SIGNATURE) is None:
            return self._legacy(raw, headers)
        keys = list(self.pinned)
        if self.published is not None:
            try:
                keys += await self.published.get()
            except (httpx.HTTPError, ValueError):
                if not keys and not self.secret:
                    return 503, "webhook keys unavailable"
        problem = self._standard(raw, headers, keys, secret=self.secret)
        if problem == "signature mismatch" and self.published is not None:
            try:
                if await self.published.refetch():  # perhaps signed with a key published since the last fetch
                    problem = self._standard(raw, headers, self.pinned + self.published.keys, secret=self.secret)
            except (httpx.HTTPError, ValueError):
                pass
        if problem is None:
            # which scheme verified, for /stats: an Ed25519 signature with the keys alone?
            v1a = self._standard(raw, headers, self.pinned + (self.published.keys if self.published else [])) is None
            self.state.counters["verified_v1a" if v1a else "verified_v1"] += 1
            return 200, None
        return 401, problem

    def _standard(self, raw: bytes, headers, keys: list, *, secret: str | None = None) -> str | None:
        return standard_webhooks.verify(raw, headers, now=self.clock(), public_keys=keys, secret=secret,
                                        tolerance_s=self.tolerance_s)

    def _legacy(self, raw: bytes, headers) -> tuple[int, str | None]:
        if self.secret and headers.get(SIGNATURE_HEADER) is not None:
            problem = verify(self.secret, headers.get(SIGNATURE_HEADER, ""), raw, self.clock(), self.tolerance_s)
            if problem is None:
                self.state.counters["verified_v1"] += 1
                return 200, None
            return 401, problem
        return 401, "missing signature"


async def injected_fault(faults: Faults, rng: random.Random, counters: Counter) -> JSONResponse | None:
    """The fault to answer with before looking at the message (after any injected delay), if one is drawn."""
    if faults.delay_ms:
        await asyncio.sleep(faults.delay_ms / 1000)
    if faults.slow_rate and rng.random() < faults.slow_rate:
        counters["fault_slow"] += 1
        await asyncio.sleep(faults.slow_ms / 1000)
    if faults.status_429_rate and rng.random() < faults.status_429_rate:
        counters["fault_429"] += 1
        return _nack(429, None, "injected: too many requests", {"Retry-After": str(faults.retry_after_s)})
    if faults.fail_rate and rng.random() < faults.fail_rate:
        counters["fault_500"] += 1
        return _nack(500, None, "injected: server error")
    if faults.status_4xx_rate and rng.random() < faults.status_4xx_rate:
        counters[f"fault_{faults.status_4xx}"] += 1
        return _nack(faults.status_4xx, None, "injected: refused")
    return None


def parse_notify(raw: bytes) -> tuple[str, list[dict]]:
    """(message id, events) of a DCI-style notify message; ValueError, KeyError or TypeError when malformed."""
    body = json.loads(raw)
    header, message = body["header"], body["message"]
    events = message["notify_event"]
    message_id = str(header["message_id"])
    if header.get("action") != "notify" or not isinstance(events, list):
        raise ValueError("not a notify message")
    for e in events:
        if not isinstance(e, dict) or not e.get("event_id"):
            raise ValueError("every notify_event needs an event_id")
    return message_id, events


def apply_control(changes: Any, state: ReceiverState, faults: Faults) -> None:
    """POST /control: `reset: true` forgets what was received; any other field changes a fault."""
    if not isinstance(changes, dict):
        raise ValueError("body must be a JSON object")
    if changes.pop("reset", False):
        state.reset()
    faults.update(changes)


def _trusted_keys(secret: str | None, public_keys: list[str] | None, keys_url: str | None,
                  keys_transport: httpx.AsyncBaseTransport | None) -> tuple[str | None, list, PublishedKeys | None]:
    """(shared secret, pinned Ed25519 keys, published keys) from the arguments, else the environment."""
    if public_keys is None:
        public_keys = os.environ.get("REGSOSEK_RECEIVER_PUBLIC_KEYS", "").replace(",", " ").split()
    pinned = [standard_webhooks.load_public_key(k, "REGSOSEK_RECEIVER_PUBLIC_KEYS") for k in public_keys]
    keys_url = keys_url if keys_url is not None else os.environ.get("REGSOSEK_RECEIVER_WEBHOOK_KEYS_URL", "")
    published = PublishedKeys(keys_url, refresh_s=float(os.environ.get("REGSOSEK_RECEIVER_KEYS_REFRESH_S", 300)),
                              transport=keys_transport) if keys_url else None
    # The development secret only when no Ed25519 key source is configured: a receiver set up for
    # Ed25519 alone must not also take HMAC signatures made with a key published in this repository.
    secret = secret or os.environ.get("REGSOSEK_RECEIVER_SECRET") or (None if pinned or published else DEFAULT_SECRET)
    return secret, pinned, published


def create_app(secret: str | None = None, *, db_path: str | None = None, faults: Faults | None = None,
               tolerance_s: float | None = None, clock: Callable[[], float] = time.time,
               rng: random.Random | None = None, public_keys: list[str] | None = None,
               keys_url: str | None = None, keys_transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """The receiver app. Arguments default to the environment (see the module docstring)."""
    secret, pinned, published = _trusted_keys(secret, public_keys, keys_url, keys_transport)
    db_path = db_path if db_path is not None else (os.environ.get("REGSOSEK_RECEIVER_DB") or None)
    tolerance = tolerance_s if tolerance_s is not None else float(os.environ.get("REGSOSEK_RECEIVER_TOLERANCE_S", 300))
    faults = faults or Faults.from_env()
    rng = rng or random.Random(os.environ.get("REGSOSEK_RECEIVER_SEED"))
    state = ReceiverState(db_path)

    app = FastAPI(title="Regsosek reference programme receiver", version="1")
    app.state.receiver = state
    app.state.faults = faults
    app.state.published_keys = published
    check_signature = SignatureCheck(secret=secret, pinned=pinned, published=published, clock=clock,
                                     tolerance_s=tolerance, state=state)
    _add_routes(app, state, faults, rng, check_signature)
    return app


def _add_routes(app: FastAPI, state: ReceiverState, faults: Faults, rng: random.Random,
                check_signature: SignatureCheck) -> None:
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ready": True}

    @app.post("/notify", summary="Signed eligibility notifications (DCI-style notify)")
    async def notify(request: Request):
        raw = await request.body()  # taken in full first: a slow answer still processes the message
        fault = await injected_fault(faults, rng, state.counters)
        if fault is not None:
            return fault
        status, problem = await check_signature(raw, request.headers)
        if problem is not None:
            state.counters["rejected"] += 1
            return _nack(status, None, problem)
        try:
            message_id, events = parse_notify(raw)
        except (ValueError, KeyError, TypeError) as malformed:
            state.counters["rejected"] += 1
            return _nack(400, None, f"malformed notify message: {malformed}")
        state.counters["messages"] += 1
        traceparent = request.headers.get("traceparent")
        for e in events:
            state.accept(e, message_id=message_id, traceparent=traceparent)
        state.flush()
        if faults.fail_after_rate and rng.random() < faults.fail_after_rate:
            state.counters["fault_500_after_processing"] += 1
            return _nack(500, message_id, "injected: server error after processing")
        return {"message": {"ack_status": "ACK", "correlation_id": message_id}}

    @app.get("/stats")
    async def stats() -> dict:
        return state.stats()

    @app.get("/events")
    async def events(family_id: str | None = None, limit: int = 1000, with_data: bool = False) -> dict:
        if family_id is not None:
            recs = [state.events[i] for i in state.by_family.get(family_id, [])]
        else:
            recs = list(state.events.values())[-max(1, min(limit, 100_000)):]
        out = [r if with_data else {k: v for k, v in r.items() if k != "data"} for r in recs]
        return {"count": len(out), "events": out}

    @app.get("/families")
    async def families() -> dict:
        keys = ("event_id", "version", "decision_seq", "decided_at", "welfare_group", "decile", "eligible",
                "received_at")
        return {"families": {fid: {k: rec.get(k) for k in keys} for fid, rec in state.latest.items()}}

    @app.post("/control", summary="Fault injection; body may hold any Faults field, and reset: true")
    async def control(request: Request):
        try:
            apply_control(await request.json() if await request.body() else {}, state, faults)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=422)
        return {"faults": asdict(faults)}


def main() -> None:
    import uvicorn

    port = int(os.environ.get("REGSOSEK_HTTP_PORT", DEFAULT_PORT))
    host = os.environ.get("REGSOSEK_HTTP_HOST", "127.0.0.1")
    uvicorn.run(create_app(), host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
