"""A whole run of a synthetic sample through the pipeline while something breaks it, and the checks
that nothing was lost or wrong afterwards: shared by the crash run (tests/integration/test_crash_run.py:
processes, the broker and the database killed) and the scale-out run (test_scale_out.py: a three-broker
cluster, a broker lost, rolling restarts, instances added and removed).

- `Fleet`: the world's live service instances by name (several per service), with crash, graceful
  restart and scale; `Balancer`: an httpx transport spreading requests over the live intake instances
  (the officers' devices behind a load balancer) and skipping one that is down.
- `run_sample`: rosters then interviews through intake's HTTP API by several devices, each retrying the
  same submission through errors, paced over a given time, with a `disruptions` coroutine alongside.
- `check_outcome`: every family final in intake's status view with the decision classify's own rules
  give; one event per accepted submission and stage on the topics, in order, no dead letters; every
  decision at the subscribed receiver, each family's events in order.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from classify.domain import classify
from classify.model import PmtModel, PovertyLines, RuleSet
from classify.ranking import reference_placement
from classify.settings import ClassifySettings
from regsosek.contracts import FamilyInterview, household_profile
from regsosek.topics import Topic
from regsosek_tools.sample import Sample, officer_areas

from itkit import ServiceProcess, Submitter, World, by_subject, eventually, header, read_topic, token

SERVICES = ("intake", "verify", "classify", "notify")
CONCURRENCY = 8  # devices uploading at once
RETRY_FOR = 240.0  # how long one device keeps retrying one submission
# A (re)started service on a loaded machine: its process start took up to ~55 s at a load of 35 on 2 cores;
# its consumer-group join under a second (docs/ORDERING.md, "Joining and leaving a group").
READY_S = 240.0
DRAIN_S = 300.0  # after the last submission: everything final, delivered


class NotYet:
    """A falsy probe result that says what is still missing (eventually shows it on timeout)."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return self.why


def progress_log(tag: str) -> Callable[[str], None]:
    def log(msg: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", flush=True)
    return log


# ---------------------------------------------------------------- the instances


@dataclass
class Fleet:
    """The live instances of each service of a world. The first instance of a service keeps the
    world's port for it; further instances get ports of their own."""

    world: World
    instances: dict[str, list[ServiceProcess]] = field(default_factory=dict)
    crashes: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)

    async def start(self, name: str, count: int = 1) -> list[ServiceProcess]:
        new = [self._launch(name) for _ in range(count)]
        await asyncio.gather(*(p.wait_ready(READY_S) for p in new))
        return new

    def _launch(self, name: str, port: int | None = None) -> ServiceProcess:
        p = self.world.process(name, port=port).start()
        self.instances.setdefault(name, []).append(p)
        return p

    def live(self, name: str) -> list[ServiceProcess]:
        return [p for p in self.instances.get(name, []) if p.alive]

    def urls(self, name: str) -> list[str]:
        return [p.url for p in self.live(name)]

    def first(self, name: str) -> ServiceProcess:
        return self.live(name)[0]

    async def crash(self, name: str, index: int = 0) -> None:
        """SIGKILL (no graceful shutdown) one instance and start a new one on its port."""
        p = self.live(name)[index]
        await asyncio.to_thread(p._proc.kill, signal.SIGKILL)
        assert await p.wait_exit(15) == -signal.SIGKILL
        await self._replace(p)
        self.crashes[name] += 1

    async def restart(self, name: str, index: int) -> None:
        """A graceful stop (SIGTERM: a rolling update) of one instance, then a new one on its port."""
        p = self.live(name)[index]
        await p.stop()
        await self._replace(p)
        self.restarts[name] += 1

    async def _replace(self, old: ServiceProcess) -> None:
        self.instances[old.name].remove(old)
        await self._launch(old.name, port=old.port).wait_ready(READY_S)

    async def scale(self, name: str, count: int) -> None:
        """Adds instances, or stops the newest ones gracefully, until `count` run."""
        live = self.live(name)
        if len(live) < count:
            await self.start(name, count - len(live))
        for p in live[count:]:
            await p.stop()
            self.instances[name].remove(p)

    def died_on_their_own(self) -> list[str]:
        return [f"{p.name} :{p.port} exit {p.returncode}\n{p.log_tail()}"
                for ps in self.instances.values() for p in ps if not p.alive]


class Balancer(httpx.AsyncBaseTransport):
    """Round-robin over the live instances of a service, as a load balancer in front of them would:
    a request that cannot connect to one instance (stopping, restarting) goes to the next."""

    def __init__(self, fleet: Fleet, name: str) -> None:
        self.fleet, self.name = fleet, name
        self.inner = httpx.AsyncHTTPTransport()
        self.turn = itertools.count()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        ports = [p.port for p in self.fleet.live(self.name)] or [self.fleet.world.ports[self.name]]
        first = next(self.turn)
        for i in range(len(ports)):
            request.url = request.url.copy_with(port=ports[(first + i) % len(ports)])
            try:
                return await self.inner.handle_async_request(request)
            except httpx.ConnectError:
                if i == len(ports) - 1:
                    raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.inner.aclose()


async def subscribe(notify_url: str, receiver: ServiceProcess, secret: str, programme: str) -> None:
    async with httpx.AsyncClient(base_url=notify_url, timeout=10) as client:
        r = await client.post("/v1/subscriptions", json={"callback_url": receiver.url + "/notify", "secret": secret},
                              headers={"authorization": f"Bearer {token('programme', programme)}"})
        assert r.status_code == 201, r.text


# ---------------------------------------------------------------- the submissions


Gate = Callable[[float], Awaitable[None]]  # waits until a share (0..1) of the documents may be sent


@dataclass
class Run:
    """What the devices did: receipts by family id, and how often they had to retry."""

    sample: Sample
    client: httpx.AsyncClient
    receipts: dict[str, dict] = field(default_factory=dict)
    devices: dict[str, Submitter] = field(default_factory=dict)

    @property
    def sub_ids(self) -> dict[str, str]:
        return {iv.family_id: str(iv.submission_id) for iv in self.sample.interviews}

    @property
    def retries(self) -> int:
        return sum(d.failed_attempts for d in self.devices.values())

    def device(self, officer_id: str) -> Submitter:
        if officer_id not in self.devices:
            self.devices[officer_id] = Submitter(self.client, officer=token("officer", officer_id,
                                                                            tuple(officer_areas(officer_id))))
        return self.devices[officer_id]

    async def upload(self, docs: list[tuple[str, str, dict, str | None]], seconds: float,
                     gate: Gate | None = None) -> None:
        """(path, officer, document, family id) by CONCURRENCY devices, paced over `seconds`; with a
        `gate`, each document waits for `gate(share of the documents sent before it)` too."""
        queue: asyncio.Queue = asyncio.Queue()
        for d in docs:
            queue.put_nowait(d)
        start, gap = time.monotonic(), seconds / max(1, len(docs))

        async def worker() -> None:
            while not queue.empty():
                i = len(docs) - queue.qsize()
                path, officer, doc, fid = queue.get_nowait()
                await asyncio.sleep(max(0.0, start + i * gap - time.monotonic()))
                if gate is not None:
                    await gate(i / len(docs))
                receipt = await self.device(officer).submit(path, doc, retry_for=RETRY_FOR)
                if fid is not None:
                    self.receipts[fid] = receipt

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def _interview_docs(ivs: list[FamilyInterview]) -> list:
    return [("/v1/interviews", iv.officer_id, iv.model_dump(mode="json"), iv.family_id) for iv in ivs]


async def run_sample(world: World, client: httpx.AsyncClient, sample: Sample, submit_s: float,
                     disruptions: Callable[[Run, float], Awaitable[None]], log: Callable[[str], None],
                     gate: Gate | None = None) -> Run:
    """Submits the sample over `submit_s` seconds (rosters in the first 10%, most interviews over the
    next 80%, the families claiming a duplicate NIK once their donors are final) while
    `disruptions(run, t_submit)` runs alongside. `gate` (optional) holds each of those interviews until
    the disruptions have caught up with it (see `Run.upload`)."""
    run = Run(sample, client)
    first, second = sample.waves()
    t_submit = time.monotonic()

    async def submit_all() -> None:
        try:
            await run.upload([("/v1/rosters", r.officer_id, r.model_dump(mode="json"), None) for r in sample.rosters],
                             submit_s * 0.1)
            await run.upload(_interview_docs(first), submit_s * 0.8, gate)
            # A duplicate NIK is flagged on the family claiming it second: its donor must be final first.
            donors = sorted(set(sample.depends_on.values()))
            await eventually(lambda: all_final(world, [run.sub_ids[f] for f in donors]), timeout=DRAIN_S,
                             interval=1.0, what=f"the {len(donors)} donors of duplicate NIKs to be final")
            await run.upload(_interview_docs(second), submit_s * 0.1)
            log(f"all {len(run.receipts)} interviews accepted")
        except BaseException:
            log(f"submissions stopped after {len(run.receipts)} interviews accepted")
            raise

    await asyncio.gather(submit_all(), disruptions(run, t_submit))
    assert len(run.receipts) == len(sample.interviews)
    return run


# ---------------------------------------------------------------- the checks


def expected_decisions(sample: Sample) -> dict[str, dict]:
    """What classify's own rules give each family, with the shipped model, lines and rules and the
    model's reference cut-points (no re-rank happens in these runs)."""
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


def event_order(data: dict) -> tuple:
    """A family's event order: its decision sequence when the events carry one (0, or absent, is older
    than any sequenced event), then interview version, then decision time."""
    return int(data.get("decision_seq") or 0), int(data.get("version") or 0), str(data.get("decided_at") or "")


_FINAL_SQL = """
select count(*) from submissions s
where s.submission_id = any($1::uuid[])
  and (exists (select 1 from journey j where j.submission_id = s.submission_id and j.step = 'flagged')
       or (exists (select 1 from journey j where j.submission_id = s.submission_id and j.step = 'eligibility')
           and exists (select 1 from journey j where j.submission_id = s.submission_id and j.step = 'notified')))
"""


async def final_count(world: World, submission_ids: list[str]) -> int:
    return await world.fetchval("intake", _FINAL_SQL, submission_ids)


async def all_final(world: World, submission_ids: list[str]) -> bool | NotYet:
    n = await final_count(world, submission_ids)
    return n == len(submission_ids) or NotYet(f"{n} of {len(submission_ids)} final")


async def check_outcome(world: World, run: Run, receiver: ServiceProcess, log: Callable[[str], None]) -> dict:
    """Every family final and right in intake's status view, on the topics and at the receiver."""
    sample, sub_ids = run.sample, run.sub_ids
    await eventually(lambda: all_final(world, list(sub_ids.values())), timeout=DRAIN_S, interval=2.0,
                     what=f"all {len(sub_ids)} families final in intake (decided and notified, or flagged)")
    log("every family final")
    expected = expected_decisions(sample)
    want_verified = {f for f, e in sample.expected.items() if e.startswith("verified")}
    await _check_status_view(run, expected, want_verified)
    decided_recs = await _check_topics(world, run, expected, want_verified)
    stats = await _check_receiver(receiver, expected, want_verified, decided_recs)
    return {"decided": len(want_verified), "flagged": len(sample.interviews) - len(want_verified), **stats}


async def _check_status_view(run: Run, expected: dict[str, dict], want_verified: set[str]) -> None:
    sem, admin = asyncio.Semaphore(16), Submitter(run.client)

    async def status(fid: str) -> tuple[str, dict]:
        async with sem:
            return fid, await eventually(lambda: admin.status(run.sub_ids[fid]), timeout=60, what=f"the status of {fid}")

    statuses = dict(await asyncio.gather(*(status(iv.family_id) for iv in run.sample.interviews)))
    problems = []
    for fid, s in statuses.items():
        steps = {st["step"]: st for st in s["journey"]}
        want = run.sample.expected[fid]
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


async def _check_topics(world: World, run: Run, expected: dict[str, dict], want_verified: set[str]) -> dict:
    """One event per accepted submission and stage, the right decision, in order; no dead letters."""
    submitted_recs = by_subject(await read_topic(world.topic(Topic.INTERVIEW_SUBMITTED), timeout=60))
    for fid, receipt in run.receipts.items():
        assert {header(r, "ce_id") for r in submitted_recs.get(fid, [])} == {receipt["event_id"]}, \
            f"{fid}: interview-submitted events {[header(r, 'ce_id') for r in submitted_recs.get(fid, [])]} " \
            f"for the one accepted submission {receipt['event_id']}"
    verified_recs = by_subject(await read_topic(world.topic(Topic.INTERVIEW_VERIFIED), timeout=60))
    flagged_recs = by_subject(await read_topic(world.topic(Topic.INTERVIEW_FLAGGED), timeout=60))
    decided_recs = by_subject(await read_topic(world.topic(Topic.ELIGIBILITY_DECIDED), timeout=60))
    problems = []
    for fid in run.receipts:
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
            seqs = [event_order(json.loads(r.value)) for r in decided]
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
    return decided_recs


async def _check_receiver(receiver: ServiceProcess, expected: dict[str, dict], want_verified: set[str],
                          decided_recs: dict) -> dict:
    """Every decision delivered to the subscribed receiver, each family's events in order."""
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
        seqs = [event_order(e["data"]) for e in evs]
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
    return {"receiver_unique": stats["unique"], "receiver_duplicates": stats["duplicates"]}
