"""Delivery policy, pure: which subscriptions an event goes to (a batch's decisions weighed in one
call, plan_deliveries), how long to wait before a retry, what a response means, whether a callback
address is safe, and what each programme may receive and subscribe to."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from urllib.parse import urlsplit
from uuid import UUID

from regsosek.contracts.identities import identity_aad, parse_identity_plaintext
from regsosek.crypto import CannotOpen, Keyring, kid_of
from regsosek.topics import Topic


@dataclass(frozen=True)
class Filters:
    programmes: tuple[str, ...] = ()
    area_prefixes: tuple[str, ...] = ()
    welfare_groups: tuple[int, ...] = ()
    event_types: tuple[str, ...] = ()

    def matches(self, *, event_type: str, sls_id: str, welfare_group: int, eligible: set[str]) -> bool:
        """Empty filter = everything. Programmes match when the family is eligible for one of them."""
        if self.event_types and event_type not in self.event_types:
            return False
        if self.area_prefixes and not any(sls_id.startswith(p) for p in self.area_prefixes):
            return False
        if self.welfare_groups and welfare_group not in self.welfare_groups:
            return False
        return not (self.programmes and not (eligible & set(self.programmes)))


def recipients(matching: set, informed: set, live: set) -> set:
    """Subscriptions that get a family's decision: those whose filters match it, and every live
    subscription already told about the family, whether or not the decision still matches. A family
    that stops being eligible for a programme no longer matches that programme's filter, yet the
    programme holds its earlier "eligible" and must hear of the change (a withdrawal, a new group)."""
    return set(matching) | (set(informed) & set(live))


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"  # 4xx other than 408/429: the subscriber will never take it


def outcome_of(status: int | None, ack: bool) -> Outcome:
    if status is None or status in (408, 429) or status >= 500:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.DELIVERED if ack else Outcome.RETRY
    return Outcome.REFUSED


def retry_delay(attempt: int, base: float, cap: float, retry_after: str | None = None, rng: random.Random | None = None,
                now: datetime | None = None) -> float:
    """Exponential backoff with full jitter; a Retry-After header wins when longer (an HTTP date in it
    is counted from `now`, the clock's time when not given)."""
    uniform = (rng or random).uniform
    # The exponent is bounded: attempts keep counting through long outages and resumes,
    # and 2.0 ** 1024 would overflow a float.
    delay = uniform(0, min(cap, base * (2.0 ** min(max(attempt - 1, 0), 64))))
    hinted = _retry_after_seconds(retry_after, now or datetime.now(UTC))
    return min(cap, max(delay, hinted)) if hinted is not None else delay


def _retry_after_seconds(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    v = value.strip()
    if v.isascii() and v.isdigit():
        return float(v)
    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Attempt:
    """What one POST of a batch came to."""

    outcome: Outcome
    status: int | None = None
    error: str | None = None
    retry_after: str | None = None  # the subscriber's Retry-After header, as sent


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between failed attempts (retry_delay) and the run of failures that suspends a subscription."""

    base_s: float
    cap_s: float
    suspend_after: int


@dataclass(frozen=True)
class AttemptState:
    """What recording an attempt needs, loaded once when it is recorded (notify.store.attempt_state):
    the subscription's status and owner, its run of failed attempts so far, and which of the
    batch's deliveries are still queued (an erasure may have taken some meanwhile)."""

    status: str
    owner: str
    failures: int
    pending: frozenset[int]


@dataclass(frozen=True)
class AttemptRecord:
    """The decision after one attempt, saved as it is (notify.store.save_attempt)."""

    outcome: Outcome
    deliveries: str  # the batch's queued deliveries become 'delivered' or 'dead', or stay 'pending'
    ids: tuple[int, ...]  # those deliveries, in the batch's order
    failures: int  # the subscription's run of failures after this attempt
    retry_in: timedelta | None  # the wait before the subscription is due again (None: unchanged)
    suspend: bool  # an active subscription is suspended (its queue stays)

    @property
    def failed(self) -> bool:
        return self.outcome is not Outcome.DELIVERED


def after_attempt(attempt: Attempt, batch: Sequence[int], state: AttemptState, policy: RetryPolicy, *,
                  now: datetime, rng: random.Random | None = None) -> AttemptRecord:
    """What one attempt of a batch (delivery ids in order) comes to. Acknowledged: the queued deliveries
    are delivered and the run of failures ends. Refused for good: they are dead letters, kept for
    re-sending; the run of failures is left as it was. Failed: they stay queued, the run is one
    longer, the subscription waits retry_delay (backoff with jitter, or the subscriber's longer
    Retry-After) before it is due again, and an active subscription is suspended once the run
    reaches the policy's length."""
    ids = tuple(i for i in batch if i in state.pending)
    if attempt.outcome is Outcome.DELIVERED:
        return AttemptRecord(attempt.outcome, "delivered", ids, 0, None, False)
    if attempt.outcome is Outcome.REFUSED:
        return AttemptRecord(attempt.outcome, "dead", ids, state.failures, None, False)
    failures = state.failures + 1
    wait = retry_delay(failures, policy.base_s, policy.cap_s, attempt.retry_after, rng, now)
    return AttemptRecord(attempt.outcome, "pending", ids, failures, timedelta(seconds=wait),
                         failures >= policy.suspend_after and state.status == "active")


def callback_problem(url: str, resolved: list[str], *, production: bool) -> str | None:
    """Why a callback may not be called (None if it may). Checked at every delivery,
    against the addresses the name resolves to now (DNS can change after subscribing)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "callback must be an http(s) URL"
    if not production:
        return None
    if parts.scheme != "https":
        return "callback must use HTTPS"
    if not resolved:
        return "callback host does not resolve"
    for addr in resolved:
        if not is_public_address(addr):
            return f"callback resolves to a non-public address ({addr})"
    return None


def is_public_address(addr: str) -> bool:
    """A globally routable unicast address, also when an IPv4 address hides inside an
    IPv6 one (mapped, NAT64 64:ff9b::/96, 6to4, Teredo)."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return all(e is None or is_public_address(str(e)) for e in embedded)
    return True


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def newer_decision(stored_seq: int | None, incoming_seq: int) -> bool:
    """Whether a family's eligibility decision (classify's decision sequence `incoming_seq`) is to be
    queued, given the highest one queued for the family (`stored_seq`, None: none yet). Only a newer
    one is: an older or the same decision again is never sent after it. Events without a sequence
    (0, from before sequences existed) keep the arrival order as before, until the family's first
    sequenced decision; after it they are older."""
    if stored_seq is None:
        return True
    if incoming_seq == 0:
        return stored_seq == 0
    return incoming_seq > stored_seq


# ---------------------------------------------------------------- programme scope (privacy by design)

# Fields of an eligibility decision a payload may carry besides the decisions. The required ones are
# what a receiver needs to de-duplicate and order a family's events, and what notify needs to confirm
# a delivery (eligibility-delivered names the submission); the rest are granted per programme.
REQUIRED_FIELDS = ("family_id", "sls_id", "submission_id", "version", "decision_seq", "decided_at")
OPTIONAL_FIELDS = ("welfare_group", "decile", "model_version", "rule_version")


@dataclass(frozen=True)
class ProgrammeAccess:
    programme: str
    legal_basis: str
    fields: frozenset[str]
    member_identifiers: bool = False  # receives its member-level decisions with members' line numbers


@dataclass(frozen=True)
class AccessRules:
    """Per programme: its legal basis and the decision fields it may receive (the versioned
    data file notify/data/programme-access-*.yaml)."""

    version: str
    programmes: dict[str, ProgrammeAccess]

    def fields_for(self, programmes: tuple[str, ...]) -> tuple[str, ...]:
        """The fields a subscription of these programmes receives: those every one of them may
        (a subscription never gets more than its narrowest programme); only the required ones
        when it has no programme (a subscription from before scopes)."""
        allowed = set(OPTIONAL_FIELDS) if programmes else set()
        for p in programmes:
            allowed &= self.programmes[p].fields if p in self.programmes else set()
        return REQUIRED_FIELDS + tuple(f for f in OPTIONAL_FIELDS if f in allowed)


def parse_access(doc: object, known: tuple[str, ...]) -> AccessRules:
    """The access rules of a programme-access file; ValueError (naming the entry) when it is not one
    entry per known programme, with a legal basis and known fields including the required ones.
    `member_identifiers` (default false) must be a boolean: whether the programme receives its member-level
    decisions with the members' line numbers (payload_for)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), str) or not isinstance(doc.get("programmes"), dict):
        raise ValueError("programme access file needs a version and a programmes mapping")
    entries: dict = doc["programmes"]
    if set(entries) != set(known):
        raise ValueError(f"programme access file must list exactly the programmes {', '.join(known)}; "
                         f"missing {sorted(set(known) - set(entries))}, unknown {sorted(set(entries) - set(known))}")
    out = {}
    for code, e in entries.items():
        if not isinstance(e, dict) or not isinstance(e.get("legal_basis"), str) or not e["legal_basis"].strip():
            raise ValueError(f"programme access {code}: legal_basis text is required")
        fields = e.get("fields")
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise ValueError(f"programme access {code}: fields must be a list of field names")
        if unknown := sorted(set(fields) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS)):
            raise ValueError(f"programme access {code}: unknown fields {unknown}")
        if missing := [f for f in REQUIRED_FIELDS if f not in fields]:
            raise ValueError(f"programme access {code}: required fields missing {missing}")
        member_ids = e.get("member_identifiers", False)
        if not isinstance(member_ids, bool):
            raise ValueError(f"programme access {code}: member_identifiers must be true or false")
        out[code] = ProgrammeAccess(code, e["legal_basis"].strip(), frozenset(fields), member_ids)
    return AccessRules(doc["version"], out)


def payload_for(decision: dict, programmes: tuple[str, ...], access: AccessRules) -> dict:
    """What one subscription receives of an eligibility decision (its JSON form): the fields its
    programmes may receive, and the decisions, with their reasons, of its programmes only. Another
    programme's decision or reasons (a PBI-JKN health reason for a PKH subscription) never get in.
    Member-level decisions (individual programmes: PBI-JKN, PIP) go only to a programme whose access
    entry grants `member_identifiers` (its legal basis allows by-name data), and only its own; a
    programme without that grant gets none (its family-level decision says whether any member is
    covered), so no member's line number reaches it."""
    wanted = set(programmes)
    out = {f: decision[f] for f in access.fields_for(programmes) if f in decision}
    out["decisions"] = [d for d in decision.get("decisions", []) if d.get("programme") in wanted]
    by_name = {p for p in wanted if p in access.programmes and access.programmes[p].member_identifiers}
    members = [m for m in decision.get("member_decisions", []) if m.get("programme") in by_name]
    if members:
        out["member_decisions"] = members
    return out


class Refusal(Exception):
    """A subscription the token may not make: HTTP status, JSON pointer of the field, reason."""

    def __init__(self, status: int, path: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.path, self.reason = status, path, reason


@dataclass(frozen=True)
class Narrowed:
    programmes: tuple[str, ...]  # whose decisions the subscription receives
    filters: Filters


def narrow(requested: Filters, *, token_programmes: tuple[str, ...], token_areas: tuple[str, ...]) -> Narrowed:
    """A subscription narrowed to its token: it receives the decisions of the token's programmes
    (or of those of its programmes filter, which must be among them), for the token's areas (or
    area prefixes within them). No programme or no area in the token: nothing to subscribe to.
    The nation is reached only by a token that lists every province code; nothing widens to it."""
    if not token_programmes:
        raise Refusal(403, "/", "the token names no programmes (programmes claim): it may not subscribe")
    if not token_areas:
        raise Refusal(403, "/", "the token names no areas (areas claim): it may not subscribe")
    for i, p in enumerate(requested.programmes):
        if p not in token_programmes:
            raise Refusal(403, f"/filters/programmes/{i}", f"programme {p} is not among the token's programmes")
    for i, a in enumerate(requested.area_prefixes):
        if not any(a.startswith(t) for t in token_areas):
            raise Refusal(403, f"/filters/area_prefixes/{i}", "the area is not within the token's areas")
    programmes = tuple(p for p in token_programmes if not requested.programmes or p in requested.programmes)
    areas = tuple(dict.fromkeys(requested.area_prefixes)) or token_areas
    return Narrowed(programmes, Filters(tuple(dict.fromkeys(requested.programmes)), areas,
                                        requested.welfare_groups, requested.event_types))


def subscription_limit_problem(counts: dict[str, int], programmes: tuple[str, ...], limit: int) -> str | None:
    """Why one more subscription of these programmes is refused (None: it is not): each programme
    may have at most `limit` live subscriptions (each is one more copy of its families' data)."""
    for p in programmes:
        if counts.get(p, 0) >= limit:
            return f"programme {p} already has {counts[p]} subscriptions, the most allowed ({limit})"
    return None


# ---------------------------------------------------------------- which subscription receives which decision


@dataclass(frozen=True)
class LiveSubscription:
    """A subscription that is not deleted (paused and suspended ones keep receiving into their queue)."""

    id: object  # UUID
    filters: Filters
    scope: tuple[str, ...]  # programmes whose decisions (with reasons) its payloads carry


@dataclass(frozen=True)
class DecisionReceived:
    """One eligibility decision as it arrived, with what the filters are matched against."""

    family_id: str
    decision_seq: int
    event_id: str
    envelope: dict  # event_id, event_type, subject, time
    data: dict  # the whole decision (JSON form); never queued as such, see payload_for
    sls_id: str
    welfare_group: int
    eligible: frozenset[str]  # programmes the family is eligible for
    traceparent: str | None = None


@dataclass
class FamilyState:
    """What is known of a batch's families before its decisions are weighed."""

    erased: set[str]  # families erased: none of their decisions is queued any more
    seen: dict[str, int]  # family id -> the highest decision sequence queued for it
    informed: dict[str, set]  # family id -> the subscriptions already given a decision about it


@dataclass(frozen=True)
class Delivery:
    subscription_id: object
    event_id: str
    event_type: str
    family_id: str
    payload: dict  # what this subscription may receive of the decision
    traceparent: str | None


@dataclass(frozen=True)
class DeliveryPlan:
    """What a batch of decisions changes: the newest decision per family, the DCI read model rows,
    the (subscription, family) pairs now told about, and the deliveries to queue, in order."""

    newest: dict[str, tuple[int, str]]  # family id -> (decision sequence, event id)
    registry: dict[str, tuple[int, str, dict]]  # family id -> (decision sequence, event id, decision)
    newly_informed: list[tuple]  # (subscription id, family id), sorted
    deliveries: list[Delivery]


def plan_deliveries(decisions: list[DecisionReceived], live: list[LiveSubscription], state: FamilyState,
                    access: AccessRules) -> DeliveryPlan:
    """Weighs a batch's decisions in arrival order: a decision of an erased family, or not newer than the
    newest already queued for its family (newer_decision), is dropped; each other one goes to its
    recipients (recipients: the subscriptions whose filters match it, and those told about the family
    before, so that a family that stops matching hears of it), each with its own scoped payload."""
    scopes = {s.id: s.scope for s in live}
    seen = dict(state.seen)
    informed = {f: set(subs) for f, subs in state.informed.items()}
    newest: dict[str, tuple[int, str]] = {}
    registry: dict[str, tuple[int, str, dict]] = {}
    deliveries: list[Delivery] = []
    newly_informed: set[tuple] = set()
    for d in decisions:
        if d.family_id in state.erased or not newer_decision(seen.get(d.family_id), d.decision_seq):
            continue  # erased, or older than a decision already queued for the family: never sent after it
        seen[d.family_id] = d.decision_seq
        newest[d.family_id] = (d.decision_seq, d.event_id)
        registry[d.family_id] = (d.decision_seq, d.event_id, d.data)
        told = informed.setdefault(d.family_id, set())
        matching = {s.id for s in live if s.filters.matches(
            event_type=Topic.ELIGIBILITY_DECIDED.value, sls_id=d.sls_id, welfare_group=d.welfare_group,
            eligible=set(d.eligible))}
        payloads: dict[tuple[str, ...], dict] = {}  # one per programme scope among the recipients
        for sub_id in sorted(recipients(matching, told, set(scopes)), key=str):
            scope = scopes[sub_id]
            if scope not in payloads:
                payloads[scope] = {**d.envelope, "data": payload_for(d.data, scope, access)}
            deliveries.append(Delivery(sub_id, d.event_id, Topic.ELIGIBILITY_DECIDED.value, d.family_id,
                                       payloads[scope], d.traceparent))
            if sub_id not in told:
                told.add(sub_id)
                newly_informed.add((sub_id, d.family_id))
    return DeliveryPlan(newest, registry, sorted(newly_informed, key=lambda p: (str(p[0]), p[1])), deliveries)


# ---------------------------------------------------------------- erasure notices


def erasure_notice(*, event_id: str, event_type: str, family_id: str, erasure_id: str, erased_at: str) -> dict:
    """What a subscription told about a family receives when the family is erased (family-erased): that
    every decision it received about the family is withdrawn and to be erased. No personal data: the
    family id the programme already holds, the erasure's id and time; not the reason (a death, say, is
    personal) nor anything of the decisions."""
    return {"event_id": event_id, "event_type": event_type, "subject": family_id, "time": erased_at,
            "data": {"family_id": family_id, "erasure_id": erasure_id, "erased_at": erased_at,
                     "action": "erase", "decisions_withdrawn": True}}


# ---------------------------------------------------------------- members by name (the identity feed)


@dataclass(frozen=True)
class SealedIdentities:
    """One interview's member NIKs as intake sealed them (regsosek.contracts.identities), kept as received."""

    family_id: str
    submission_id: UUID
    sealed: bytes
    kid: str
    members: int
    nik_hashes: tuple[tuple[int, bytes], ...] = ()  # (form row, keyed hash): the member index (DCI search by NIK)


IdentityKey = tuple[str, UUID]  # (family id, submission id) of an identity list


def open_lists(sealed: Mapping[IdentityKey, bytes], ring: Keyring) -> tuple[dict[IdentityKey, dict[int, str]], list[str]]:
    """The identity lists opened (NIKs by form row, per (family, submission)), and the key ids of those
    that did not open (a key dropped too early, an altered row): left out, for the caller to log."""
    opened, failed = {}, []
    for key, blob in sealed.items():
        try:
            opened[key] = parse_identity_plaintext(ring.open(blob, identity_aad(*key)))
        except (CannotOpen, ValueError):
            failed.append(kid_of(blob))
    return opened, failed


def identity_key(payload: dict | None) -> tuple[str, UUID] | None:
    """The (family, submission) whose identity list a queued payload (an event envelope with its
    narrowed `data`) needs: only one carrying member-level decisions (payload_for gives them only to
    programmes granted member_identifiers)."""
    data = (payload or {}).get("data") or {}
    if not data.get("member_decisions") or not data.get("submission_id"):
        return None
    return data["family_id"], UUID(str(data["submission_id"]))


@dataclass(frozen=True)
class NamedBatch:
    """What of a queued batch may be sent now: the payloads to send (member-level decisions with their
    `nik` filled in where the identity list has arrived), or nothing yet (`wait`: the first delivery's
    list has not arrived and it has waited less than the limit). The batch is cut before the first
    later delivery still waiting, so the subscription's order is kept."""

    payloads: list[dict]
    wait: bool


def name_members(rows: Sequence[dict], niks: Mapping[tuple[str, UUID], Mapping[int, str]], *,
                 now: datetime, wait_s: float) -> NamedBatch:
    """Puts each member's NIK into the member-level decisions of queued payloads (pure: `niks` are the
    opened identity lists by (family, submission)). A payload whose list has not arrived waits up to
    `wait_s` from its queueing; after that it is sent with `nik` null (an interview from before the feed,
    or a list dead-lettered): late, never lost."""
    out: list[dict] = []
    for r in rows:
        key = identity_key(r["payload"])
        if key is None:
            out.append(r["payload"])
            continue
        found = niks.get(key)
        if found is None and (now - r["created_at"]).total_seconds() < wait_s:
            return NamedBatch(out, wait=not out)
        out.append({**r["payload"], "data": with_niks(r["payload"]["data"], found or {})})
    return NamedBatch(out, wait=False)


def with_niks(data: dict, niks: Mapping[int, str]) -> dict:
    """A narrowed decision whose member-level decisions carry each member's NIK (`nik`, None for a
    member without one or whose list is missing), by form row."""
    return {**data, "member_decisions": [{**m, "nik": niks.get(m.get("line_no"))} for m in data["member_decisions"]]}
