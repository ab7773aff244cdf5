"""Delivery policy: subscription filters, response outcomes, retry delays, callback safety."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from notify.domain import Filters, Outcome, callback_problem, outcome_of, retry_delay

SLS = "64720100010001"
ELIGIBLE = "id.go.bps.regsosek.eligibility.decided.v1"
CLASSIFIED = "id.go.bps.regsosek.family.classified.v1"


@pytest.mark.parametrize(
    "filters,event_type,sls,group,eligible,expected",
    [
        (Filters(), ELIGIBLE, SLS, 4, set(), True),  # empty filter = everything
        (Filters(event_types=(ELIGIBLE,)), ELIGIBLE, SLS, 2, set(), True),
        (Filters(event_types=(ELIGIBLE,)), CLASSIFIED, SLS, 2, set(), False),
        (Filters(area_prefixes=("6472",)), ELIGIBLE, SLS, 2, set(), True),
        (Filters(area_prefixes=("6471", "647201")), ELIGIBLE, SLS, 2, set(), True),
        (Filters(area_prefixes=("6471",)), ELIGIBLE, SLS, 2, set(), False),
        (Filters(area_prefixes=("64720100010002",)), ELIGIBLE, SLS, 2, set(), False),
        (Filters(welfare_groups=(1, 2)), ELIGIBLE, SLS, 2, set(), True),
        (Filters(welfare_groups=(1, 2)), ELIGIBLE, SLS, 3, set(), False),
        (Filters(programmes=("pkh",)), ELIGIBLE, SLS, 2, {"pkh", "sembako"}, True),
        (Filters(programmes=("pkh", "pip")), ELIGIBLE, SLS, 2, {"pip"}, True),
        (Filters(programmes=("pkh",)), ELIGIBLE, SLS, 2, {"sembako"}, False),
        (Filters(programmes=("pkh",)), ELIGIBLE, SLS, 2, set(), False),
        # every non-empty criterion must hold
        (Filters(("pkh",), ("6472",), (2,), (ELIGIBLE,)), ELIGIBLE, SLS, 2, {"pkh"}, True),
        (Filters(("pkh",), ("6472",), (2,), (ELIGIBLE,)), CLASSIFIED, SLS, 2, {"pkh"}, False),
        (Filters(("pkh",), ("6472",), (2,), (ELIGIBLE,)), ELIGIBLE, "64010100010001", 2, {"pkh"}, False),
        (Filters(("pkh",), ("6472",), (2,), (ELIGIBLE,)), ELIGIBLE, SLS, 1, {"pkh"}, False),
        (Filters(("pkh",), ("6472",), (2,), (ELIGIBLE,)), ELIGIBLE, SLS, 2, {"pip"}, False),
    ],
)
def test_filters_match(filters, event_type, sls, group, eligible, expected):
    assert filters.matches(event_type=event_type, sls_id=sls, welfare_group=group, eligible=eligible) is expected


@pytest.mark.parametrize(
    "status,ack,expected",
    [
        (200, True, Outcome.DELIVERED),
        (202, True, Outcome.DELIVERED),
        (204, True, Outcome.DELIVERED),
        (200, False, Outcome.RETRY),
        (204, False, Outcome.RETRY),
        (500, False, Outcome.RETRY),
        (500, True, Outcome.RETRY),
        (502, False, Outcome.RETRY),
        (503, False, Outcome.RETRY),
        (429, False, Outcome.RETRY),
        (408, False, Outcome.RETRY),
        (None, False, Outcome.RETRY),
        (400, False, Outcome.REFUSED),
        (401, False, Outcome.REFUSED),
        (403, False, Outcome.REFUSED),
        (404, False, Outcome.REFUSED),
        (404, True, Outcome.REFUSED),
        (410, False, Outcome.REFUSED),
        (422, False, Outcome.REFUSED),
    ],
)
def test_outcome_of(status, ack, expected):
    assert outcome_of(status, ack) is expected


# ------------------------------------------------------------------ retry delays

BASE, CAP = 1.0, 60.0


@pytest.mark.parametrize("seed", range(5))
def test_retry_delay_within_bounds(seed):
    rng = random.Random(seed)
    for attempt in range(0, 15):
        bound = min(CAP, BASE * 2 ** max(attempt - 1, 0))
        for _ in range(20):
            d = retry_delay(attempt, BASE, CAP, rng=rng)
            assert 0.0 <= d <= bound <= CAP


def test_retry_delay_is_reproducible_with_a_seed():
    a = [retry_delay(n, BASE, CAP, rng=random.Random(42)) for n in range(1, 8)]
    b = [retry_delay(n, BASE, CAP, rng=random.Random(42)) for n in range(1, 8)]
    assert a == b


def test_retry_delay_jitter_spreads_over_the_window():
    rng = random.Random(7)
    delays = [retry_delay(20, BASE, CAP, rng=rng) for _ in range(500)]
    assert max(delays) > 0.8 * CAP and min(delays) < 0.2 * CAP  # full jitter, not a constant


@pytest.mark.parametrize(
    "retry_after,expected",
    [
        ("30", 30.0),
        (" 45 ", 45.0),
        ("0", None),  # no longer than the jitter: jitter wins
        ("600", CAP),  # capped
    ],
)
def test_retry_after_seconds(retry_after, expected):
    rng = random.Random(1)
    jitter = random.Random(1).uniform(0, BASE)  # attempt 1 window is [0, BASE]
    d = retry_delay(1, BASE, CAP, retry_after=retry_after, rng=rng)
    assert d == (jitter if expected is None else expected)


def test_retry_after_shorter_than_jitter_does_not_shorten_it():
    rng = random.Random(3)
    jitter = random.Random(3).uniform(0, min(CAP, BASE * 2 ** 9))
    assert jitter > 2
    assert retry_delay(10, BASE, CAP, retry_after="1", rng=rng) == jitter


def test_retry_after_http_date():
    when = datetime.now(UTC) + timedelta(seconds=120)
    d = retry_delay(1, BASE, 600.0, retry_after=format_datetime(when, usegmt=True), rng=random.Random(0))
    assert 110 <= d <= 120.5


def test_retry_after_http_date_capped():
    when = datetime.now(UTC) + timedelta(hours=2)
    assert retry_delay(1, BASE, CAP, retry_after=format_datetime(when, usegmt=True), rng=random.Random(0)) == CAP


@pytest.mark.parametrize("value", ["soon", "-5", "", None, format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)])
def test_unusable_or_past_retry_after_falls_back_to_jitter(value):
    expected = random.Random(9).uniform(0, BASE)
    assert retry_delay(1, BASE, CAP, retry_after=value, rng=random.Random(9)) == expected


# ------------------------------------------------------------------ callback safety


@pytest.mark.parametrize(
    "url,resolved",
    [
        ("http://127.0.0.1:9000/hook", ["127.0.0.1"]),
        ("http://localhost/hook", ["127.0.0.1", "::1"]),
        ("https://10.0.0.5/hook", ["10.0.0.5"]),
    ],
)
def test_local_allows_plain_http_and_loopback(url, resolved):
    assert callback_problem(url, resolved, production=False) is None


@pytest.mark.parametrize("production", [False, True])
@pytest.mark.parametrize("url", ["ftp://example.org/x", "file:///etc/passwd", "https://", "example.org/hook",
                                 "javascript:alert(1)"])
def test_non_http_urls_refused_everywhere(url, production):
    assert callback_problem(url, ["93.184.216.34"], production=production) == "callback must be an http(s) URL"


def test_production_refuses_http():
    assert callback_problem("http://example.org/hook", ["93.184.216.34"], production=True) == "callback must use HTTPS"


@pytest.mark.parametrize(
    "addr",
    ["127.0.0.1", "127.1.2.3", "10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.10", "169.254.169.254",
     "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "240.0.0.1"],
)
def test_production_refuses_non_public_addresses(addr):
    problem = callback_problem("https://hooks.example.org/x", [addr], production=True)
    assert problem == f"callback resolves to a non-public address ({addr})"


def test_production_refuses_when_any_resolved_address_is_private():
    problem = callback_problem("https://hooks.example.org/x", ["93.184.216.34", "10.0.0.1"], production=True)
    assert problem is not None and "10.0.0.1" in problem


@pytest.mark.parametrize("resolved", [["93.184.216.34"], ["8.8.8.8", "1.1.1.1"], ["2606:4700:4700::1111"]])
def test_production_accepts_public_addresses(resolved):
    assert callback_problem("https://hooks.example.org/x", resolved, production=True) is None


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b2"])
def test_retry_after_with_non_ascii_digits_falls_back_to_jitter(value):
    # The header comes from the subscriber; httpx decodes b"\xb2" as latin-1 "\u00b2", which
    # str.isdigit() accepts but float() rejects. An unusable hint must be ignored, not raise.
    expected = random.Random(9).uniform(0, BASE)
    assert retry_delay(1, BASE, CAP, retry_after=value, rng=random.Random(9)) == expected


# ---------------------------------------------------------------- the order of a family's decisions


def test_only_a_newer_decision_of_a_family_is_queued():
    from notify.domain import newer_decision

    assert newer_decision(None, 1)
    assert newer_decision(1, 2)
    assert not newer_decision(2, 1)  # an older decision arriving late is never sent after the newer one
    assert not newer_decision(2, 2)  # the same decision again


def test_decisions_without_a_sequence():
    from notify.domain import newer_decision

    assert newer_decision(None, 0)
    assert newer_decision(0, 0)  # as before: in arrival order among themselves
    assert newer_decision(0, 1)
    assert not newer_decision(3, 0)  # older than any sequenced decision


def test_recipients_are_the_matching_subscriptions_and_the_live_ones_told_before():
    from notify.domain import recipients

    assert recipients({"a"}, set(), {"a", "b"}) == {"a"}
    # b was told about the family earlier; this decision no longer matches its filter
    assert recipients(set(), {"b"}, {"a", "b"}) == {"b"}
    # c was told but has been deleted since: nothing goes to it
    assert recipients({"a"}, {"c"}, {"a", "b"}) == {"a"}
    assert recipients(set(), set(), {"a"}) == set()
