"""Delivery parts that need no broker or database: retry delays over long outages,
addresses hidden inside IPv6 ones, the production HTTP client's connect-time guard,
batch idempotency keys, and the handler's per-batch subscription cache."""

from __future__ import annotations

import random
from uuid import UUID

import httpx
import pytest

from notify.callbacks import batch_key, callback_problem_now, make_client
from notify.domain import callback_problem, is_public_address, retry_delay
from notify.settings import NotifySettings
from regsosek.standard_webhooks import generate_signing_key


@pytest.mark.parametrize("attempt", [1025, 5000, 10**9])
def test_retry_delay_after_very_many_attempts_stays_within_the_cap(attempt):
    # Attempts keep counting through long outages; 2 ** 1024 overflowed a float before.
    d = retry_delay(attempt, 0.5, 300.0, rng=random.Random(1))
    assert 0.0 <= d <= 300.0


@pytest.mark.parametrize(
    "addr,public",
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),       # NAT64 of a public address
        ("64:ff9b::a00:1", False),        # NAT64 of 10.0.0.1
        ("2002:a00:1::", False),          # 6to4 of 10.0.0.1
        ("2002:7f00:1::", False),         # 6to4 of 127.0.0.1
        ("fe80::1%eth0", False),          # link-local with a zone
        ("100.64.0.1", False),            # carrier-grade NAT
        ("not an address", False),
    ],
)
def test_public_addresses(addr, public):
    assert is_public_address(addr) is public


def test_production_refuses_a_name_that_does_not_resolve():
    assert callback_problem("https://hooks.example.org/x", [], production=True) == "callback host does not resolve"
    assert callback_problem("https://hooks.example.org/x", [], production=False) is None


async def test_subscribe_time_check_resolves_the_name_in_production():
    assert await callback_problem_now("https://localhost:9/hook", True, 5.0) in (
        "callback resolves to a non-public address (127.0.0.1)", "callback resolves to a non-public address (::1)")
    assert await callback_problem_now("https://no-such-host.invalid/hook", True, 5.0) == "callback host does not resolve"
    assert await callback_problem_now("http://localhost:9/hook", False, 5.0) is None


async def test_production_client_refuses_private_addresses_when_it_connects():
    # The guard sits where the connection is made, so a name that changes after the
    # check (DNS rebinding) still cannot reach an internal address.
    async with make_client(NotifySettings(env="production", auth_jwks_url="https://idp.example.go.id/jwks",
                                              auth_issuer="https://idp.example.go.id", auth_audience="regsosek-notify",
                                              webhook_signing_key=generate_signing_key(),
                                              identity_keys="feed1:" + "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=",
                                              nik_lookup_key="n" * 40)) as client:
        for url in ("https://localhost:9/hook", "https://127.0.0.1:9/hook", "https://[::1]:9/hook",
                    "https://10.1.2.3:9/hook"):
            with pytest.raises(httpx.ConnectError, match="non-public address"):
                await client.post(url, content=b"{}")


async def test_local_client_may_call_loopback():
    async with make_client(NotifySettings()) as client:
        with pytest.raises(httpx.ConnectError) as e:  # nothing listens on port 9, but it tried
            await client.post("http://127.0.0.1:9/hook", content=b"{}")
        assert "non-public" not in str(e.value)


def test_batch_key_is_stable_for_the_same_events_and_differs_otherwise():
    rows = [{"event_id": "a"}, {"event_id": "b"}]
    assert batch_key(rows) == batch_key([dict(r) for r in rows])
    assert batch_key(rows) != batch_key(rows[:1]) != batch_key(list(reversed(rows)))
    UUID(batch_key(rows))
