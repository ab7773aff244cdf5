"""The four services together on the real broker and database, with the reference
programme receiver subscribed through notify:

- one W3C trace runs from the officer's request through every topic to the webhook;
- PostgreSQL restarted (immediate stop, crash recovery) under traffic loses nothing
  and duplicates nothing, and the services recover without being restarted.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid

import httpx
import pytest

from regsosek.topics import Topic
from regsosek_tools.sample import generate

from itkit import (
    LOG_DIR,
    ROOT,
    Submitter,
    World,
    by_subject,
    eventually,
    family,
    family_id_of,
    header,
    new_sls_id,
    read_topic,
    roster,
    token,
    trace_id_of,
)

pytestmark = pytest.mark.integration

SERVICES = ("intake", "verify", "classify", "notify")
RECEIVER_SECRET = "integration-receiver-secret-" + uuid.uuid4().hex
SAMPLE_SEED = 2022  # one SLS: 12 families verified, one member count differs, one moved away
SAMPLE_FAMILIES = 14


@pytest.fixture(scope="module")
async def pipeline(stack):
    world = await World(list(SERVICES)).setup()
    try:
        receiver = world.receiver(RECEIVER_SECRET).start()
        # Every span of the run also goes to a file next to the service's log, for the personal-data scan.
        procs = dict(zip(SERVICES, [world.process(n, REGSOSEK_TRACE_FILE=str(_span_file(world, n))).start()
                                    for n in SERVICES], strict=True))
        await asyncio.gather(receiver.wait_ready(), *(p.wait_ready() for p in procs.values()))
        async with httpx.AsyncClient(base_url=procs["notify"].url, timeout=10) as client:
            r = await client.post("/v1/subscriptions", json={"callback_url": receiver.url + "/notify",
                                                             "secret": RECEIVER_SECRET},
                                  headers={"authorization": f"Bearer {token('programme', 'PKH-IT')}"})
            assert r.status_code == 201, r.text
        yield world, procs, receiver
    finally:
        await world.teardown()


def _span_file(world: World, service: str):
    return LOG_DIR / f"{world.tag}-{service}.spans.jsonl"


async def _completed_of(world, sls: str) -> list:
    return by_subject(await read_topic(world.topic(Topic.SLS_COMPLETED))).get(sls, [])


async def _receiver_events(receiver, family_id: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=receiver.url, timeout=5) as client:
        return (await client.get("/events", params={"family_id": family_id})).json()["events"]


async def _receiver_stats(receiver) -> dict:
    async with httpx.AsyncClient(base_url=receiver.url, timeout=5) as client:
        return (await client.get("/stats")).json()


async def test_one_trace_across_services(pipeline):
    world, procs, receiver = pipeline
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    sls = new_sls_id()
    entry, iv = family(sls, 1)
    fid = family_id_of(iv)

    async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=10) as client:
        submitter = Submitter(client)
        await submitter.submit("/v1/rosters", roster(sls, [entry]))
        # The roster is in verify before the interview arrives: the interview is decided
        # in its own consumer span, not released later from the roster's.
        await eventually(lambda: world.fetchval("verify", "select count(*) from rosters where sls_id = $1", sls),
                         timeout=30, what="verify to store the roster")
        receipt = await submitter.submit("/v1/interviews", iv, headers={"traceparent": traceparent})

        async def decided():
            s = await submitter.status(iv["submission_id"])
            return s if s and s["final"] == "decided" else None

        status = await eventually(decided, timeout=45, what="the interview to be decided")
    assert status["trace_id"] == trace_id, "intake did not store the caller's trace id"

    for topic in (Topic.INTERVIEW_SUBMITTED, Topic.INTERVIEW_VERIFIED, Topic.FAMILY_CLASSIFIED,
                  Topic.ELIGIBILITY_DECIDED):
        records = by_subject(await read_topic(world.topic(topic))).get(fid, [])
        assert records, f"no {topic.value} record for {fid}"
        for r in records:
            assert trace_id_of(header(r, "traceparent")) == trace_id, \
                f"{topic.value}: traceparent {header(r, 'traceparent')!r} is not in trace {trace_id}"
    submitted = by_subject(await read_topic(world.topic(Topic.INTERVIEW_SUBMITTED)))[fid]
    assert [header(r, "ce_id") for r in submitted] == [receipt["event_id"]]
    # The interview completed its one-family SLS: the recount deferred to commit time
    # publishes sls-completed in the trace of the interview that caused it.
    completed = await eventually(lambda: _completed_of(world, sls), timeout=30, what="sls-completed for the SLS")
    assert trace_id_of(header(completed[0], "traceparent")) == trace_id, \
        f"sls-completed traceparent {header(completed[0], 'traceparent')!r} is not in trace {trace_id}"

    events = await eventually(lambda: _receiver_events(receiver, fid), timeout=30, what="the webhook delivery")
    assert trace_id_of(events[0]["traceparent"]) == trace_id, f"webhook traceparent {events[0]['traceparent']!r}"
    assert (await _receiver_stats(receiver))["rejected"] == 0, "the receiver refused a signature or message"

    # the acknowledged delivery comes back to intake: the journey ends "notified", same trace
    async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=10) as client:
        submitter = Submitter(client)

        async def notified():
            s = await submitter.status(iv["submission_id"])
            return s if s and any(step["step"] == "notified" for step in s["journey"]) else None

        status = await eventually(notified, timeout=30, what="the journey to show the delivery")
    assert [st["step"] for st in status["journey"]][-1] == "notified"
    delivered = by_subject(await read_topic(world.topic(Topic.ELIGIBILITY_DELIVERED))).get(fid, [])
    assert len(delivered) == 1 and trace_id_of(header(delivered[0], "traceparent")) == trace_id


async def test_trace_survives_an_interview_held_for_its_roster(pipeline):
    world, procs, receiver = pipeline
    trace_id = uuid.uuid4().hex
    sls = new_sls_id()
    entry, iv = family(sls, 1)
    fid = family_id_of(iv)
    async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=10) as client:
        submitter = Submitter(client)
        await submitter.submit("/v1/interviews", iv,
                               headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"})
        await eventually(lambda: world.fetchval("verify", "select state = 'held' from interviews where family_id = $1",
                                                fid), timeout=30, what="verify to hold the interview")
        await submitter.submit("/v1/rosters", roster(sls, [entry]))  # a separate request: its own trace

        async def decided():
            s = await submitter.status(iv["submission_id"])
            return s if s and s["final"] == "decided" else None

        await eventually(decided, timeout=45, what="the held interview to be decided")
    records = by_subject(await read_topic(world.topic(Topic.INTERVIEW_VERIFIED)))[fid]
    assert [trace_id_of(header(r, "traceparent")) for r in records] == [trace_id]


async def _postgres(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("bash", "scripts/postgres.sh", *args, cwd=ROOT,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"scripts/postgres.sh {' '.join(args)} failed:\n{out.decode(errors='replace')}"


class NotReady:
    """A falsy probe result carrying the /healthz body (which check fails and why)."""

    def __init__(self, body: str) -> None:
        self.body = body

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return self.body


async def test_postgres_restart_under_traffic(pipeline):
    world, procs, receiver = pipeline
    sample = generate(seed=SAMPLE_SEED, families=SAMPLE_FAMILIES)
    interviews = [iv for iv in sample.interviews if iv.family_id not in sample.depends_on]
    expected = {iv.family_id: "decided" if sample.expected[iv.family_id].startswith("verified") else "flagged"
                for iv in interviews}
    receipts: dict[str, dict] = {}

    async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=10) as client:
        submitter = Submitter(client)
        for r in sample.rosters:
            await submitter.submit("/v1/rosters", r.model_dump(mode="json"), retry_for=60)
        accepted_before_outage = asyncio.Event()

        async def stream() -> None:
            for iv in interviews:
                receipts[iv.family_id] = await submitter.submit("/v1/interviews", iv.model_dump(mode="json"),
                                                                retry_for=120)
                if len(receipts) == 4:
                    accepted_before_outage.set()
                await asyncio.sleep(0.15)

        async def outage() -> None:
            await accepted_before_outage.wait()
            try:
                await _postgres("stop", "--mode", "immediate")
                # Down until the officers' devices have felt it.
                await eventually(lambda: submitter.failed_attempts > 0, timeout=20, interval=0.05,
                                 what="a submission refused during the outage")
            finally:
                await _postgres("start")

        await asyncio.gather(stream(), outage())
        assert submitter.failed_attempts > 0
        assert len(receipts) == len(interviews)

        async def all_final():
            states = {}
            for iv in interviews:
                s = await submitter.status(str(iv.submission_id))
                states[iv.family_id] = s and s["final"]
            return states if all(states.values()) else None

        finals = await eventually(all_final, timeout=120, interval=0.5, what="every family to reach a final state")
    assert finals == expected

    # Services came back by themselves: ready again once their probes (every REGSOSEK_PROBE_INTERVAL_S)
    # have seen the database back; the reason is shown if one stays unready.
    async with httpx.AsyncClient(timeout=5) as client:
        for name, p in procs.items():
            assert p.alive, f"{name} died\n{p.log_tail()}"

            async def ready(url=p.url):
                r = await client.get(url + "/healthz")
                return r.status_code == 200 or NotReady(r.text)

            await eventually(ready, timeout=30, interval=0.5, what=f"{name} ready again after the outage")
    # The outage's failures are in the logs as JSON lines (type and stack, never the message): no
    # plain-text traceback, as uvicorn printed for each request the database was away for.
    for name, p in procs.items():
        assert "Traceback (most recent call last)" not in p.log_path.read_text(errors="replace"), name

    fids = set(expected)
    decided = {f for f, s in expected.items() if s == "decided"}
    # One accepted submission = one event, however often the device had to retry.
    submitted = by_subject(await read_topic(world.topic(Topic.INTERVIEW_SUBMITTED)))
    for f in fids:
        assert {header(r, "ce_id") for r in submitted[f]} == {receipts[f]["event_id"]}, f"{f} submitted twice"
    # Each stage applied each family once. (A relay interrupted between Kafka's ack and its
    # delete may re-send the same event id; a second application would carry a new id.)
    states = {r["family_id"]: r["state"] for r in await world.fetch("verify", "select family_id, state from interviews "
                                                                             "where family_id = any($1::text[])",
                                                                    list(fids))}
    assert {f for f, s in states.items() if s == "verified"} == decided
    verified = by_subject(await read_topic(world.topic(Topic.INTERVIEW_VERIFIED)))
    classified = await world.fetch("classify", "select family_id from families where family_id = any($1::text[])",
                                   list(fids))
    assert sorted(r["family_id"] for r in classified) == sorted(decided) == sorted(f for f in verified if f in fids)
    eligibility = by_subject(await read_topic(world.topic(Topic.ELIGIBILITY_DECIDED)))
    for f in decided:
        assert len({header(r, "ce_id") for r in verified[f]}) == 1, f"{f} verified twice"
        assert len({header(r, "ce_id") for r in eligibility.get(f, [])}) == 1, f"{f}: not exactly one eligibility event"
    assert not set(eligibility) & (fids - decided), "a flagged family got an eligibility decision"

    async def all_delivered():
        return all([await _receiver_events(receiver, f) for f in decided])

    # notify takes eligibility-decided in its own time (after the outage its consumer may still be in its
    # backoff): its deliveries are counted once the receiver has every decided family
    await eventually(all_delivered, timeout=60, what="every decided family delivered to the receiver")
    deliveries = await world.fetch("notify", "select family_id, count(*) n from deliveries "
                                             "where family_id = any($1::text[]) group by family_id", list(fids))
    assert {r["family_id"]: r["n"] for r in deliveries} == {f: 1 for f in decided}
    stats = await _receiver_stats(receiver)
    assert stats["rejected"] == 0


async def test_no_personal_data_in_logs_spans_or_dead_letters(pipeline):
    """After the runs above (the sample's families, a PostgreSQL outage among them): no NIK, KK number
    or name of any family submitted appears in any service's log lines, in any span, or in any dead
    letter (its headers, reason and the original record it carries)."""
    world, procs, receiver = pipeline
    sample = generate(SAMPLE_SEED, SAMPLE_FAMILIES)
    secrets = set()
    for iv in sample.interviews:
        secrets |= {m.nik for m in iv.members if m.nik} | {m.name for m in iv.members if len(m.name) >= 4}
        if iv.location.kk_number:
            secrets.add(iv.location.kk_number)
    for r in sample.rosters:
        for f in r.families:
            secrets |= {v for v in (f.kk_number, f.head_name) if v and len(v) >= 4}
    assert secrets, "the sample has no identifiers to look for"

    logs = sorted(LOG_DIR.glob(f"{world.tag}-*.log"))
    spans = [_span_file(world, n) for n in SERVICES]
    assert logs and all(p.exists() and p.stat().st_size > 0 for p in spans), "no logs or spans were written"
    for path in [*logs, *spans]:
        text = path.read_text(errors="replace")
        leaked = sorted(x for x in secrets if x in text)
        assert not leaked, f"{path.name} holds {len(leaked)} identifier(s) of the sample's families"
    for r in await read_topic(world.topic(Topic.DEAD_LETTER)):
        record = (r.value or b"") + b" ".join((v or b"") for _, v in r.headers)
        text = record.decode(errors="replace")
        assert not [x for x in secrets if x in text], "a dead letter holds an identifier in clear"
