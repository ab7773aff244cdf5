"""Intake with several worker processes on one port (REGSOSEK_HTTP_WORKERS): every worker answers
requests, exactly one of them publishes the outbox (the relay's advisory lock), every accepted
submission is published exactly once whichever worker took it, and a repeated submission gets the
original receipt (or 409 for different content) from whichever worker answers. And a submission
that waits for its SLS's erasure lock while the erasure commits is refused, not stored (intake
reads its state in the statement that takes the lock, with a snapshot from before the wait)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from regsosek.messaging.relay import RELAY_LOCK
from regsosek.topics import Topic

from itkit import World, eventually, family, family_id_of, header, new_sls_id, read_topic, roster, token

pytestmark = pytest.mark.integration

WORKERS = 2
SUBMISSIONS = 24


@pytest.fixture(scope="module")
async def intake_workers(stack):
    world = await World(["intake"]).setup()
    try:
        intake = world.process("intake", REGSOSEK_HTTP_WORKERS=str(WORKERS)).start()
        await intake.wait_ready(180)  # two processes import and start on a shared machine
        yield world, intake
    finally:
        await world.teardown()


def worker_pids(parent: int) -> list[int]:
    """The uvicorn worker processes under the service's process (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


async def relay_leader_seen(base: str, timeout: float = 60) -> set[float]:
    """regsosek_relay_leader as answered on fresh connections. The workers share one listening
    socket and the kernel hands a connection to whichever worker accepts first; an idle worker
    accepts every pending connection in one go, so sequential probes can all reach the same one.
    Probes are therefore sent from several connections at once: while one worker is busy
    answering, the other accepts."""
    seen: set[float] = set()
    errors: list[BaseException] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            try:
                async with httpx.AsyncClient(base_url=base, timeout=10) as c:  # a new connection each time
                    text = (await c.get("/metrics")).text
            except httpx.TransportError as e:  # kept for the failure's message; the probe goes on
                errors.append(e)
                await asyncio.sleep(0.1)
                continue
            leader = [line for line in text.splitlines() if line.startswith("regsosek_relay_leader{")]
            seen.add(float(leader[0].rsplit(" ", 1)[1]) if leader else 0.0)
            if seen == {0.0, 1.0}:
                done.set()

    probes = [asyncio.create_task(probe()) for _ in range(16)]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
    finally:
        done.set()
        await asyncio.gather(*probes)
    assert seen == {0.0, 1.0} or not errors, f"probes failed: {errors[:1]!r} ({len(errors)} in all); seen {seen}"
    return seen


async def test_workers_share_the_port_one_relay_publishes_each_submission_once(intake_workers):
    world, intake = intake_workers
    assert len(worker_pids(intake._proc.pid)) == WORKERS
    base = f"http://127.0.0.1:{world.ports['intake']}"
    sls = new_sls_id()
    officer = {"authorization": f"Bearer {token('officer', 'OFC-IT', (sls,))}"}
    families = [family(sls, i) for i in range(1, SUBMISSIONS + 1)]

    async def post(path: str, doc: dict) -> httpx.Response:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:  # own connection: spread over the workers
            return await c.post(path, json=doc, headers=officer)

    assert (await post("/v1/rosters", roster(sls, [e for e, _ in families]))).status_code == 202
    first = await asyncio.gather(*(post("/v1/interviews", iv) for _, iv in families))
    assert [r.status_code for r in first] == [202] * SUBMISSIONS, [r.text for r in first if r.status_code != 202]
    again = await asyncio.gather(*(post("/v1/interviews", iv) for _, iv in families))
    assert [r.status_code for r in again] == [200] * SUBMISSIONS
    assert [r.json()["event_id"] for r in again] == [r.json()["event_id"] for r in first]  # original receipts
    changed = copy.deepcopy(families[0][1])
    changed["housing"]["floor_area_m2"] = 48
    assert (await post("/v1/interviews", changed)).status_code == 409

    # both workers answer on the port, and exactly one of them holds the relay lock
    assert await relay_leader_seen(base) == {0.0, 1.0}
    holders = await world.fetchval(
        "intake", "select count(*) from pg_locks where locktype = 'advisory' and granted and classid = 0 "
        "and objid = $1 and database = (select oid from pg_database where datname = current_database())", RELAY_LOCK)
    assert holders == 1

    # every accepted submission published exactly once, with its receipt's event id
    topic = world.topic(Topic.INTERVIEW_SUBMITTED)
    expected = {family_id_of(iv): r.json()["event_id"] for (_, iv), r in zip(families, first, strict=True)}

    async def published():
        records = await read_topic(topic, timeout=10)
        return records if len(records) >= SUBMISSIONS else None

    records = await eventually(published, timeout=60, what="every interview's event on the topic")
    assert sorted((header(r, "ce_subject"), header(r, "ce_id")) for r in records) == sorted(expected.items())
    assert await world.fetchval("intake", "select count(*) from outbox") == 0


ERASURE_LOCK = 7316010  # intake.store's advisory lock class for an SLS's erasure


async def test_a_submission_waiting_for_an_erasure_of_its_family_is_refused(intake_workers):
    world, _ = intake_workers
    sls = new_sls_id()
    _, iv = family(sls, 1)
    fid = family_id_of(iv)
    officer = {"authorization": f"Bearer {token('officer', 'OFC-IT', (sls,))}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.ports['intake']}", timeout=60) as c:
        erasure = await asyncpg.connect(world.dsn("intake"))
        try:
            tx = erasure.transaction()  # an erasure in progress: it holds the SLS's lock exclusively
            await tx.start()
            await erasure.execute("select pg_advisory_xact_lock($1, hashtext($2))", ERASURE_LOCK, sls)
            answer = asyncio.create_task(c.post("/v1/interviews", json=iv, headers=officer))

            async def waiting() -> bool:  # the submission's statement waits for the lock
                return bool(await erasure.fetchval(
                    "select count(*) from pg_locks where locktype = 'advisory' and not granted and objsubid = 2 "
                    "and classid = $1 and objid = hashtext($2)::oid", ERASURE_LOCK, sls))

            await eventually(waiting, timeout=60, what="the submission waiting for the erasure lock")
            await erasure.execute("insert into erased_families (family_id, sls_id, erasure_id, reason, erased_by) "
                                  "values ($1, $2, $3, 'court_order', 'ADM-IT')", fid, sls, uuid.uuid4())
            await tx.commit()  # the erasure commits while the submission waits
            r = await answer
        finally:
            await erasure.close()
    assert r.status_code == 410, r.text
    assert await world.fetchval("intake", "select count(*) from submissions where family_id = $1", fid) == 0
