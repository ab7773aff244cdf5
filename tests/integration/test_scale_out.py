"""Scale-out, proven on this machine: a few thousand synthetic families through several instances of
every service on a three-broker Kafka cluster (replication factor 3, min.insync.replicas 2), while
the cluster and the fleet change under them.

Runs on the cluster stack only: `make test-cluster` (REGSOSEK_KAFKA_BROKERS=3 scripts/stack.sh up:
scripts/kafka-cluster.sh), which `make test` runs after the single-broker suites.

While the families are being submitted (through intake's HTTP API by devices behind a round-robin
balancer over the live intake instances, each device retrying the same submission through errors):

- verify is scaled from one instance to three, and later back to one;
- one broker is SIGKILLed (its partitions' leadership moves, the in-sync replica sets shrink) and
  started again; later another one;
- every service's instances are restarted one after another (a rolling update: SIGTERM, a new
  instance on the same port, ready, then the next), while consumer groups rebalance around them.

Afterwards (fullrun.check_outcome): every family reached its final state, no decision is wrong
(classify's own rules for each interview), one event per accepted submission and stage on the
topics, no dead letters, every decision reached the subscribed receiver, and each family's events
arrived there in order.

REGSOSEK_SCALE_FAMILIES (default 1500), REGSOSEK_SCALE_SUBMIT_S (default 300), REGSOSEK_SCALE_SEED
and REGSOSEK_SCALE_BUDGET_S (default 1800, a guard against a hang, not a speed requirement) size the
run. Progress goes to stdout (pytest -s).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import httpx
import pytest

from regsosek.topics import Topic
from regsosek_tools.sample import generate

from fullrun import SERVICES, Balancer, Fleet, Run, check_outcome, progress_log, run_sample, subscribe
from itkit import BOOTSTRAP, World, partitions_of, stack_script

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

FAMILIES = int(os.environ.get("REGSOSEK_SCALE_FAMILIES", "1500"))
SUBMIT_S = float(os.environ.get("REGSOSEK_SCALE_SUBMIT_S", "300"))
BUDGET_S = float(os.environ.get("REGSOSEK_SCALE_BUDGET_S", "1800"))
SEED = int(os.environ.get("REGSOSEK_SCALE_SEED", "20221101"))
RECEIVER_SECRET = "scale-out-receiver-secret-" + uuid.uuid4().hex
START = {"intake": 2, "verify": 1, "classify": 2, "notify": 2}
# A broker killed with SIGKILL recovers its logs when it starts again; on a machine shared with other
# work that was seen to take more than the scripts' default 120 s (the JVM alone needed 45 s).
BROKER_START_S = 300
# What happens, in order, spread evenly over the interviews' upload.
STEPS = ("scale verify 3", "kill broker 2", "roll intake", "roll classify", "roll notify", "roll verify",
         "kill broker 3", "scale verify 1")
_log = progress_log("scale-out")


@pytest.fixture
async def fleet(stack):
    assert os.environ.get("REGSOSEK_KAFKA_BROKERS") == "3" and len(BOOTSTRAP.split(",")) == 3, \
        "the scale-out run needs the three-broker cluster: run it with `make test-cluster`"
    world = await World(list(SERVICES)).setup()
    try:
        f = Fleet(world)
        receiver = world.receiver(RECEIVER_SECRET).start()
        await receiver.wait_ready(120)
        for name, count in START.items():
            await f.start(name, count)  # a service's instances join its group together
        await subscribe(f.first("notify").url, receiver, RECEIVER_SECRET, "PKH-SCALE")
        yield f, receiver
    finally:
        try:
            await stack_script("kafka-cluster.sh", "start", timeout=BROKER_START_S + 30,  # whatever happened,
                               env={"REGSOSEK_KAFKA_START_TIMEOUT": str(BROKER_START_S)})  # every broker runs again
        finally:
            await world.teardown()


async def _replication(world: World) -> None:
    """The world's topics have three replicas (the cluster profile), so losing one broker loses nothing."""
    from aiokafka.admin import AIOKafkaAdminClient

    from itkit import kafka_options

    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **kafka_options())
    await admin.start()
    try:
        (described,) = await admin.describe_topics([world.topic(Topic.INTERVIEW_SUBMITTED)])
    finally:
        await admin.close()
    assert all(len(p["replicas"]) == 3 for p in described["partitions"]), described


async def test_scale_out(fleet):
    f, receiver = fleet
    await _replication(f.world)
    assert len(await partitions_of(f.world.topic(Topic.INTERVIEW_SUBMITTED))) >= 3
    try:
        async with asyncio.timeout(BUDGET_S):
            await _scale_out(f, receiver)
    except TimeoutError:
        raise AssertionError(f"the scale-out run took more than its budget of {BUDGET_S:.0f}s "
                             f"(REGSOSEK_SCALE_BUDGET_S); progress is in the output above") from None


async def _step(f: Fleet, what: str) -> None:
    verb, name, arg = (what.split() + [""])[:3]
    if verb == "scale":
        await f.scale(name, int(arg))
    elif verb == "kill":  # "kill broker N": SIGKILL, down long enough for every client to notice, back
        await stack_script("kafka-cluster.sh", "kill", arg)
        await asyncio.sleep(8)
        await stack_script("kafka-cluster.sh", "start", arg, timeout=BROKER_START_S + 30,
                           env={"REGSOSEK_KAFKA_START_TIMEOUT": str(BROKER_START_S)})
    elif verb == "roll":
        for i in range(len(f.live(name))):
            await f.restart(name, i)


async def _scale_out(f: Fleet, receiver) -> None:
    t0 = time.monotonic()
    sample = generate(seed=SEED, families=FAMILIES)
    _log(f"{len(sample.rosters)} rosters, {len(sample.interviews)} interviews on {BOOTSTRAP}; "
         f"instances {START}; steps: {', '.join(STEPS)}")

    during: list[str] = []  # the steps that began while interviews were still being submitted
    begun = asyncio.Condition()

    async def steps(run: Run, t_submit: float) -> None:
        slot = SUBMIT_S * 0.7 / len(STEPS)  # from 10% to 80% of the submissions; a slow step delays the next
        for i, what in enumerate(STEPS):
            await asyncio.sleep(max(0.0, t_submit + SUBMIT_S * 0.1 + slot * i - time.monotonic()))
            if len(run.receipts) < len(sample.interviews):
                during.append(what)
            async with begun:
                begun.notify_all()
            began = time.monotonic()
            await _step(f, what)
            _log(f"step {i + 1}/{len(STEPS)}: {what} in {time.monotonic() - began:.1f}s "
                 f"({len(run.receipts)} interviews accepted so far; instances "
                 f"{ {n: len(f.live(n)) for n in SERVICES} })")

    async def in_step(share: float) -> None:
        # The interviews (10% to 90% of the submission time) keep pace with the steps (10% to 80%): on a
        # loaded machine a broker's restart took 2.5 minutes and a roll 1.5, and without this the later
        # steps began after the last interview, on an idle pipeline. An interview waits until every
        # step due before its time has begun, so each step happens while families still arrive.
        due = sum(1 for i in range(len(STEPS)) if 0.7 * i / len(STEPS) < 0.8 * share)
        async with begun:
            await begun.wait_for(lambda: len(during) >= due)

    async with httpx.AsyncClient(base_url=f.first("intake").url, transport=Balancer(f, "intake"),
                                 timeout=15) as client:
        run = await run_sample(f.world, client, sample, SUBMIT_S, steps, _log, gate=in_step)
        _log(f"submissions and steps done after {time.monotonic() - t0:.0f}s; devices retried {run.retries} times")
        assert f.restarts["intake"] >= 2 and f.restarts["notify"] >= 2 and f.restarts["classify"] >= 2, f.restarts
        assert len(f.live("verify")) == 1
        assert len(during) >= len(STEPS) - 2, f"only {during} happened while families were being submitted"
        summary = await check_outcome(f.world, run, receiver, _log)
    assert not f.died_on_their_own(), "\n".join(f.died_on_their_own())
    _log(f"done in {time.monotonic() - t0:.0f}s: {summary}; restarts {dict(f.restarts)}")
