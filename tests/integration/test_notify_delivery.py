"""Notify on the real broker and database, delivering to the reference programme
receiver (regsosek_tools.receiver) as a separate process:

- a receiver that fails at random, is slow, answers 500 and 429 with Retry-After:
  every event arrives at least once, re-sent events carry the same event id, and each
  family's events arrive in order;
- a run of failures suspends the subscription; its queue is kept (and keeps growing),
  and after resume it is delivered in order;
- a 4xx (not 429) makes dead letters without retrying; once fixed they are re-sent;
- waits are times recorded on the subscription (a retry, a hold-off after a broken-off delivery),
  honoured by every instance's due query;
- replay from a point in time re-sends exactly what arrived since then;
- lag per subscription on /metrics and in the subscription's figures;
- production configuration refuses callbacks that resolve to non-public addresses,
  at subscription and at every delivery, and says why in the delivery log;
- the Kafka-native path: a programme's own consumer group (plain aiokafka) and kcat
  read the eligibility-decided events classify wrote, with their CloudEvents headers.

Delivery tests feed eligibility-decided events straight into a notify-only world's
topic (each test filters its own area prefix); the Kafka-native tests run the whole
pipeline.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import os
import random
import re
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from notify.domain import Attempt, Filters, Outcome, RetryPolicy, after_attempt
from notify.store import NotifyStore
from regsosek.auth import Role, Signer, ensure_local_keypair, mint
from regsosek.contracts import EligibilityDecided, ProgrammeDecision
from regsosek.envelope import encode, new_envelope
from regsosek.programmes import PROGRAMME_CODES
from regsosek.standard_webhooks import generate_signing_key
from regsosek.topics import Topic

from itkit import (
    BOOTSTRAP,
    LOG_DIR,
    ServiceProcess,
    Submitter,
    World,
    committed_offsets,
    end_offsets,
    eventually,
    family,
    family_id_of,
    free_port,
    header,
    new_sls_id,
    partitions_of,
    read_topic,
    roster,
)

pytestmark = pytest.mark.integration

ELIGIBILITY_TYPE = "id.go.bps.regsosek.eligibility.decided.v1"
PROGRAMMES = ("pkh", "sembako", "pbi_jkn", "blt_desa", "pip")
SUSPEND_AFTER = 10
# Quick retries so the tests take seconds; the cap stays above the receiver's Retry-After (1 s).
NOTIFY_ENV = {
    "REGSOSEK_RETRY_BASE_S": "0.05",
    "REGSOSEK_RETRY_CAP_S": "1.5",
    "REGSOSEK_RETRY_MAX_S": "1.0",
    "REGSOSEK_DELIVERY_TIMEOUT_S": "1.0",
    "REGSOSEK_DELIVERY_BATCH_SIZE": "8",
    "REGSOSEK_METRICS_REFRESH_S": "0.3",
    "REGSOSEK_SUSPEND_AFTER_FAILURES": str(SUSPEND_AFTER),
}
_districts = itertools.count(random.randint(100, 600))
_receivers = itertools.count(1)


# ---------------------------------------------------------------- helpers


def start_receiver(world: World, secret: str, **env: str) -> ServiceProcess:
    port = free_port()
    p = ServiceProcess("receiver", {"REGSOSEK_HTTP_HOST": "127.0.0.1", "REGSOSEK_HTTP_PORT": str(port),
                                    "REGSOSEK_RECEIVER_SECRET": secret, **env},
                       port, LOG_DIR / f"{world.tag}-receiver-{next(_receivers)}.log")
    world.processes.append(p)
    return p.start()


class Receiver:
    def __init__(self, proc: ServiceProcess) -> None:
        self.proc = proc
        self.client = httpx.AsyncClient(base_url=proc.url, timeout=10)

    async def control(self, **faults) -> None:
        r = await self.client.post("/control", json=faults)
        assert r.status_code == 200, r.text

    async def stats(self) -> dict:
        return (await self.client.get("/stats")).json()

    async def events(self) -> list[dict]:
        """Unique events in the order they first arrived."""
        return (await self.client.get("/events", params={"limit": 100000})).json()["events"]

    async def wait_unique(self, n: int, timeout: float = 60) -> dict:
        async def enough():
            s = await self.stats()
            return s if s["unique"] >= n else None
        return await eventually(enough, timeout=timeout, what=f"{n} unique events at the receiver")


async def new_receiver(world: World, **env: str) -> tuple[Receiver, str]:
    secret = "receiver-secret-" + uuid.uuid4().hex
    proc = start_receiver(world, secret, **env)
    await proc.wait_ready()
    return Receiver(proc), secret


class NotifyApi:
    def __init__(self, url: str, *, subject: str, signer: Signer | None = None, audience: str | None = None) -> None:
        # every programme, in East Kalimantan: each decision whole, as the tests below expect
        tok = mint(signer, subject=subject, role=Role.PROGRAMME, areas=["64"], programmes=list(PROGRAMME_CODES),
                   audience=audience)
        self.client = httpx.AsyncClient(base_url=url, timeout=10, headers={"authorization": f"Bearer {tok}"})

    async def subscribe(self, callback_url: str, secret: str, **filters) -> httpx.Response:
        return await self.client.post("/v1/subscriptions", json={"callback_url": callback_url, "secret": secret,
                                                                 "filters": filters})

    async def get(self, sub_id: str) -> dict:
        r = await self.client.get(f"/v1/subscriptions/{sub_id}")
        assert r.status_code == 200, r.text
        return r.json()

    async def post(self, path: str, body: dict | None = None) -> dict:
        r = await self.client.post(path, json=body)
        assert r.status_code == 200, r.text
        return r.json()

    async def log(self, sub_id: str) -> dict:
        return (await self.client.get(f"/v1/subscriptions/{sub_id}/log", params={"limit": 1000})).json()

    async def deliveries(self, sub_id: str, status: str) -> list[dict]:
        r = await self.client.get(f"/v1/subscriptions/{sub_id}/deliveries", params={"status": status, "limit": 1000})
        return r.json()["deliveries"]


def area() -> str:
    """A district code of its own (7 digits): a test's subscription filters on it."""
    return f"6472{next(_districts) % 1000:03d}"


def families(prefix: str, n: int) -> list[tuple[str, str]]:
    """(sls id, family id) of n families in the district `prefix`."""
    out = []
    for i in range(n):
        sls = f"{prefix}{random.randint(1, 999):03d}{random.randint(1, 9999):04d}"
        out.append((sls, f"{sls}-{i + 1:04d}-001"))
    return out


def decision(sls: str, fid: str, version: int) -> EligibilityDecided:
    group = 1 + (version + len(fid)) % 4
    return EligibilityDecided.model_validate({
        "family_id": fid, "sls_id": sls, "submission_id": str(uuid.uuid4()), "version": version,
        "welfare_group": group, "decile": min(10, 2 * group), "model_version": "pmt-it", "rule_version": "rules-it",
        "decisions": [{"programme": p, "eligible": group <= 2 and i % 2 == version % 2, "rule_version": "rules-it",
                       "reasons": ["integration test"]} for i, p in enumerate(PROGRAMMES)],
        "decided_at": (datetime(2022, 11, 1, tzinfo=UTC) + timedelta(minutes=version)).isoformat(),
    })


async def feed(producer, world: World, fams: list[tuple[str, str]], versions: range) -> list[str]:
    """Each family's decisions, version by version, into the world's eligibility topic
    (keyed by SLS id, as classify writes them). Returns the event ids in order."""
    ids = []
    for v in versions:
        for sls, fid in fams:
            data = decision(sls, fid, v)
            env = new_envelope(data, source="/regsosek/classify", subject=fid)
            await producer.send_and_wait(world.topic(Topic.ELIGIBILITY_DECIDED), encode(data), key=sls.encode(),
                                         headers=env.headers())
            ids.append(env.id)
    return ids


def assert_family_order(events: list[dict]) -> None:
    by_family: dict[str, list[int]] = {}
    for e in events:
        by_family.setdefault(e["family_id"], []).append(e["version"])
    for fid, versions in by_family.items():
        assert versions == sorted(versions), f"{fid}: versions arrived as {versions}"


async def delivered_total(api: NotifyApi, sub_id: str, n: int) -> dict:
    async def done():
        s = await api.get(sub_id)
        return s if s["figures"]["delivered_total"] == n and s["figures"]["pending"] == 0 else None
    return await eventually(done, timeout=60, what=f"notify to record {n} deliveries")


async def metric(proc: ServiceProcess, name: str, sub_id: str) -> float | None:
    async with httpx.AsyncClient(timeout=5) as c:
        text = (await c.get(proc.url + "/metrics")).text
    m = re.search(rf'^{re.escape(name)}{{subscription="{sub_id}"}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else None


async def metric_is(proc: ServiceProcess, name: str, sub_id: str, value: float, timeout: float = 20) -> None:
    async def check():
        return await metric(proc, name, sub_id) == value
    await eventually(check, timeout=timeout, what=f"{name} of {sub_id} to be {value}")


# ---------------------------------------------------------------- worlds


@pytest.fixture(scope="module")
async def notify_world(stack):
    world = await World(["notify"]).setup()
    try:
        (notify,) = await world.start("notify", **NOTIFY_ENV)
        yield world, notify
    finally:
        await world.teardown()


@pytest.fixture
async def subscribed(notify_world):
    """A receiver of its own, subscribed for one fresh district; unsubscribed afterwards."""
    world, notify = notify_world
    receiver, secret = await new_receiver(world, REGSOSEK_RECEIVER_SEED="2022")
    api = NotifyApi(notify.url, subject="PKH-" + uuid.uuid4().hex[:6])
    prefix = area()
    r = await api.subscribe(receiver.proc.url + "/notify", secret, area_prefixes=[prefix])
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    try:
        yield world, notify, api, sub_id, receiver, prefix
    finally:
        await api.client.delete(f"/v1/subscriptions/{sub_id}")
        await asyncio.gather(api.client.aclose(), receiver.client.aclose())
        await receiver.proc.stop()


# ---------------------------------------------------------------- delivery under faults


async def test_random_failures_every_event_arrives_in_family_order(subscribed, producer):
    world, notify, api, sub_id, receiver, prefix = subscribed
    await receiver.control(fail_rate=0.12, fail_after_rate=0.12, status_429_rate=0.08, retry_after_s=1,
                           delay_ms=20, slow_rate=0.05, slow_ms=1500)
    fams = families(prefix, 25)
    ids = await feed(producer, world, fams, range(1, 4))

    await receiver.wait_unique(len(ids), timeout=90)
    # the batch that completed the set may have been answered 500 after it was stored: notify keeps it
    # pending and sends it again, so the figures are read once notify has nothing pending
    sub = await delivered_total(api, sub_id, len(ids))
    stats = await receiver.stats()
    events = await receiver.events()
    assert {e["event_id"] for e in events} == set(ids)
    assert stats["unique"] == len(ids), "an event arrived under a second id"
    assert stats["received"] == stats["unique"] + stats["duplicates"]
    assert stats["duplicates"] >= stats["injected_faults"].get("500_after_processing", 0)
    assert stats["out_of_order"] == 0 and stats["rejected"] == 0
    assert_family_order(events)

    assert sub["status"] == "active"
    figures = sub["figures"]
    assert figures["pending"] == 0 and figures["dead"] == 0 and figures["delivered_total"] == len(ids)
    assert figures["failed_attempts_total"] > 0, f"no delivery failed: the faults were not exercised ({stats})"
    log = await api.log(sub_id)
    assert {a["outcome"] for a in log["attempts"]} >= {"delivered", "retry"}
    await metric_is(notify, "regsosek_notify_pending", sub_id, 0.0)


async def test_429_retry_after_is_honoured_and_a_slow_receiver_gets_duplicates_with_the_same_ids(
        subscribed, producer):
    world, notify, api, sub_id, receiver, prefix = subscribed
    await receiver.control(status_429_rate=1.0, retry_after_s=1)
    fams = families(prefix, 3)
    ids = await feed(producer, world, fams, range(1, 2))

    async def rate_limited_twice():
        attempts = (await api.log(sub_id))["attempts"]
        return attempts if sum(a["status_code"] == 429 for a in attempts) >= 2 else None

    attempts = list(reversed(await eventually(rate_limited_twice, timeout=30, what="two 429 answers")))
    for earlier, later in itertools.pairwise(attempts):
        if earlier["status_code"] == 429:
            gap = datetime.fromisoformat(later["at"]) - datetime.fromisoformat(earlier["at"])
            assert gap >= timedelta(seconds=1), f"re-sent {gap} after a 429 with Retry-After: 1"

    # Slower than notify waits (1 s): notify gives up and re-sends; the receiver still
    # takes the first copy when it wakes, so the re-sent events arrive twice.
    await receiver.control(status_429_rate=0.0, slow_rate=1.0, slow_ms=1500)

    async def timed_out():
        return any((a["error"] or "").startswith("no answer within") for a in (await api.log(sub_id))["attempts"])

    await eventually(timed_out, timeout=30, what="a delivery attempt that timed out")
    await receiver.control(slow_rate=0.0)
    await receiver.wait_unique(len(ids), timeout=30)

    async def duplicated():
        s = await receiver.stats()
        return s if s["duplicates"] >= 1 else None

    stats = await eventually(duplicated, timeout=30, what="the slow copy to arrive after the re-sent one")
    assert stats["unique"] == len(ids) and {e["event_id"] for e in await receiver.events()} == set(ids)
    assert stats["received"] == stats["unique"] + stats["duplicates"]
    assert (await api.get(sub_id))["status"] == "active"


async def test_4xx_makes_dead_letters_without_retry_and_they_are_resent_once_fixed(subscribed, producer):
    world, notify, api, sub_id, receiver, prefix = subscribed
    await receiver.control(status_4xx_rate=1.0, status_4xx=422)
    fams = families(prefix, 2)
    ids = await feed(producer, world, fams, range(1, 3))

    async def all_dead():
        dead = await api.deliveries(sub_id, "dead")
        return dead if len(dead) == len(ids) else None

    dead = await eventually(all_dead, timeout=30, what="every delivery to become a dead letter")
    assert {d["event_id"] for d in dead} == set(ids)
    assert all(d["attempts"] == 1 and d["last_status"] == 422 for d in dead), dead  # no retry
    attempts = (await api.log(sub_id))["attempts"]
    assert attempts and all(a["status_code"] == 422 and a["outcome"] == "refused" for a in attempts)
    sub = await api.get(sub_id)
    assert sub["status"] == "active" and sub["figures"]["dead"] == len(ids) and sub["figures"]["pending"] == 0
    await metric_is(notify, "regsosek_notify_dead", sub_id, float(len(ids)))
    assert (await receiver.stats())["unique"] == 0

    await receiver.control(status_4xx_rate=0.0)
    assert (await api.post(f"/v1/subscriptions/{sub_id}/redeliver", {"dead_letters": True}))["requeued"] == len(ids)
    await receiver.wait_unique(len(ids))
    events = await receiver.events()
    assert {e["event_id"] for e in events} == set(ids)
    assert_family_order(events)
    assert await api.deliveries(sub_id, "dead") == []


async def test_suspension_keeps_the_queue_and_resume_delivers_it_in_order(subscribed, producer):
    world, notify, api, sub_id, receiver, prefix = subscribed
    await receiver.control(fail_rate=1.0)
    fams = families(prefix, 3)
    ids = await feed(producer, world, fams, range(1, 3))

    async def suspended():  # with every event queued (the last may be taken after the suspension)
        s = await api.get(sub_id)
        return s if s["status"] == "suspended" and s["figures"]["pending"] == len(ids) else None

    sub = await eventually(suspended, timeout=60, what="the subscription to be suspended with every event queued")
    assert sub["consecutive_failures"] >= SUSPEND_AFTER
    assert sub["figures"]["dead"] == 0
    await metric_is(notify, "regsosek_notify_suspended", sub_id, 1.0)

    # Suspended, it keeps taking events into its queue; the lag shows it.
    ids += await feed(producer, world, fams, range(3, 5))
    await metric_is(notify, "regsosek_notify_pending", sub_id, float(len(ids)))
    attempts_when_suspended = len((await api.log(sub_id))["attempts"])
    assert (await api.get(sub_id))["figures"]["pending"] == len(ids)
    assert (await receiver.stats())["unique"] == 0

    await receiver.control(fail_rate=0.0)
    resumed = await api.post(f"/v1/subscriptions/{sub_id}/resume")
    assert resumed["status"] == "active" and resumed["consecutive_failures"] == 0
    await receiver.wait_unique(len(ids))
    events = await receiver.events()
    assert {e["event_id"] for e in events} == set(ids)
    assert_family_order(events)
    assert [e["version"] for e in events if e["family_id"] == fams[0][1]] == [1, 2, 3, 4]
    assert len((await api.log(sub_id))["attempts"]) > attempts_when_suspended
    await metric_is(notify, "regsosek_notify_pending", sub_id, 0.0)
    await metric_is(notify, "regsosek_notify_suspended", sub_id, 0.0)


async def test_waits_are_recorded_on_the_subscription_for_every_instance_to_honour(notify_world):
    """The store's side of domain.after_attempt and of a broken-off delivery, on the real database
    (notify running beside it, a subscription of the test's own that notify cannot take meanwhile):
    a hold-off keeps the subscription from being due for any instance and gives the lease back, but
    leaves another instance's lease alone; an attempt's record suspends only an active subscription
    and keeps its deliveries queued."""
    world, _ = notify_world
    conn = await asyncpg.connect(world.dsn("notify"), timeout=10)
    store, sub_id, mine, other = NotifyStore(conn), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    try:
        sub, problem = await store.create_subscription(
            sub_id=sub_id, owner="PKH-WAITS", callback_url="http://127.0.0.1:9/hook", secret=None,
            signature="ed25519", scope=("pkh",), filters=Filters(), limit_problem=lambda counts: None)
        assert sub is not None and problem is None
        await conn.execute("update subscriptions set lease_owner = $2, lease_until = now() + interval '1 minute' "
                           "where id = $1", sub_id, mine)  # as taken by this worker: notify leaves it alone
        await conn.execute("insert into deliveries (subscription_id, event_id, event_type, family_id, payload) "
                           "values ($1, $2, $3, 'F-WAITS', '{}'::jsonb)", sub_id, str(uuid.uuid4()), ELIGIBILITY_TYPE)

        await store.hold_off(sub_id, mine, timedelta(hours=1))
        row = await conn.fetchrow("select next_attempt_at > now() + interval '59 minutes' later, lease_owner "
                                  "from subscriptions where id = $1", sub_id)
        assert row["later"] and row["lease_owner"] is None
        assert sub_id not in await store.due_subscriptions(1000)
        assert await store.claim(sub_id, other, timedelta(minutes=1)) is None  # no instance may take it yet

        await conn.execute("update subscriptions set next_attempt_at = now(), lease_owner = $2, "
                           "lease_until = now() + interval '1 minute' where id = $1", sub_id, other)
        await store.hold_off(sub_id, mine, timedelta(hours=1))  # another instance holds it now: left alone
        row = await conn.fetchrow("select next_attempt_at <= now() due, lease_owner from subscriptions "
                                  "where id = $1", sub_id)
        assert row["due"] and row["lease_owner"] == other

        policy = RetryPolicy(0.05, 1.0, suspend_after=1)
        failed = Attempt(Outcome.RETRY, 503, "HTTP 503")
        ids = [r["id"] for r in await store.pending_batch(sub_id, 10)]
        for status, expected in (("paused", "paused"), ("active", "suspended")):
            await conn.execute("update subscriptions set status = $2 where id = $1", sub_id, status)
            async with conn.transaction():
                state = await store.attempt_state(sub_id, ids)
                record = after_attempt(failed, ids, state, policy, now=datetime.now(UTC))
                await store.save_attempt(sub_id, mine, str(uuid.uuid4()), len(ids), 1.0, failed, record)
            row = await conn.fetchrow("select status, consecutive_failures, next_attempt_at > now() - interval "
                                      "'1 second' waits, lease_owner from subscriptions where id = $1", sub_id)
            assert (row["status"], row["waits"], row["lease_owner"]) == (expected, True, other)  # not this one's
            assert row["consecutive_failures"] == state.failures + 1
        assert [r["status"] for r in await store.deliveries_of(sub_id, "pending", 10)] == ["pending"]
        assert (await store.deliveries_of(sub_id, "pending", 10))[0]["attempts"] == 2
    finally:
        await conn.execute("update subscriptions set status = 'deleted' where id = $1", sub_id)
        await conn.close()


async def test_replay_from_a_point_in_time_resends_exactly_what_came_after_it(subscribed, producer):
    world, notify, api, sub_id, receiver, prefix = subscribed
    fams = families(prefix, 3)
    before = await feed(producer, world, fams, range(1, 2))
    await delivered_total(api, sub_id, len(before))  # recorded by notify, not only taken by the receiver
    since = await world.fetchval("notify", "select now()")
    after = await feed(producer, world, fams, range(2, 4))
    await delivered_total(api, sub_id, len(before) + len(after))

    await receiver.control(reset=True)  # the programme lost what it took since `since`
    r = await api.post(f"/v1/subscriptions/{sub_id}/redeliver", {"since": since.isoformat()})
    assert r["requeued"] == len(after)
    await receiver.wait_unique(len(after))
    events = await receiver.events()
    assert {e["event_id"] for e in events} == set(after)
    assert_family_order(events)
    assert [e["version"] for e in events if e["family_id"] == fams[1][1]] == [2, 3]


async def test_a_programme_hears_when_a_family_it_was_told_about_stops_matching_its_filter(notify_world, producer):
    """A subscription filtered by programme gets a family's decision while the family is eligible for
    it, and the later decision that withdraws it too, although that one no longer matches the filter;
    families it was never told about stay out."""
    world, notify = notify_world
    receiver, secret = await new_receiver(world, REGSOSEK_RECEIVER_SEED="2022")
    api = NotifyApi(notify.url, subject="PKH-" + uuid.uuid4().hex[:6])
    prefix = area()
    r = await api.subscribe(receiver.proc.url + "/notify", secret, area_prefixes=[prefix], programmes=["pkh"])
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    try:
        (told, never) = families(prefix, 2)

        async def send(sls: str, fid: str, seq: int, pkh: bool) -> str:
            data = decision(sls, fid, seq).model_copy(update={"decision_seq": seq, "decisions": [
                ProgrammeDecision(programme=p, eligible=pkh and p == "pkh", rule_version="rules-it",
                                  reasons=["integration test"]) for p in PROGRAMMES]})
            env = new_envelope(data, source="/regsosek/classify", subject=fid)
            await producer.send_and_wait(world.topic(Topic.ELIGIBILITY_DECIDED), encode(data), key=sls.encode(),
                                         headers=env.headers())
            return env.id

        eligible = await send(*told, 1, True)
        withdrawn = await send(*told, 2, False)
        ignored = await send(*never, 1, False)
        last = await send(*never, 2, True)  # becomes eligible: from now on it is told
        await delivered_total(api, sub_id, 3)
        events = await receiver.events()
        assert [e["event_id"] for e in events if e["family_id"] == told[1]] == [eligible, withdrawn]
        assert [e["event_id"] for e in events if e["family_id"] == never[1]] == [last]
        assert ignored not in {e["event_id"] for e in events}
    finally:
        await api.client.delete(f"/v1/subscriptions/{sub_id}")
        await asyncio.gather(api.client.aclose(), receiver.client.aclose())
        await receiver.proc.stop()


async def test_lag_per_subscription_on_metrics_and_in_its_figures(subscribed, producer):
    world, notify, api, sub_id, receiver, prefix = subscribed
    paused = await api.post(f"/v1/subscriptions/{sub_id}/pause")
    assert paused["status"] == "paused"
    ids = await feed(producer, world, families(prefix, 5), range(1, 2))

    await metric_is(notify, "regsosek_notify_pending", sub_id, float(len(ids)))

    async def lagging():
        f = (await api.get(sub_id))["figures"]
        return f if f["pending"] == len(ids) and f["lag_seconds"] > 0 else None

    figures = await eventually(lagging, timeout=20, what="the figures to show the queue")
    assert figures["oldest_pending_at"] is not None and figures["delivered_total"] == 0
    assert (await metric(notify, "regsosek_notify_oldest_pending_seconds", sub_id)) > 0
    assert (await receiver.stats())["unique"] == 0

    await api.post(f"/v1/subscriptions/{sub_id}/resume")
    await receiver.wait_unique(len(ids))
    await metric_is(notify, "regsosek_notify_pending", sub_id, 0.0)
    await metric_is(notify, "regsosek_notify_oldest_pending_seconds", sub_id, 0.0)

    figures = (await delivered_total(api, sub_id, len(ids)))["figures"]
    assert figures["pending"] == 0 and figures["lag_seconds"] == 0 and figures["next_attempt_at"] is None
    assert figures["attempts_total"] >= 1 and figures["last_attempt"]["outcome"] == "delivered"
    assert figures["last_attempt"]["status_code"] == 200 and figures["latency_ms_last_100"]["p50"] > 0

    # Unsubscribed: its series leave /metrics.
    assert (await api.client.delete(f"/v1/subscriptions/{sub_id}")).status_code == 200

    async def gone():
        return await metric(notify, "regsosek_notify_pending", sub_id) is None

    await eventually(gone, timeout=20, what="the unsubscribed subscription's series to go")


# ---------------------------------------------------------------- callback safety in production


@pytest.fixture(scope="module")
async def production_world(stack, tmp_path_factory):
    world = await World(["notify"]).setup()
    # a stand-in identity provider: its own key pair and issuer, its JWK Set as a file
    idp_dir = tmp_path_factory.mktemp("idp")
    signer = dataclasses.replace(ensure_local_keypair(idp_dir), issuer="https://idp.regsosek.test")
    try:
        (notify,) = await world.start("notify", REGSOSEK_ENV="production",
                                      REGSOSEK_AUTH_JWKS_FILE=str(idp_dir / "jwks.json"),
                                      REGSOSEK_AUTH_ISSUER=signer.issuer, REGSOSEK_AUTH_AUDIENCE="regsosek-notify",
                                      REGSOSEK_WEBHOOK_SIGNING_KEY=generate_signing_key(),
                                      REGSOSEK_IDENTITY_KEYS="feed1:" + base64.b64encode(os.urandom(32)).decode(),
                                      REGSOSEK_NIK_LOOKUP_KEY=base64.b64encode(os.urandom(48)).decode(),
                                      **{**NOTIFY_ENV, "REGSOSEK_SUSPEND_AFTER_FAILURES": "3"})
        yield world, notify, signer
    finally:
        await world.teardown()


async def test_production_refuses_callbacks_that_resolve_to_private_addresses(production_world, producer):
    world, notify, signer = production_world
    receiver, secret = await new_receiver(world)
    api = NotifyApi(notify.url, subject="BLT-PROD", signer=signer, audience="regsosek-notify")
    port = receiver.proc.port

    r = await api.subscribe(f"http://localhost:{port}/notify", secret)
    assert r.status_code == 422 and "HTTPS" in r.text
    for url in (f"https://localhost:{port}/notify", "https://10.20.30.40/notify", "https://169.254.169.254/hook"):
        r = await api.subscribe(url, secret)
        assert r.status_code == 422 and "non-public address" in r.text, (url, r.text)

    # A subscription made while its name still pointed at a public address; the name now
    # resolves to this machine. Delivery checks the name again and refuses.
    sub_id = uuid.uuid4()
    prefix = area()
    await world.fetch("notify", "insert into subscriptions (id, owner, callback_url, secret, area_prefixes, "
                                "event_types) values ($1, 'BLT-PROD', $2, $3, $4, $5)",
                      sub_id, f"https://localhost:{port}/notify", secret, [prefix], ["eligibility-decided"])
    ids = await feed(producer, world, families(prefix, 2), range(1, 2))

    async def refused():
        log = await api.log(str(sub_id))
        return log if log["attempts"] else None

    log = await eventually(refused, timeout=30, what="a refused delivery attempt in the log")
    for a in log["attempts"]:
        assert a["status_code"] is None and a["outcome"] == "retry"
        assert re.fullmatch(r"callback resolves to a non-public address \((127\.0\.0\.1|::1)\)", a["error"]), a
    assert log["pending"] == len(ids)

    async def suspended():
        s = await api.get(str(sub_id))
        return s if s["status"] == "suspended" else None

    sub = await eventually(suspended, timeout=30, what="the refused subscription to be suspended")
    assert sub["figures"]["pending"] == len(ids)  # nothing dropped
    assert "non-public address" in sub["figures"]["last_attempt"]["error"]
    stats = await receiver.stats()
    assert stats["messages"] == 0 and stats["rejected"] == 0, "the private callback was called"
    await asyncio.gather(api.client.aclose(), receiver.client.aclose())


# ---------------------------------------------------------------- the Kafka-native path


PIPELINE = ("intake", "verify", "classify", "notify")
PIPELINE_FAMILIES = 6


@pytest.fixture(scope="module")
async def pipeline(stack):
    """Intake → verify → classify → notify with a flaky receiver subscribed, and a few
    families decided; yields once their eligibility events are in the topic."""
    world = await World(list(PIPELINE)).setup()
    try:
        started = await asyncio.gather(world.start(*PIPELINE[:3]), world.start("notify", **NOTIFY_ENV))
        procs = dict(zip(PIPELINE, [*started[0], *started[1]], strict=True))
        receiver, secret = await new_receiver(world, REGSOSEK_RECEIVER_FAIL_RATE="0.2",
                                              REGSOSEK_RECEIVER_FAIL_AFTER_RATE="0.2", REGSOSEK_RECEIVER_SEED="6")
        api = NotifyApi(procs["notify"].url, subject="PKH-PIPELINE")
        r = await api.subscribe(receiver.proc.url + "/notify", secret)
        assert r.status_code == 201, r.text

        sls = new_sls_id()
        pairs = [family(sls, b) for b in range(1, PIPELINE_FAMILIES + 1)]
        async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=10) as client:
            submitter = Submitter(client)
            await submitter.submit("/v1/rosters", roster(sls, [e for e, _ in pairs]), retry_for=30)
            for _, iv in pairs:
                await submitter.submit("/v1/interviews", iv, retry_for=30)
        fids = {family_id_of(iv) for _, iv in pairs}
        topic = world.topic(Topic.ELIGIBILITY_DECIDED)

        async def decided():
            records = await read_topic(topic)
            return records if {header(r, "ce_subject") for r in records} >= fids else None

        records = await eventually(decided, timeout=90, interval=0.5, what="eligibility decisions for every family")
        yield world, procs, receiver, topic, fids, records
        await asyncio.gather(api.client.aclose(), receiver.client.aclose())
    finally:
        await world.teardown()


def assert_cloud_event(headers: dict[str, str], key: str | None, value: bytes, fids: set[str] | None) -> str:
    for h in ("ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time", "ce_subject", "content-type",
              "traceparent"):
        assert headers.get(h), f"header {h} missing: {headers}"
    assert headers["ce_type"] == ELIGIBILITY_TYPE and headers["ce_specversion"] == "1.0"
    assert headers["content-type"] == "application/json"
    assert headers["ce_source"] == "/regsosek/classify"
    data = EligibilityDecided.model_validate_json(value, extra="ignore")
    assert data.family_id == headers["ce_subject"] and (fids is None or data.family_id in fids)
    assert key == data.sls_id, "records are keyed by SLS id"
    datetime.fromisoformat(headers["ce_time"])
    return headers["ce_id"]


async def test_programme_reads_eligibility_with_its_own_consumer_group(pipeline):
    world, procs, receiver, topic, fids, records = pipeline
    group = world.prefix + "programme-pkh-direct"
    expected_ids = {header(r, "ce_id") for r in records}

    async def consume(until: int) -> list:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        got = []
        try:
            async def enough():
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(batch)
                return len(got) >= until
            await eventually(enough, timeout=60, interval=0, what=f"{until} records for group {group}")
            await consumer.commit()  # after the programme has stored them
        finally:
            await consumer.stop()
        return got

    got = await consume(len(records))
    ids = {assert_cloud_event({k: v.decode() for k, v in r.headers}, r.key.decode(), r.value, fids) for r in got}
    assert ids == expected_ids and len(got) == len(records)
    tps = [TopicPartition(topic, p) for p in await partitions_of(topic)]
    ends = {tp: o for tp, o in (await end_offsets(tps)).items() if o > 0}
    assert {tp: o for tp, o in (await committed_offsets(group)).items() if o > 0} == ends

    # Notify's own group reads the same events independently of the programme's.
    async def notify_caught_up():
        committed = await committed_offsets(world.group("notify"))
        return {tp: o for tp, o in committed.items() if tp.topic == topic and o > 0} == ends

    await eventually(notify_caught_up, timeout=30, what="notify's group to commit the same offsets")

    # The group resumes where it committed: a newly decided family is the next thing it reads.
    sls = new_sls_id()
    entry, iv = family(sls, 1)
    async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=10) as client:
        submitter = Submitter(client)
        await submitter.submit("/v1/rosters", roster(sls, [entry]), retry_for=30)
        await submitter.submit("/v1/interviews", iv, retry_for=30)
    (newer,) = await consume(1)
    assert header(newer, "ce_subject") == family_id_of(iv)
    assert_cloud_event({k: v.decode() for k, v in newer.headers}, newer.key.decode(), newer.value,
                       {family_id_of(iv)})


async def test_kcat_reads_eligibility_with_cloudevents_headers(pipeline):
    world, procs, receiver, topic, fids, records = pipeline
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed: run `bash scripts/bootstrap.sh` as root (it runs apt-get install -y kcat), "
                    "or install the Debian package kcat yourself")
    proc = await asyncio.create_subprocess_exec(kcat, "-b", BOOTSTRAP, "-C", "-t", topic, "-o", "beginning", "-e",
                                                "-J", "-q", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, f"kcat failed ({proc.returncode}): {err.decode(errors='replace')}"
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert len(lines) >= len(records), err.decode(errors="replace")
    ids = set()
    for rec in lines:
        assert rec["topic"] == topic
        flat = rec["headers"]  # kcat -J: [name, value, name, value, ...]
        headers = dict(zip(flat[::2], flat[1::2], strict=True))
        ids.add(assert_cloud_event(headers, rec["key"], rec["payload"].encode(), None))
    assert ids >= {header(r, "ce_id") for r in records}


async def test_pipeline_receiver_gets_every_decision_once_after_dedup(pipeline):
    world, procs, receiver, topic, fids, records = pipeline
    expected = {header(r, "ce_id") for r in records}
    await receiver.wait_unique(len(expected), timeout=60)
    events = await receiver.events()
    assert {e["event_id"] for e in events} >= expected
    assert {e["family_id"] for e in events} >= fids
    stats = await receiver.stats()
    assert stats["rejected"] == 0 and stats["out_of_order"] == 0
    assert stats["received"] == stats["unique"] + stats["duplicates"]
