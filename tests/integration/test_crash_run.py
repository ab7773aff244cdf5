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
import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from contextlib import suppress

import httpx
import pytest
from itkit import (
    ServiceProcess,
    Submitter,
    World,
    broker_pid,
    by_subject,
    eventually,
    header,
    read_topic,
    stack_script,
    start_broker,
    stop_broker,
    token,
)

from classify.domain import classify
from classify.model import PmtModel, PovertyLines, RuleSet
from classify.ranking import reference_placement
from classify.settings import ClassifySettings
from regsosek.contracts import FamilyInterview, household_profile
from regsosek.topics import Topic
from regsosek_tools.sample import Sample, generate, officer_areas

pytestmark = pytest.mark.integration

FAMILIES = int(os.environ.get("REGSOSEK_CRASH_FAMILIES", "2000"))
SUBMIT_S = float(os.environ.get("REGSOSEK_CRASH_SUBMIT_S", "180"))
BUDGET_S = float(os.environ.get("REGSOSEK_CRASH_BUDGET_S", "420"))  # the whole run, set-up to last assertion
SEED = int(os.environ.get("REGSOSEK_CRASH_SEED", "20221015"))
SERVICES = ("intake", "verify", "classify", "notify")
RECEIVER_SECRET = "crash-run-receiver-secret-" + uuid.uuid4().hex
CONCURRENCY = 8  # devices uploading at once
RETRY_FOR = 240.0  # how long one device keeps retrying one submission
READY_S = 120.0  # a (re)started service on a loaded machine
DRAIN_S = 300.0  # after the last submission: everything final, delivered
# The faults, in order, spread evenly over the submissions.
FAULTS = ("verify", "intake", "classify", "notify", "broker", "verify", "classify", "postgres", "notify", "intake")


class NotYet:
    """A falsy probe result that says what is still missing (eventually shows it on timeout)."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return self.why


def _log(msg: str) -> None:
    print(f"[crash-run {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Pipeline:
    """The world's live processes by name; a crashed service is replaced by a new process."""

    def __init__(self, world: World, procs: dict[str, ServiceProcess]) -> None:
        self.world, self.procs = world, procs
        self.crashes: Counter[str] = Counter()

    async def crash(self, name: str) -> None:
        p = self.procs[name]
        assert p.alive, f"{name} had died on its own before it was to be killed (exit {p.returncode})\n{p.log_tail()}"
        await asyncio.to_thread(p._proc.kill, signal.SIGKILL)  # a crash: no graceful shutdown
        assert await p.wait_exit(15) == -signal.SIGKILL
        new = self.world.process(name).start()  # same port: the devices' client keeps its address
        self.procs[name] = new
        await new.wait_ready(READY_S)
        self.crashes[name] += 1


def _expected_decisions(sample: Sample) -> dict[str, dict]:
    """What classify's own rules give each family, with the shipped model, lines and rules and the
    model's reference cut-points (no re-rank happens in this run)."""
    s = ClassifySettings()
    model, lines, rules = PmtModel.load(s.pmt_model_file), PovertyLines.load(s.poverty_lines_file), \
        RuleSet.load(s.rules_file)
    placement = reference_placement(model.version, model.decile_cutpoints)
    out = {}
    for iv in sample.interviews:
        c = classify(household_profile(iv), model, lines, rules, None, placement)
        out[iv.family_id] = {"welfare_group": int(c.welfare_group), "decile": c.decile,
                             "eligibility": dict(sorted(c.eligibility.items()))}
    return out


def _seq(data: dict) -> tuple:
    """A family's event order: its decision sequence when the events carry one (0, or absent, is older
    than any sequenced event), then interview version, then decision time."""
    return int(data.get("decision_seq") or 0), int(data.get("version") or 0), str(data.get("decided_at") or "")


@pytest.fixture
async def pipeline(stack):
    world = await World(list(SERVICES)).setup()
    try:
        receiver = world.receiver(RECEIVER_SECRET).start()
        procs = dict(zip(SERVICES, [world.process(n).start() for n in SERVICES], strict=True))
        await asyncio.gather(receiver.wait_ready(READY_S), *(p.wait_ready(READY_S) for p in procs.values()))
        async with httpx.AsyncClient(base_url=procs["notify"].url, timeout=10) as client:
            r = await client.post("/v1/subscriptions", json={"callback_url": receiver.url + "/notify",
                                                             "secret": RECEIVER_SECRET},
                                  headers={"authorization": f"Bearer {token('programme', 'PKH-CRASH')}"})
            assert r.status_code == 201, r.text
        yield Pipeline(world, procs), receiver
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


# Complexity (C901) accepted: one crash scenario (two waves, faults in between, the checks after) kept in one readable piece;
# it restarts the shared broker, so it is changed only together with a run of it.
async def _crash_run(pl: Pipeline, receiver: ServiceProcess) -> None:  # noqa: C901
    world = pl.world
    t0 = time.monotonic()
    sample = generate(seed=SEED, families=FAMILIES)
    first, second = sample.waves()
    interviews = {iv.family_id: iv for iv in sample.interviews}
    sub_ids = {iv.family_id: str(iv.submission_id) for iv in sample.interviews}
    expected = _expected_decisions(sample)
    _log(f"{len(sample.rosters)} rosters, {len(first)} + {len(second)} interviews; faults: {', '.join(FAULTS)}")

    async with httpx.AsyncClient(base_url=pl.procs["intake"].url, timeout=15) as client:
        devices: dict[str, Submitter] = {}

        def device(officer_id: str) -> Submitter:
            if officer_id not in devices:
                devices[officer_id] = Submitter(client, officer=token("officer", officer_id,
                                                                      tuple(officer_areas(officer_id))))
            return devices[officer_id]

        receipts: dict[str, dict] = {}
        t_submit = time.monotonic()

        async def upload(docs: list[tuple[str, str, dict, str | None]], seconds: float) -> None:
            """(path, officer, document, family id) by CONCURRENCY devices, paced over `seconds`."""
            queue: asyncio.Queue = asyncio.Queue()
            for d in docs:
                queue.put_nowait(d)
            start, gap = time.monotonic(), seconds / max(1, len(docs))

            async def worker() -> None:
                while not queue.empty():
                    i = len(docs) - queue.qsize()
                    path, officer, doc, fid = queue.get_nowait()
                    await asyncio.sleep(max(0.0, start + i * gap - time.monotonic()))
                    receipt = await device(officer).submit(path, doc, retry_for=RETRY_FOR)
                    if fid is not None:
                        receipts[fid] = receipt

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

        def interview_docs(ivs: list[FamilyInterview]) -> list:
            return [("/v1/interviews", iv.officer_id, iv.model_dump(mode="json"), iv.family_id) for iv in ivs]

        async def submit_all() -> None:
            try:
                await upload([("/v1/rosters", r.officer_id, r.model_dump(mode="json"), None) for r in sample.rosters],
                             SUBMIT_S * 0.1)
                await upload(interview_docs(first), SUBMIT_S * 0.8)
                # A duplicate NIK is flagged on the family claiming it second: its donor must be final first.
                donors = sorted(set(sample.depends_on.values()))
                await eventually(lambda: _all_final(world, [sub_ids[f] for f in donors]), timeout=DRAIN_S,
                                 interval=1.0, what=f"the {len(donors)} donors of duplicate NIKs to be final")
                await upload(interview_docs(second), SUBMIT_S * 0.1)
                _log(f"all {len(receipts)} interviews accepted after {time.monotonic() - t0:.0f}s")
            except BaseException:
                _log(f"submissions stopped after {len(receipts)} interviews accepted")
                raise

        async def faults() -> None:
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
                    failed_before = sum(d.failed_attempts for d in devices.values())
                    await stack_script("postgres.sh", "stop", "--mode", "immediate")
                    try:
                        await eventually(lambda before=failed_before: sum(d.failed_attempts for d in devices.values()) > before,
                                         timeout=10, interval=0.1, what="a device to feel the database outage")
                    except AssertionError:
                        pass  # between uploads: the services felt it anyway
                    finally:
                        await stack_script("postgres.sh", "start")
                else:
                    await pl.crash(what)
                _log(f"fault {i + 1}/{len(FAULTS)}: {what} down and back in {time.monotonic() - began:.1f}s "
                     f"({len(receipts)} interviews accepted so far)")

        await asyncio.gather(submit_all(), faults())
        assert len(receipts) == len(interviews)
        assert all(pl.crashes[s] >= 2 for s in SERVICES), pl.crashes
        retries = sum(d.failed_attempts for d in devices.values())
        _log(f"submissions and faults done after {time.monotonic() - t0:.0f}s; devices retried {retries} times")
        assert retries > 0, "no device ever had to retry: the faults did not hit the submissions"

        # ---- no family lost: each reaches its final state
        async def progress():
            n = await _final_count(world, list(sub_ids.values()))
            return n == len(sub_ids) or NotYet(f"{n} of {len(sub_ids)} final")

        await eventually(progress, timeout=DRAIN_S, interval=2.0,
                         what=f"all {len(sub_ids)} families final in intake (decided and notified, or flagged)")
        _log(f"every family final after {time.monotonic() - t0:.0f}s")

        sem, admin = asyncio.Semaphore(16), Submitter(client)

        async def status(fid: str) -> tuple[str, dict]:
            async with sem:
                s = await eventually(lambda: admin.status(sub_ids[fid]), timeout=60,
                                     what=f"the status of {fid}")
            return fid, s

        statuses = dict(await asyncio.gather(*(status(f) for f in interviews)))

    # the services are all still there (none died on its own)
    for name, p in pl.procs.items():
        assert p.alive, f"{name} died on its own\n{p.log_tail()}"

    want_verified = {f for f, e in sample.expected.items() if e.startswith("verified")}
    problems = []
    for fid, s in statuses.items():
        steps = {st["step"]: st for st in s["journey"]}
        want = sample.expected[fid]
        if fid in want_verified:
            if s["final"] != "decided" or "notified" not in steps:
                problems.append(f"{fid}: final {s['final']!r}, steps {list(steps)} (expected decided and notified)")
                continue
            if steps["verified"].get("outcome") != want:
                problems.append(f"{fid}: verified as {steps['verified'].get('outcome')!r}, sample intended {want!r}")
            exp = expected[fid]
            got = (steps["classified"]["welfare_group"], steps["classified"]["decile"],
                   sorted(steps["eligibility"]["eligible"]))
            if got != (exp["welfare_group"], exp["decile"], sorted(p for p, ok in exp["eligibility"].items() if ok)):
                problems.append(f"{fid}: status view shows group/decile/eligible {got}, rules give {exp}")
        else:
            if s["final"] != "flagged" or steps.get("flagged", {}).get("reason") != want:
                problems.append(f"{fid}: final {s['final']!r}, flag {steps.get('flagged', {}).get('reason')!r} "
                                f"(sample intended flagged {want!r})")
            if "eligibility" in steps and steps["eligibility"].get("eligible"):
                problems.append(f"{fid}: flagged but the status view shows eligibility {steps['eligibility']}")
    assert not problems, f"{len(problems)} families wrong in intake's status view:\n" + "\n".join(problems[:30])

    # ---- the topics: one event per accepted submission and stage, and the right decision
    submitted_recs = by_subject(await read_topic(world.topic(Topic.INTERVIEW_SUBMITTED), timeout=60))
    for fid in interviews:
        assert {header(r, "ce_id") for r in submitted_recs.get(fid, [])} == {receipts[fid]["event_id"]}, \
            f"{fid}: interview-submitted events {[header(r, 'ce_id') for r in submitted_recs.get(fid, [])]} " \
            f"for the one accepted submission {receipts[fid]['event_id']}"
    verified_recs = by_subject(await read_topic(world.topic(Topic.INTERVIEW_VERIFIED), timeout=60))
    flagged_recs = by_subject(await read_topic(world.topic(Topic.INTERVIEW_FLAGGED), timeout=60))
    decided_recs = by_subject(await read_topic(world.topic(Topic.ELIGIBILITY_DECIDED), timeout=60))
    problems = []
    for fid in interviews:
        n_ver = len({header(r, "ce_id") for r in verified_recs.get(fid, [])})
        n_flag = len({header(r, "ce_id") for r in flagged_recs.get(fid, [])})
        decided = decided_recs.get(fid, [])
        n_dec = len({header(r, "ce_id") for r in decided})
        if fid in want_verified:
            if (n_ver, n_flag, n_dec) != (1, 0, 1):
                problems.append(f"{fid}: {n_ver} verified, {n_flag} flagged, {n_dec} eligibility events (want 1, 0, 1)")
            if not decided:
                continue
            last = json.loads(decided[-1].value)
            got = {"welfare_group": last["welfare_group"], "decile": last["decile"],
                   "eligibility": dict(sorted((d["programme"], d["eligible"]) for d in last["decisions"]))}
            if got != expected[fid]:
                problems.append(f"{fid}: eligibility-decided says {got}, rules give {expected[fid]}")
            seqs = [_seq(json.loads(r.value)) for r in decided]
            if seqs != sorted(seqs):
                problems.append(f"{fid}: eligibility-decided events out of order on the topic: {seqs}")
        else:
            if (n_ver, n_flag) != (0, 1):
                problems.append(f"{fid}: {n_ver} verified, {n_flag} flagged events (want 0, 1)")
            if decided and any(d["eligible"] for d in json.loads(decided[-1].value)["decisions"]):
                problems.append(f"{fid}: flagged, yet its last eligibility-decided event makes it eligible")
    assert not problems, f"{len(problems)} families wrong on the topics:\n" + "\n".join(problems[:30])

    # nothing was dead-lettered on the way (a crash or an outage is transient, never a reason to give up)
    dead = await read_topic(world.topic(Topic.DEAD_LETTER), timeout=60)
    assert not dead, f"{len(dead)} dead letters, e.g. " + "; ".join(
        f"{header(r, 'dlq_service')} {header(r, 'dlq_topic')}: {header(r, 'dlq_reason')}" for r in dead[:5])

    # ---- the subscriber: every decision delivered, each family's events in order
    async with httpx.AsyncClient(base_url=receiver.url, timeout=30) as rc:
        async def all_delivered():
            got = {e["event_id"] for e in (await rc.get("/events", params={"limit": 100_000})).json()["events"]}
            missing = [f for f in want_verified if header(decided_recs[f][-1], "ce_id") not in got]
            return not missing or NotYet(f"{len(missing)} missing, e.g. {missing[:5]}")

        await eventually(all_delivered, timeout=60, interval=1.0, what="every decision delivered to the receiver")
        events = (await rc.get("/events", params={"limit": 100_000, "with_data": "true"})).json()["events"]
        stats = (await rc.get("/stats")).json()
    assert stats["rejected"] == 0, f"the receiver refused messages: {stats}"
    assert stats["out_of_order"] == 0, f"the receiver saw events older than one already delivered: {stats}"
    arrivals: dict[str, list[dict]] = {}
    for e in events:
        arrivals.setdefault(e["family_id"], []).append(e)
    problems = []
    for fid, evs in arrivals.items():
        seqs = [_seq(e["data"]) for e in evs]
        if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
            problems.append(f"{fid}: events arrived in the order {seqs}")
        if fid in want_verified:
            if evs[-1]["event_id"] != header(decided_recs[fid][-1], "ce_id"):
                problems.append(f"{fid}: the receiver's last event is not the family's final decision")
            if evs[-1]["eligible"] != sorted(p for p, ok in expected[fid]["eligibility"].items() if ok):
                problems.append(f"{fid}: the receiver holds eligibility {evs[-1]['eligible']}, rules give "
                                f"{expected[fid]['eligibility']}")
        elif any(e["eligible"] for e in evs[-1:]):
            problems.append(f"{fid}: flagged, yet the receiver's last event makes it eligible")
    assert not problems, f"{len(problems)} families wrong at the receiver:\n" + "\n".join(problems[:30])
    _log(f"done in {time.monotonic() - t0:.0f}s: {len(want_verified)} decided, "
         f"{len(interviews) - len(want_verified)} flagged, receiver {stats['unique']} unique events, "
         f"{stats['duplicates']} duplicates; crashes {dict(pl.crashes)}")


_FINAL_SQL = """
select count(*) from submissions s
where s.submission_id = any($1::uuid[])
  and (exists (select 1 from journey j where j.submission_id = s.submission_id and j.step = 'flagged')
       or (exists (select 1 from journey j where j.submission_id = s.submission_id and j.step = 'eligibility')
           and exists (select 1 from journey j where j.submission_id = s.submission_id and j.step = 'notified')))
"""


async def _final_count(world: World, submission_ids: list[str]) -> int:
    return await world.fetchval("intake", _FINAL_SQL, submission_ids)


async def _all_final(world: World, submission_ids: list[str]) -> bool:
    n = await _final_count(world, submission_ids)
    return n == len(submission_ids) or NotYet(f"{n} of {len(submission_ids)} final")
