"""Delivery policy, pure: which subscriptions an event goes to, how long to wait
before a retry, what a response means, and whether a callback address is safe."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit


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
        if self.programmes and not (eligible & set(self.programmes)):
            return False
        return True


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


def retry_delay(attempt: int, base: float, cap: float, retry_after: str | None = None, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter; a Retry-After header wins when longer."""
    rng = rng or random
    # The exponent is bounded: attempts keep counting through long outages and resumes,
    # and 2.0 ** 1024 would overflow a float.
    delay = rng.uniform(0, min(cap, base * (2.0 ** min(max(attempt - 1, 0), 64))))
    hinted = _retry_after_seconds(retry_after)
    return min(cap, max(delay, hinted)) if hinted is not None else delay


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    v = value.strip()
    if v.isascii() and v.isdigit():
        return float(v)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


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
