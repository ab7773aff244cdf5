"""The long crash run: a few thousand synthetic families through the whole pipeline on the real
broker and database while everything around them fails.

While the families are being submitted (rosters first, then the interviews, through intake's HTTP
API as the officers' devices would, each device retrying the same submission through errors):

- every service (intake, verify, classify, notify) is SIGKILLed twice, spread over the run, and
  started again;
- the Kafka broker is SIGKILLed once and started again (scripts/kafka.sh);
- PostgreSQL is stopped in immediate mode (crash recovery) once and started again.

Afterwards:

- no family is lost: each reaches its final state in intake's status view ("decided" with the
  delivery recorded, or "flagged") and its decision is on the topics;
- no decision is wrong: a verified family's eligibility, welfare group and decile are what classify's
  own pure rules give for its interview with the shipped model, lines and rules; a flagged family is
  eligible for nothing; verification outcomes and flag reasons are what the sample generator intended;
- one accepted submission is one event at every stage, however often the devices retried and
  whatever crashed;
- every decision reached the subscribed reference receiver, and each family's events arrived there
  in order (by `decision_seq` when the events carry one, else by `version` / `decided_at`).

REGSOSEK_CRASH_FAMILIES (default 2000), REGSOSEK_CRASH_SUBMIT_S (default 180: how long the
submissions, and so the faults, are spread over) and REGSOSEK_CRASH_SEED size the run;
REGSOSEK_CRASH_BUDGET_S (default 420) bounds it. Progress goes to stdout (pytest -s).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from contextlib import suppress

import httpx
import pytest

from regsosek_tools.sample import generate

from fullrun import SERVICES, Fleet, Run, check_outcome, progress_log, run_sample, subscribe
from itkit import World, broker_pid, eventually, stack_script, start_broker, stop_broker

pytestmark = pytest.mark.integration

FAMILIES = int(os.environ.get("REGSOSEK_CRASH_FAMILIES", "2000"))
SUBMIT_S = float(os.environ.get("REGSOSEK_CRASH_SUBMIT_S", "180"))
BUDGET_S = float(os.environ.get("REGSOSEK_CRASH_BUDGET_S", "420"))  # the whole run, set-up to last assertion
SEED = int(os.environ.get("REGSOSEK_CRASH_SEED", "20221015"))
RECEIVER_SECRET = "crash-run-receiver-secret-" + uuid.uuid4().hex
# The faults, in order, spread evenly over the submissions.
FAULTS = ("verify", "intake", "classify", "notify", "broker", "verify", "classify", "postgres", "notify", "intake")
_log = progress_log("crash-run")


@pytest.fixture
async def pipeline(stack):
    world = await World(list(SERVICES)).setup()
    try:
        fleet = Fleet(world)
        receiver = world.receiver(RECEIVER_SECRET).start()
        await asyncio.gather(receiver.wait_ready(120), *(fleet.start(n) for n in SERVICES))
        await subscribe(fleet.first("notify").url, receiver, RECEIVER_SECRET, "PKH-CRASH")
        yield fleet, receiver
    finally:
        try:
            # Whatever happened, the broker and the database are left running for the next tests.
            if broker_pid() is None:
                with suppress(Exception):
                    await start_broker()
            with suppress(Exception):
                await stack_script("postgres.sh", "start")
        finally:
            await world.teardown()


async def test_crash_run(pipeline):
    started = time.monotonic()
    try:
        async with asyncio.timeout(BUDGET_S):
            await _crash_run(*pipeline)
    except TimeoutError:
        raise AssertionError(f"the crash run took more than its budget of {BUDGET_S:.0f}s "
                             f"(REGSOSEK_CRASH_BUDGET_S); progress is in the output above") from None
    _log(f"whole test body {time.monotonic() - started:.0f}s")


async def _crash_run(fleet: Fleet, receiver) -> None:
    t0 = time.monotonic()
    sample = generate(seed=SEED, families=FAMILIES)
    _log(f"{len(sample.rosters)} rosters, {len(sample.interviews)} interviews; faults: {', '.join(FAULTS)}")

    async def faults(run: Run, t_submit: float) -> None:
        # Spread over the interviews' upload (10%-90% of SUBMIT_S), each at a jittered point of its slot.
        slot = SUBMIT_S * 0.8 / len(FAULTS)
        rng = random.Random(SEED)
        for i, what in enumerate(FAULTS):
            at = t_submit + SUBMIT_S * 0.1 + slot * (i + 0.5) + rng.uniform(-slot / 4, slot / 4)
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            began = time.monotonic()
            if what == "broker":
                await stop_broker(kill=True)
                await asyncio.sleep(3)  # down long enough for every client to notice
                await start_broker()
            elif what == "postgres":
                failed_before = run.retries
                await stack_script("postgres.sh", "stop", "--mode", "immediate")
                try:
                    await eventually(lambda before=failed_before: run.retries > before, timeout=10, interval=0.1,
                                     what="a device to feel the database outage")
                except AssertionError:
                    pass  # between uploads: the services felt it anyway
                finally:
                    await stack_script("postgres.sh", "start")
            else:
                await fleet.crash(what)
            _log(f"fault {i + 1}/{len(FAULTS)}: {what} down and back in {time.monotonic() - began:.1f}s "
                 f"({len(run.receipts)} interviews accepted so far)")

    async with httpx.AsyncClient(base_url=fleet.first("intake").url, timeout=15) as client:
        run = await run_sample(fleet.world, client, sample, SUBMIT_S, faults, _log)
        assert all(fleet.crashes[s] >= 2 for s in SERVICES), fleet.crashes
        _log(f"submissions and faults done after {time.monotonic() - t0:.0f}s; devices retried {run.retries} times")
        assert run.retries > 0, "no device ever had to retry: the faults did not hit the submissions"
        summary = await check_outcome(fleet.world, run, receiver, _log)
    # the services are all still there (none died on its own)
    assert not fleet.died_on_their_own(), "\n".join(fleet.died_on_their_own())
    _log(f"done in {time.monotonic() - t0:.0f}s: {summary}; crashes {dict(fleet.crashes)}")
