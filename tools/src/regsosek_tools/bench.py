"""Benchmark the pipeline end to end on the local stack, against issue 7's targets.

    python -m regsosek_tools.bench                      # the full run (20,000 families; ~10-30 min)
    python -m regsosek_tools.bench --quick              # smaller and shorter, to try the harness
    python -m regsosek_tools.bench --families 50000 --rates 100,500,1000,2000 --duration 30 --instances 1,2,3
    python -m regsosek_tools.bench --quick --phases scale --instances 1,2,3   # every service ×1, ×2, ×3
    python -m regsosek_tools.bench --quick --brokers 1,3    # on the three-broker stack (REGSOSEK_KAFKA_BROKERS=3)
    python -m regsosek_tools.bench --phases stored --stored 0,200000,2000000 --plots   # cost as the registry grows
    python -m regsosek_tools.bench --phases rerank --rerank-sizes 100000,1000000,5000000 --plots  # re-rank, replay
    python -m regsosek_tools.bench --quick --phases throughput --profile               # flame graphs (py-spy)

Needs the local stack (bash scripts/stack.sh up). One run is one isolated world on the
shared broker and database server: a fresh topic prefix (bench<id>.), fresh databases
(bench<id>_<service>), the four services and the reference receiver as processes on free
ports, a notify subscription for the receiver. Everything is removed at the end, also
after a failure or Ctrl-C. It measures, in that one run:

 1. throughput: N families uploaded through POST /v1/interviews:batch (100 per request,
    16 concurrent devices); time from the first request to the receiver holding the
    eligibility event of every family expected to be decided; intake's acceptance rate;
 2. latency at fixed offered rates: single POST /v1/interviews sent open loop at R/s for
    D s, regardless of responses; latency = the receiver's received_at of the family's
    eligibility event minus the request's send time; achieved rates and the backlog;
 3. per service: events consumed/s (regsosek_events_consumed_total deltas), CPU, RSS
    (VmRSS sampled every second, and VmHWM), consumer lag per group every second;
 4. replay: python -m classify.replay against this run's classify database with a rules
    file that differs only in its version, so every stored family is classified again;
 5. the ceiling: the same payload bytes through three topic hops with raw aiokafka
    (producer -> relay -> relay -> sink, each its own process; consumer groups, batch
    getmany, idempotent acks=all producers, commit after the produce is acknowledged);
 6. horizontal scale: the throughput measurement with 1, 2, ... instances of every service
    in their consumer groups, intake's instances behind a round-robin spread in the load
    generator (load.http.Spread), each count's families/s as a ratio to the first's;
 7. brokers (`--brokers 1,3`, on the three-broker stack only): the same families through a
    fresh world per count whose topics are placed on that many brokers (1: every partition on
    one broker, no replication; 3: on all three, min.insync.replicas 2, leaders spread;
    world.create_placed_topics), as ratios. Only with --brokers or --phases brokers.
 8. stored (`--stored 0,200000,2000000`): the throughput measurement again (same families per
    step, devices and batches, after a short warm-up) with N families already stored in every
    service's database, written with PostgreSQL COPY in the shape the services wrote them
    (load.stored: cloned from this world's own rows under new SLS, family, submission and event
    ids and keyed hashes); each N's families/s as a ratio to the first's (issue 16, target 4:
    >= 0.8 at 2,000,000). Only with --stored or --phases stored.
 9. rerank (`--rerank-sizes 100000,1000000,5000000`): a re-rank and a replay timed at each size by
    `python -m classify.rerank_bench` (issue 16, targets 2 and 3: each size bulk-loaded into a classify
    database of its own, the commands run as an operator runs them; families/s, peak RSS, CPU a family);
    target 3 is met when the re-rank's peak RSS stays within 20% from the smallest size to the largest
    (at least 5,000,000) at >= 20,000 families/s, target 2 when the largest replay runs at >= 20,000
    families/s. Only with --rerank-sizes or --phases rerank.
10. the CPU budget of every upload phase (throughput, scale, stored) and of the ceiling
    (measure.budget): CPU seconds from /proc of each process group over the phase (each service
    with all its processes, the receiver, this process as the load generator, the stack's Kafka
    broker and its PostgreSQL cluster: the postmaster with its live and ended backends), per
    family, with each group's idle cores in a window with nothing sent after the throughput phase
    (--idle-window) and the Kafka records written per family; the ceiling's per record (the
    broker, and each stage's own CPU); and the ratio both reach when CPU-bound on the same cores:
    ceiling CPU per record / pipeline CPU per family.

--profile records a flame graph of every service during the throughput phase and every stored
step (py-spy record, regsosek_tools.measure.profile) into docs/bench/flame-<date>-<commit>-<phase>-
<instance>.svg; --plots draws docs/bench/throughput-vs-stored.png from the stored phase and
docs/bench/rerank-vs-scope.png from the rerank phase (or from --rerank-json: a saved one)
(regsosek_tools.report.plots).

Prints a summary, a Markdown row for BENCHMARKS.md, and writes everything (time series
included) as JSON to --out (default .local/bench/<UTC time>.json). Figures are
measurements, not assertions: the exit status is 0 when the run completed, 1 when a
phase could not complete (families never delivered, a process died), 2 when it could
not start, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from regsosek_tools.load.ceiling import HOPS, CeilingFailed, ceiling_figures, write_payload
from regsosek_tools.load.ceiling import stage_main as ceiling_stage_main
from regsosek_tools.load.families import Family, Pool, build_pool
from regsosek_tools.load.http import RawHttp, Spread
from regsosek_tools.load.pacing import schedule
from regsosek_tools.load.submit import BatchUpload, OpenLoop, post_with_retry
from regsosek_tools.measure.budget import CpuGroups, CpuReading, bound, budget, ceiling_budget, records_per_unit
from regsosek_tools.measure.delivery import Deliveries
from regsosek_tools.measure.kafka import Offsets, group_lag
from regsosek_tools.measure.proc import git_commit, machine_info, stack_pids
from regsosek_tools.measure.profile import FlameGraphs
from regsosek_tools.measure.sampler import Instance, Sampler
from regsosek_tools.processes import PIPELINE as SERVICES
from regsosek_tools.processes import ROOT, ServiceNotReady, ServiceProcess
from regsosek_tools.report.bench import (
    SCALED,
    TARGETS,
    comparison_rows,
    fnum,
    markdown_row,
    print_lag,
    print_summary,
    ratios,
)
from regsosek_tools.world import Stack, StackDown, World, broker_ids, free_port, min_insync

# Topics each service's consumer group reads (services/<name>/src/<name>/app.py); the lag
# sampler adds any other topic a group turns out to have committed offsets for.
GROUP_TOPICS = {
    "intake": ("interview-verified", "interview-flagged", "family-classified", "eligibility-decided"),
    "verify": ("sls-roster", "interview-submitted", "verification-resolved"),
    "classify": ("interview-verified", "fkp-adjustment"),
    "notify": ("eligibility-decided",),
}
# Process groups this run started; killed on the way out if the orderly stop was cut short.
_STARTED: set[int] = set()


async def _read_line(p: asyncio.subprocess.Process, timeout: float) -> bytes:
    """The next line a process started by `Bench._spawn` (stdout piped) writes."""
    if p.stdout is None:
        raise RuntimeError("the process was started without a stdout pipe")
    return await asyncio.wait_for(p.stdout.readline(), timeout)


class SetupError(Exception):
    """The bench could not start: the stack, a service or the subscription is missing."""


def parse_list(text: str) -> list[int]:
    out = [int(x) for x in text.replace(" ", "").split(",") if x]
    if not out or any(x <= 0 for x in out):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return out


# ================================================================ the bench


class Bench:
    """One bench run: its world (regsosek_tools.world), the processes in it, the sampler, and the
    phases (upload, open loop, scale, replay, ceiling)."""

    def __init__(self, a: argparse.Namespace, *, brokers: int | None = None) -> None:
        self.a = a
        self.world = World(SERVICES, kind="bench", brokers=brokers)
        self.bootstrap = self.world.bootstrap
        self.tag = self.world.tag
        self.prefix = self.world.prefix
        from regsosek_tools import receiver as receiver_mod

        self.receiver_secret = os.environ.get("REGSOSEK_RECEIVER_SECRET") or receiver_mod.DEFAULT_SECRET
        self.log_dir = ROOT / ".local" / "logs" / "bench"
        self.work_dir = ROOT / ".local" / "bench"
        self.instances: dict[str, Instance] = {}
        self.created = False  # the world's databases and topics exist (some of them, after a failure)
        self.temp_files: list[Path] = []
        self.children: list[asyncio.subprocess.Process] = []
        self.t0 = time.monotonic()
        self.errors: list[str] = []
        self.partitions: dict[str, int] = self.world.partitions()
        self._tokens: dict[str, str] = {}
        self.offsets = Offsets(self.bootstrap, self.partitions)
        self.http: Any = None  # httpx.AsyncClient for control calls
        self.sampler = Sampler(self.instances, self.lags, None, now=self.now, log=self.log, errors=self.errors)
        self._sampler: asyncio.Task | None = None
        self.intake: Spread | None = None  # every intake instance, in turn
        self.subscription_id: str | None = None
        self.receiver_url = ""
        self.notify_url = ""
        self.progress_every = 2.0 if sys.stderr.isatty() else 5.0
        self.flames: FlameGraphs | None = None  # --profile
        self.profiles: list[dict] = []
        self.cpu: CpuGroups | None = None  # the CPU budget's reader (measure.budget), once set up

    # ------------------------------------------------------------ small things

    @property
    def phase(self) -> str:
        """The phase running now: samples are labelled with it."""
        return self.sampler.phase

    @phase.setter
    def phase(self, phase: str) -> None:
        self.sampler.phase = phase

    @property
    def samples(self) -> list:
        return self.sampler.samples

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def token(self, subject: str, areas: list[str], role: str = "officer") -> str:
        from regsosek.auth import Role, mint
        from regsosek.programmes import PROGRAMME_CODES

        key = f"{role}:{subject}:{','.join(areas)}"
        if key not in self._tokens:
            # the bench's receiver stands for every programme (each decision whole, as before scopes)
            self._tokens[key] = mint(subject=subject, role=Role(role), areas=areas,
                                     ttl_s=24 * 3600,
                                     programmes=list(PROGRAMME_CODES) if role == "programme" else None)
        return self._tokens[key]

    def officer_token(self, officer: str) -> str:
        from regsosek_tools.sample import officer_areas

        return self.token(officer, officer_areas(officer))

    def service_env(self, service: str, port: int) -> dict[str, str]:
        extra = {"REGSOSEK_AUTH_MAX_TOKEN_LIFETIME_S": str(24 * 3600)}  # the bench's tokens live for a day
        for kv in self.a.env or []:
            k, _, v = kv.partition("=")
            extra[k] = v
        return self.world.service_env(service, port, log_level="WARNING", extra=extra)

    # ------------------------------------------------------------ set-up and tear-down

    async def setup(self, pool: Pool) -> None:
        import httpx

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.http = httpx.AsyncClient(timeout=15.0)
        self.sampler.http = self.http
        self.log(f"world {self.tag}: databases {self.tag}_*, topics {self.prefix}*")
        self.created = True
        await self.world.create()
        await self.offsets.start()
        for s in SERVICES:
            self._instance(s, s)
        self._instance("receiver", "receiver", {"REGSOSEK_RECEIVER_SECRET": self.receiver_secret})
        await self.start_instances(list(self.instances.values()))
        stack = stack_pids(self.world.stack.bootstrap, self.world.stack.pg_base)
        self.log(f"CPU budget: Kafka broker pid(s) {stack['kafka'] or 'not found'}, PostgreSQL postmaster pid(s) "
                 f"{stack['postgres'] or 'not found'}")
        self.cpu = CpuGroups(self.service_pids, stack)
        self.receiver_url = self.instances["receiver"].proc.url
        self.deliveries = Deliveries(self.http, self.receiver_url, phase_timeout=self.a.phase_timeout,
                                     stall_timeout=self.a.stall_timeout, latest_lag=self.latest_lag, log=self.log,
                                     progress_every=self.progress_every)
        self.notify_url = self.instances["notify"].proc.url
        self.intake = Spread([self._intake_client(self.instances["intake"])])
        self._sampler = asyncio.create_task(self.sampler.run())
        await self.subscribe()
        await self.submit_rosters(pool)

    def service_pids(self) -> dict[str, list[int]]:
        """The running instances' process ids by service (and the receiver's), for the CPU budget."""
        out: dict[str, list[int]] = {}
        for i in self.instances.values():
            if i.proc.pid is not None:
                out.setdefault(i.service, []).append(i.proc.pid)
        return out

    def cpu_reading(self) -> CpuReading | None:
        return self.cpu.read() if self.cpu is not None else None

    def _intake_client(self, inst: Instance) -> RawHttp:
        return RawHttp("127.0.0.1", inst.proc.port, connections=self.a.max_inflight)

    def _instance(self, key: str, service: str, extra: dict[str, str] | None = None) -> Instance:
        port = free_port()
        env = self.service_env(service, port) if service != "receiver" else {
            "REGSOSEK_HTTP_HOST": "127.0.0.1", "REGSOSEK_HTTP_PORT": str(port), **(extra or {})}
        proc = ServiceProcess(service, env, port)
        proc.log_path = self.log_dir / f"{self.tag}-{key.replace('#', '-')}.log"
        inst = Instance(key, service, proc)
        self.instances[key] = inst
        return inst

    async def start_instances(self, insts: list[Instance]) -> None:
        for i in insts:
            i.proc.start()
            if i.proc.pid is not None:
                _STARTED.add(i.proc.pid)
        self.log("started: " + ", ".join(f"{i.key} :{i.proc.port} (pid {i.proc.pid})" for i in insts))
        try:
            await asyncio.gather(*(i.proc.wait_ready_async(self.a.start_timeout) for i in insts))
        except ServiceNotReady as e:
            raise SetupError(str(e)) from None

    async def stop_instances(self, insts: Iterable[Instance]) -> None:
        insts = list(insts)
        for i in insts:  # out of the sampler's sight first: a stopped instance is not a crashed one
            self.instances.pop(i.key, None)
        await asyncio.gather(*(asyncio.to_thread(i.proc.stop, 15.0) for i in insts), return_exceptions=True)
        for i in insts:
            if (pid := i.proc.pid) is not None:
                _STARTED.discard(pid)

    async def teardown(self) -> None:
        if self._sampler:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        if self.subscription_id and self.http is not None:
            with contextlib.suppress(Exception):
                await self.http.delete(f"{self.notify_url}/v1/subscriptions/{self.subscription_id}",
                                       headers=self._auth(self.programme_token()), timeout=5)
        for child in self.children:
            _kill_group(child.pid)
        await self.stop_instances(list(self.instances.values()))
        if self.intake:
            await self.intake.close()
        if self.http is not None:
            await self.http.aclose()
        await self.offsets.close()
        if self.created:
            try:
                await self.world.destroy(timeout_s=10.0)
            except Exception as e:  # noqa: BLE001 - say what may be left behind, and go on
                self.log(f"could not remove the world {self.tag} (databases {self.tag}_*, topics {self.prefix}*): "
                         f"{type(e).__name__}: {e}")
        for p in self.temp_files:
            with contextlib.suppress(OSError):
                p.unlink()

    # ------------------------------------------------------------ subscription and rosters

    def programme_token(self) -> str:
        return self.token("programme-bench-receiver", ["64"], role="programme")

    @staticmethod
    def _auth(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    async def subscribe(self) -> None:
        body = {"callback_url": f"{self.receiver_url}/notify", "secret": self.receiver_secret,
                "filters": {"programmes": [], "area_prefixes": ["64"], "welfare_groups": [],
                            "event_types": ["eligibility-decided"]}}
        r = await self.http.post(f"{self.notify_url}/v1/subscriptions", json=body,
                                 headers=self._auth(self.programme_token()))
        if r.status_code != 201:
            raise SetupError(f"creating the subscription at notify failed: HTTP {r.status_code} {r.text[:300]}")
        self.subscription_id = r.json()["id"]

    async def post_with_retry(self, raw: bytes, attempts: int = 6) -> tuple[int, bytes, float]:
        """A submission to this world's intake, repeated through 5xx, 429 and connection errors."""
        assert self.intake is not None, "bench not set up"
        return await post_with_retry(self.intake, raw, attempts)

    async def submit_rosters(self, pool: Pool) -> None:
        intake = self.intake
        assert intake is not None, "bench not set up"
        self.log(f"submitting {len(pool.rosters)} SLS rosters")
        sem = asyncio.Semaphore(16)
        refused: list[str] = []

        async def one(sls: str, officer: str, body: bytes) -> None:
            async with sem:
                status, text, _ = await self.post_with_retry(
                    intake.build("POST", "/v1/rosters", body, self.officer_token(officer)))
            if status not in (200, 202):
                refused.append(f"roster {sls}: HTTP {status} {text[:200]!r}")

        await asyncio.gather(*(one(*r) for r in pool.rosters))
        if refused:
            raise SetupError(f"{len(refused)} rosters refused, e.g. {refused[0]}")
        # Wait until verify has every roster, so the measured phases do not include them.
        topic = self.world.topic("sls-roster")
        deadline = time.monotonic() + self.a.settle_timeout
        while True:
            ends = await self.offsets.ends([topic])
            committed = await self.offsets.committed(self.world.group("verify"))
            if sum(ends.values()) >= len(pool.rosters) and group_lag(committed, ends) == 0:
                break
            if time.monotonic() > deadline:
                raise SetupError(f"verify did not take the rosters within {self.a.settle_timeout:.0f} s "
                                 f"({sum(ends.values())}/{len(pool.rosters)} published, "
                                 f"{group_lag(committed, ends)} behind)")
            await asyncio.sleep(0.5)
        self.log("rosters are at verify")

    # ------------------------------------------------------------ Kafka offsets

    async def lags(self) -> dict[str, int]:
        """Records behind per service consumer group."""
        return await self.offsets.lags({s: (self.world.group(s), [self.world.topic(t) for t in GROUP_TOPICS[s]])
                                        for s in SERVICES})

    async def wait_members(self, counts: dict[str, int], timeout: float = 90.0) -> bool:
        """Until each service's group is stable with that many members."""
        return await self.offsets.wait_members({self.world.group(s): n for s, n in counts.items()}, timeout)

    def latest_lag(self) -> dict[str, int] | None:
        return self.sampler.latest_lag()

    async def settle(self, label: str) -> dict:
        """Wait until no consumer group is behind (bounded); returns what was left."""
        self.phase = f"settle:{label}"
        deadline = time.monotonic() + self.a.settle_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                lag = await self.lags()
                if not any(lag.values()):
                    return {"settled": True, "lag": lag}
            await asyncio.sleep(0.5)
        lag = {}
        with contextlib.suppress(Exception):
            lag = await self.lags()
        self.log(f"WARNING: still behind after {self.a.settle_timeout:.0f} s: {lag}")
        return {"settled": False, "lag": lag}

    # ------------------------------------------------------------ phase: throughput (batch upload)

    async def upload(self, fams: list[Family], label: str) -> dict:
        """Devices upload `fams` as batches; measured to the last eligibility event at the receiver."""
        assert self.intake is not None, "bench not set up"
        self.phase = label
        up = BatchUpload(self.intake, self.post_with_retry, lambda k: self.token(f"BENCH-DEVICE-{k:02d}", ["64"]),
                         fams, batch_size=self.a.batch_size, devices=self.a.devices)
        base = await self.deliveries.receiver_unique()
        done = asyncio.Event()
        self.log(f"{label}: {len(fams)} families ({len(up.expected)} to be decided) in {len(up.batches)} batches "
                 f"of {up.batch_size}, {up.devices} devices")
        profiled = await self.start_profile(label)
        cpu0 = time.process_time()
        ends0 = await self.topic_ends()
        reading0 = self.cpu_reading()
        sender = asyncio.create_task(up.run(done))
        try:
            got, ended = await self.deliveries.wait_delivered(up.expected, base, sending_done=done, label=label)
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            if profiled and self.flames is not None:  # profiled: start_profile started them
                self.profiles += await self.flames.stop()
        res = up.figures(got, ended, cpu0=cpu0, bench_now=self.now())
        if res["undelivered"]:
            self.errors.append(f"{label}: {res['undelivered']} of {len(up.expected)} expected decisions never reached "
                               f"the receiver ({res['ended']})")
        if up.not_taken():
            self.errors.append(f"{label}: intake did not take {up.counts['refused']} interviews and failed "
                               f"{up.counts['failed_requests']} batch requests, e.g. {up.problems[:1]}")
        self.log(f"{label}: {fnum(res['families_per_s'] or res.get('families_per_s_partial'), 1)} families/s end "
                 f"to end ({res['ended']}), intake accepted {fnum(res['accepted_per_s'], 1)}/s")
        res["settle"] = await self.settle(label)
        reading1 = self.cpu_reading()  # after the settle: the work every group still had for these families
        if reading0 is not None and reading1 is not None:
            res["cpu_budget"] = budget(reading0, reading1, len(fams))
        ends1 = await self.topic_ends()
        if ends0 and ends1:
            res["records_per_family"] = records_per_unit(ends0, ends1, len(fams), prefix=self.prefix)
        return res

    async def topic_ends(self) -> dict[str, int]:
        """Sum of the end offsets of each of this world's topics now (empty when Kafka did not answer)."""
        try:
            ends = await self.offsets.ends(self.world.topics())
        except Exception:  # noqa: BLE001 - a figure left out, not a failed phase
            return {}
        out: dict[str, int] = {}
        for tp, end in ends.items():
            out[tp.topic] = out.get(tp.topic, 0) + end
        return out

    async def idle_cpu(self, seconds: float) -> dict | None:
        """Every group's CPU while nothing is sent (`seconds` after a settled phase): the fixed cost of
        the running pipeline (consumers polling, the sampler), per second."""
        self.phase = "idle"
        reading0 = self.cpu_reading()
        await asyncio.sleep(seconds)
        reading1 = self.cpu_reading()
        if reading0 is None or reading1 is None:
            return None
        self.log(f"idle: {seconds:g} s with nothing sent, for the CPU budget's fixed part")
        return budget(reading0, reading1, 1)

    async def start_profile(self, label: str) -> bool:
        """With --profile, py-spy on every service instance during the throughput phase and each
        stored step; True when recording."""
        if self.flames is None or not profiled_phase(label):
            return False
        pids = [(k, i.proc.pid) for k, i in self.instances.items() if i.service in SERVICES and i.proc.pid]
        problems = await self.flames.start(label, pids)
        self.errors += [f"profile {label}: {p}" for p in problems]
        return bool(self.flames.running)

    # ------------------------------------------------------------ phase: stored (cost as the registry grows)

    async def stored(self, pool: Pool) -> list[dict]:
        """For each N of --stored (ascending): at least N families stored (load.stored, COPY), a
        warm-up, then the throughput measurement of --stored-families new families."""
        from regsosek_tools.load.stored import (
            Templates,
            TemplateTooSmall,
            count_families,
            database_sizes,
            io_between,
            reads_between,
            reset_statements,
            table_io,
            table_reads,
            top_statements,
        )

        dsns = {s: self.world.dsn(s) for s in SERVICES}
        templates: Templates | None = None
        out: list[dict] = []
        for n in self.a.stored:
            label = f"stored-{n}"
            self.phase = f"load:{label}"
            have = await count_families(dsns["verify"])
            load = None
            if n > have:
                try:
                    if templates is None:
                        templates = await Templates.read(dsns)
                        rows = sum(len(t.rows) for d in templates.databases for t in d.tables)
                        self.log(f"stored: template of {templates.families_per_round} families in "
                                 f"{len(templates.template_sls)} SLS ({rows:,} rows)")
                    problem = await disk_problem(dsns, have, n - have)
                    if problem:
                        self.errors.append(f"{label}: {problem}")
                        self.log(f"stored: {problem}; stopping the stored phase here")
                        break
                    load = await templates.load(n - have, log=self.log)
                except TemplateTooSmall as e:
                    self.errors.append(f"{label}: {e}")
                    break
                self.log(f"stored: +{load['families']:,} families ({load['rows']:,} rows) in {load['seconds']:.1f} s")
            stored_now = await count_families(dsns["verify"])
            if self.a.warmup:
                await self.upload(pool.take(self.a.warmup), f"{label}-warmup")
            reads, io = await table_reads(dsns), await table_io(dsns)
            statements = await reset_statements(dsns["verify"])
            res = await self.upload(pool.take(self.a.stored_families), label)
            units = res.get("families") or 0
            if statements:
                names = [urlsplit(d).path.lstrip("/") for d in dsns.values()]
                res["statements"] = await top_statements(dsns["verify"], names, units)
            res.update({"stored_target": n, "stored_families": stored_now, "load": load,
                        "database_io": io_between(io, await table_io(dsns), units),
                        "database_bytes": await database_sizes(dsns), "per_service": self.phase_services(label),
                        "sequential_reads": reads_between(reads, await table_reads(dsns))})
            out.append(res)
        return out

    # ------------------------------------------------------------ phase: latency (open loop)

    async def open_loop(self, fams: list[Family], rate: int, duration: float) -> dict:
        """Single submissions at `rate`/s for `duration` s, open loop; latency to the receiver."""
        assert self.intake is not None, "bench not set up"
        label = f"latency-{rate}"
        self.phase = label
        sending = OpenLoop(self.intake, lambda raw: self.post_with_retry(raw, attempts=3), fams,
                           schedule(rate, duration), self.officer_token)
        base = await self.deliveries.receiver_unique()
        done = asyncio.Event()
        window_lag: list[dict[str, int] | None] = [None]
        self.log(f"{label}: {len(sending.fams)} single submissions at {rate}/s for {duration:g} s, open loop")
        cpu0 = time.process_time()
        sender = asyncio.create_task(sending.run(done, answers_timeout=self.a.phase_timeout,
                                                 at_window_end=lambda: window_lag.__setitem__(0, self.latest_lag())))
        delivered = None
        try:
            delivered = asyncio.create_task(self.deliveries.wait_delivered(sending.expected, base, sending_done=done,
                                                                           label=label))
            await asyncio.wait([sender], timeout=duration + self.a.phase_timeout)
            got, ended = await delivered
        finally:
            sending.cancel()
            for t in (sender, delivered):
                if t is not None and not t.done():
                    t.cancel()
            await asyncio.gather(sender, *(t for t in (delivered,) if t), return_exceptions=True)
        res = sending.figures(got, ended, rate, duration)
        res["lag_at_window_end"] = window_lag[0]
        res["generator_cpu_s"] = round(time.process_time() - cpu0, 2)
        reasons = falls_behind_because(res, rate, self.intake.connections)
        res["keeps_up"] = not reasons
        res["falls_behind_because"] = reasons
        d = res["latency_s"]
        self.log(f"{label}: sent {res['sent_rate']:.0f}/s, accepted {fnum(res['accepted_rate'])}/s, latency p50 "
                 f"{fnum(d['p50'], 2)} s p99 {fnum(d['p99'], 2)} s, backlog at window end {res['backlog_at_window_end']}"
                 + ("" if res["keeps_up"] else "  FALLS BEHIND: " + "; ".join(reasons)))
        res["settle"] = await self.settle(label)
        return res

    # ------------------------------------------------------------ phase: scale

    async def scale(self, pool: Pool, n: int) -> list[dict]:
        assert self.intake is not None, "bench not set up"
        out = []
        for k in self.a.instances:
            if pool.taken + n > len(pool.families):
                break
            extra = []
            for s in SCALED:
                for j in range(2, k + 1):
                    extra.append(self._instance(f"{s}#{j}", s))
            if extra:
                await self.start_instances(extra)
                for i in extra:
                    if i.service == "intake":
                        self.intake.add(self._intake_client(i))
            stable = await self.wait_members({s: k for s in SCALED})
            if not stable:
                self.log(f"WARNING: consumer groups did not settle on {k} members each")
            res = await self.upload(pool.take(n), f"scale-{k}")
            res.update({"instances": k, "scaled_services": list(SCALED), "groups_stable": stable,
                        "intake_instances": len(self.intake.clients),
                        "partitions": self.partitions.get(self.prefix + "interview-submitted")})
            res["per_service"] = self.phase_services(f"scale-{k}")
            out.append(res)
            if extra:
                for i in extra:
                    if i.service == "intake":
                        await self.intake.remove(i.proc.port)
                await self.stop_instances(extra)
                await self.wait_members({s: 1 for s in SCALED}, timeout=60)
        return out

    # ------------------------------------------------------------ phase: replay

    async def replay(self) -> dict:
        self.phase = "replay"
        if importlib.util.find_spec("classify") is None or importlib.util.find_spec("classify.replay") is None:
            return {"available": False, "reason": "python -m classify.replay does not exist in this checkout"}
        try:
            from classify.settings import ClassifySettings

            rules = Path(ClassifySettings().rules_file)
            text = rules.read_text()
        except Exception as e:  # noqa: BLE001
            return {"available": False, "reason": f"classify's rules file could not be read: {type(e).__name__}: {e}"}
        m = re.search(r"^version:\s*(\S+)\s*$", text, re.MULTILINE)
        if not m:
            return {"available": False, "reason": f"no 'version:' line in {rules}"}
        version = f"{m.group(1)}-{self.tag}"
        path = self.work_dir / f"{self.tag}-rules.yaml"
        path.write_text(text[:m.start(1)] + version + text[m.end(1):])
        self.temp_files.append(path)
        env = {**os.environ, **self.service_env("classify", 0), "REGSOSEK_RULES_FILE": str(path)}
        env.pop("REGSOSEK_HTTP_PORT")
        cmd = [sys.executable, "-m", "classify.replay", "--json"]
        self.log(f"replay: python -m classify.replay with rules version {version} (only the version differs)")
        # The same command stopped before its first batch: start-up (imports, pool, migrations, model) alone.
        startup = await self._run_child(cmd + ["--max-batches", "0"], env, "replay-startup", self.a.replay_timeout)
        full = await self._run_child(cmd, env, "replay", self.a.replay_timeout)
        if full["rc"] != 0:
            return {"available": True, "error": f"exit {full['rc']}: {full['stderr'][-500:]}", "rules_version": version}
        try:
            report = json.loads(full["stdout"].strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"available": True, "error": f"unreadable output: {full['stdout'][-300:]!r}"}
        examined = int(report.get("examined") or 0)
        startup_s = startup["seconds"] if startup["rc"] == 0 else None
        work_s = full["seconds"] - (startup_s or 0.0)
        res = {
            "available": True, "rules_version": version, "report": report, "examined": examined,
            "reclassified": report.get("reclassified"), "republished": report.get("changed"),
            "wall_s": full["seconds"], "startup_s": startup_s, "work_s": work_s,
            "families_per_s": (examined / work_s) if work_s > 0 and examined else None,
            "families_per_s_wall": (examined / full["seconds"]) if examined else None,
        }
        self.log(f"replay: {examined} families in {full['seconds']:.2f} s ({fnum(startup_s, 2)} s of it start-up): "
                 f"{fnum(res['families_per_s'])} families/s")
        res["settle"] = await self.settle("replay")
        return res

    # ------------------------------------------------------------ phase: re-rank and replay at scale

    async def rerank(self) -> dict:
        """Targets 2 and 3 at the registry's sizes: `python -m classify.rerank_bench` (each size bulk-loaded
        into a classify database of its own on the stack's PostgreSQL, then a re-rank and a replay timed as
        an operator runs them, with their peak RSS and CPU); its points, smallest size first."""
        self.phase = "rerank"
        if importlib.util.find_spec("classify") is None or importlib.util.find_spec("classify.rerank_bench") is None:
            return {"available": False, "reason": "python -m classify.rerank_bench does not exist in this checkout"}
        a = self.a
        out = self.work_dir / f"{self.tag}-rerank.json"
        self.temp_files.append(out)
        cmd = [sys.executable, "-m", "classify.rerank_bench", "--sizes", _commas(a.rerank_sizes),
               "--replay-sizes", _commas(a.rerank_replay_sizes), "--scope", a.rerank_scope,
               "--processes", str(a.replay_processes), "--json", str(out)]
        self.log(f"rerank: {' '.join(cmd[2:])} (each size loaded by COPY into a database of its own)")
        run = await self._run_child(cmd, dict(os.environ), "rerank", a.rerank_timeout)
        if run["rc"] != 0:
            return {"available": True, "error": f"exit {run['rc']}: {run['stderr'][-500:]}"}
        points = json.loads(out.read_text())
        for q in points:
            self.log(f"rerank: {q['what']} of {q['families']:,} families: {q['families_per_s']:,}/s, "
                     f"peak RSS {q['peak_rss_mib']} MiB, {q['cpu_us_per_family']} µs CPU a family")
        return {"available": True, "points": points, "scope": a.rerank_scope, "replay_processes": a.replay_processes}

    async def _run_child(self, cmd: list[str], env: dict, name: str, timeout: float) -> dict:
        log = self.log_dir / f"{self.tag}-{name}.log"
        t = time.monotonic()
        with _log_file(log) as err:
            p = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                                     stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        self.children.append(p)
        try:
            out, _ = await asyncio.wait_for(p.communicate(), timeout)
        except TimeoutError:
            _kill_group(p.pid)
            await p.wait()
            return {"rc": -1, "stdout": "", "stderr": f"timed out after {timeout:.0f} s (log {log})",
                    "seconds": time.monotonic() - t}
        finally:
            self.children.remove(p)
        seconds = time.monotonic() - t
        return {"rc": p.returncode, "stdout": out.decode(errors="replace"), "seconds": seconds,
                "stderr": log.read_text(errors="replace")[-2000:] if p.returncode else ""}

    # ------------------------------------------------------------ phase: the raw-Kafka ceiling

    async def ceiling(self, fams: list[Family]) -> dict:
        from aiokafka.admin import NewTopic

        from regsosek.topics import specs

        self.phase = "ceiling"
        spec = next(s for s in specs("local") if s.name == "interview-submitted")
        hops = [f"{self.prefix}ceiling-hop{i}" for i in range(1, HOPS + 1)]
        self.world.extra_topics += hops
        for t in hops:
            self.partitions[t] = spec.partitions
        await asyncio.wait_for(self.offsets.admin.create_topics(
            [NewTopic(name=t, num_partitions=spec.partitions, replication_factor=spec.replication_factor,
                      topic_configs=spec.config) for t in hops]), 30)
        n = self.a.ceiling_records or max(len(fams), 20000)
        fams = [fams[i % len(fams)] for i in range(n)]  # the same payloads, repeated to a measurable amount
        payload = self.work_dir / f"{self.tag}-payload.bin"
        self.temp_files.append(payload)
        write_payload(payload, [(fam.sls_id.encode(), fam.body) for fam in fams])
        deadline = time.time() + self.a.phase_timeout
        stage = [sys.executable, "-m", "regsosek_tools.bench", "_ceiling-stage", "--bootstrap", self.bootstrap,
                 "--count", str(n), "--deadline", str(deadline)]
        groups = [f"{self.prefix}ceiling-relay{i}" for i in range(1, HOPS)] + [f"{self.prefix}ceiling-sink"]
        self.world.extra_groups += groups
        roles = [(f"relay{i}", ["relay", "--src", hops[i - 1], "--dst", hops[i], "--group", groups[i - 1]])
                 for i in range(1, HOPS)]
        roles.append(("sink", ["sink", "--src", hops[-1], "--group", groups[-1]]))
        self.log(f"ceiling: {n} records ({sum(len(f.body) for f in fams) / n / 1024:.1f} KiB each) through "
                 f"{HOPS} topics: producer -> {' -> '.join(r for r, _ in roles)}")
        readings: list[CpuReading | None] = []
        try:
            results = await self._run_stages(stage, roles, ["produce", "--dst", hops[0], "--payload", str(payload)],
                                             deadline, on_producer=lambda: readings.append(self.cpu_reading()))
        except CeilingFailed as e:
            self.errors.append(f"ceiling: {e}")
            return {"error": str(e), "stages": e.results}
        reading0, reading1 = (readings or [None])[0], self.cpu_reading()
        res = ceiling_figures(n, spec.partitions, results, payload_bytes_mean=sum(len(f.body) for f in fams) / n)
        if reading0 is not None and reading1 is not None and "error" not in res:
            res["cpu_budget"] = ceiling_budget(reading0, reading1, {k: v.get("cpu_s") for k, v in results.items()}, n)
        if "error" not in res:
            self.log(f"ceiling: {fnum(res['records_per_s'])} records/s end to end through {HOPS} hops "
                     f"(producer alone {fnum(res['produce_only_per_s'])}/s)")
        return res

    async def _run_stages(self, stage: list[str], roles: list[tuple[str, list[str]]], producer: list[str],
                          deadline: float, on_producer: Callable[[], None] = lambda: None) -> dict[str, dict]:
        """Relays and sink started and ready, then the producer (`on_producer` called just before
        it starts); each stage's result line."""
        procs: dict[str, asyncio.subprocess.Process] = {}
        results: dict[str, dict] = {}
        try:
            for name, args in roles:
                procs[name] = await self._spawn(stage + args, f"ceiling-{name}")
            for name, p in procs.items():
                line = await _read_line(p, 90)
                if json.loads(line or b"{}").get("ready") is not True:
                    raise RuntimeError(f"ceiling {name} did not get ready: {line[:200]!r}")
            on_producer()
            procs["producer"] = await self._spawn(stage + producer, "ceiling-producer")
            remaining = max(10.0, deadline - time.time() + 30)
            for name, p in procs.items():
                line = await _read_line(p, remaining)
                if name == "producer" or name in dict(roles):
                    results[name] = json.loads(line) if line else {"error": "no result"}
                await asyncio.wait_for(p.wait(), 30)
        except (TimeoutError, RuntimeError, ValueError) as e:
            raise CeilingFailed(f"{type(e).__name__}: {e}", results) from e
        finally:
            for p in procs.values():
                if p.returncode is None:
                    _kill_group(p.pid)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(p.wait(), 10)
                if p in self.children:
                    self.children.remove(p)
        return results

    async def _spawn(self, cmd: list[str], name: str) -> asyncio.subprocess.Process:
        log = self.log_dir / f"{self.tag}-{name}.log"
        with _log_file(log) as err:
            p = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                     stderr=err, start_new_session=True)
        self.children.append(p)
        return p

    # ------------------------------------------------------------ per-service figures from the samples

    def phase_services(self, phase: str) -> dict[str, dict]:
        return self.sampler.phase_services(phase)

    def memory(self) -> dict[str, dict]:
        return self.sampler.memory()

    def lag_series(self) -> dict[str, list]:
        return self.sampler.lag_series()


def _kill_group(pid: int | None, sig: int = signal.SIGKILL) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


def falls_behind_because(res: dict, rate: int, connections: int) -> list[str]:
    """Why an open-loop window at `rate` did not keep up (empty when it did), from its figures."""
    reasons = []
    busy = res["connections_busy_max"]
    if res["sent_rate"] < 0.95 * rate:
        if busy >= connections:
            why = f"all {connections} connections were waiting for intake's answers"
        else:
            why = f"at most {busy} of {connections} connections were busy: the generator lacked CPU"
        reasons.append(f"only {res['sent_rate']:.0f}/s were sent ({why})")
    if res["accepted_rate"] is not None and res["accepted_rate"] < 0.9 * rate:
        reasons.append(f"intake accepted only {res['accepted_rate']:.0f}/s")
    if res["not_accepted"]:
        reasons.append(f"intake did not accept {res['not_accepted']} submissions ({res['statuses']})")
    if res["undelivered"]:
        reasons.append(f"{res['undelivered']} decisions never reached the receiver ({res['ended']})")
    first, last = res["p50_first_quarter_s"], res["p50_last_quarter_s"]
    if first is not None and last is not None and last > max(2 * first, first + 1.0):
        reasons.append(f"latency grew during the window (p50 {first:.2f} s -> {last:.2f} s): a growing backlog")
    return reasons


def profiled_phase(label: str) -> bool:
    """--profile records the throughput phase and each stored step, not their warm-ups."""
    return label == "throughput" or (label.startswith("stored-") and not label.endswith("-warmup"))


async def disk_problem(dsns: dict[str, str], have: int, more: int) -> str | None:
    """Why `more` families would not fit on the database server's disk (None when they fit, or when
    that cannot be known: a server on another machine, a user who may not read its data directory),
    from the bytes per family stored so far."""
    import asyncpg

    from regsosek_tools.load.stored import database_sizes

    dsn = next(iter(dsns.values()))
    if have <= 0 or urlsplit(dsn).hostname not in (None, "", "127.0.0.1", "localhost", "::1"):
        return None
    try:
        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            data_dir = await conn.fetchval("show data_directory")
        finally:
            await conn.close()
        free = shutil.disk_usage(data_dir).free
    except Exception:  # noqa: BLE001 - not a superuser, or not readable from here: nothing to check against
        return None
    return disk_shortfall(sum((await database_sizes(dsns)).values()) / have, more, free)


def disk_shortfall(per_family: float, more: int, free: int) -> str | None:
    """The reason `more` families of `per_family` bytes do not fit in `free` bytes (with 1.5× for
    indexes growing faster than tables while loading, and WAL; a fifth of the free space kept)."""
    need = per_family * more * 1.5
    if need > 0.8 * free:
        return (f"{more:,} more families need about {need / 2**30:.1f} GiB ({per_family / 1024:.1f} KiB each, "
                f"with indexes and WAL); {free / 2**30:.1f} GiB free on the database server's disk")
    return None


def _log_file(path: Path):
    """A child process's log, appended to (opened once at its start)."""
    return open(path, "ab")  # noqa: SIM115 - closed by the caller's with


# ================================================================ the run


async def measure(b: Bench, pool: Pool, result: dict) -> None:
    """The phases asked for, in order, into `result`."""
    a = b.a
    result["bench"]["partitions"] = b.partitions.get(b.world.topic("interview-submitted"))
    if a.warmup:
        b.log(f"warm-up: {a.warmup} families (not measured)")
        w = await b.upload(pool.take(a.warmup), "warmup")
        result["warmup"] = {k: w.get(k) for k in ("families", "families_per_s", "ended")}
    throughput_fams: list[Family] = []
    if "throughput" in a.phases:
        throughput_fams = pool.take(a.families)
        result["throughput"] = await b.upload(throughput_fams, "throughput")
        result["throughput"]["per_service"] = b.phase_services("throughput")
        if a.idle_window > 0:
            result["idle_cpu"] = await b.idle_cpu(a.idle_window)
    if "latency" in a.phases:
        result["latency"] = await latency_phases(b, pool)
    if "scale" in a.phases:
        result["scale"] = await b.scale(pool, a.scale_families)
    if "replay" in a.phases:
        result["replay"] = await b.replay()
    if "ceiling" in a.phases:
        fams = throughput_fams or pool.families[a.warmup:a.warmup + a.families]
        result["ceiling"] = await b.ceiling(fams)
        tp = (result.get("throughput") or {}).get("families_per_s")
        cr = result["ceiling"].get("records_per_s")
        if tp and cr:
            result["ceiling"]["pipeline_families_per_s"] = tp
            result["ceiling"]["ratio"] = tp / cr
        tb = (result.get("throughput") or {}).get("cpu_budget") or {}
        cb = result["ceiling"].get("cpu_budget") or {}
        result["ceiling"]["cpu_bound_ratio"] = bound(tb.get("total_ms_per_unit"), cb.get("total_ms_per_unit"))
    if "rerank" in a.phases:  # databases of its own, not the world's
        result["rerank"] = await b.rerank()
    if "stored" in a.phases:  # last: it leaves millions of families in the world
        result["stored"] = await b.stored(pool)


async def latency_phases(b: Bench, pool: Pool) -> list[dict]:
    """One open-loop window per offered rate; rates above one the pipeline fell behind at are
    skipped unless --all-rates."""
    a = b.a
    out: list[dict] = []
    failed_at = None
    for rate in a.rates:
        fams = pool.take(len(schedule(rate, a.duration)))
        if failed_at is not None and rate > failed_at and not a.all_rates:
            out.append({"rate": rate, "duration_s": a.duration, "skipped": f"the pipeline fell behind at {failed_at}/s"})
            b.log(f"latency-{rate}: skipped, the pipeline fell behind at {failed_at}/s (--all-rates runs it)")
            continue
        random.Random(f"{a.seed}:{rate}").shuffle(fams)  # officers all over the province at once
        entry = await b.open_loop(fams, rate, a.duration)
        entry["per_service"] = b.phase_services(f"latency-{rate}")
        out.append(entry)
        if not entry["keeps_up"] and failed_at is None:
            failed_at = rate
    return out


async def interruptible(work: Awaitable[None], b: Bench) -> bool:
    """Runs `work`; True when it was interrupted (Ctrl-C, SIGTERM), after which clean-up can wait and
    time out normally."""
    try:
        await work
        return False
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        b.log("interrupted: cleaning up")
        return True


async def setup_and_measure(b: Bench, pool: Pool, result: dict) -> None:
    await b.setup(pool)
    await measure(b, pool, result)


async def one_broker_count(b: Bench, n: int, pool: Pool, warm: list[Family], fams: list[Family], out: list[dict]) -> None:
    await b.setup(pool)
    if warm:
        await b.upload(warm, f"brokers-{n}-warmup")
    res = await b.upload(fams, f"brokers-{n}")
    res.update({"brokers": n, "replication_factor": n, "min_insync": min_insync(n), "world": b.tag,
                "per_service": b.phase_services(f"brokers-{n}"), "services": b.memory()})
    out.append(res)


async def compare_brokers(a: argparse.Namespace, pool: Pool, errors: list[str], out: list[dict]) -> bool:
    """The same families, after the same warm-up, through one fresh world per broker count in
    --brokers (world.create_placed_topics), one after another on the cluster, into `out`. True when
    interrupted."""
    warm, fams = pool.take(a.warmup), pool.take(a.scale_families)
    for n in a.brokers:
        b = Bench(a, brokers=n)
        b.log(f"brokers-{n}: world {b.tag}, topics on {n} broker(s), min.insync.replicas {min_insync(n)}")
        try:
            interrupted = await interruptible(one_broker_count(b, n, pool, warm, fams, out), b)
        finally:
            errors.extend(f"brokers-{n}: {e}" for e in b.errors)
            b.log(f"brokers-{n}: stopping the services, dropping the databases and topics")
            await b.teardown()
        if interrupted:
            return True
    return False


async def check_stack(a: argparse.Namespace) -> None:
    """The stack answers, and has the brokers --brokers asks for."""
    try:
        stack = Stack.from_env()
        stack.check()
        if "brokers" in a.phases:
            nodes = await broker_ids(stack.bootstrap)
            if max(a.brokers) > len(nodes):
                raise StackDown(f"--brokers {','.join(map(str, a.brokers))} needs {max(a.brokers)} brokers, the "
                                f"stack at {stack.bootstrap} has {len(nodes)}: start the three-broker stack "
                                "(REGSOSEK_KAFKA_BROKERS=3 make stack-up, or REGSOSEK_KAFKA_BROKERS=3 make bench ...)")
    except StackDown as e:
        raise SetupError(str(e)) from None


def families_needed(a: argparse.Namespace) -> int:
    """Families the phases asked for take from the pool."""
    latency_n = sum(len(schedule(r, a.duration)) for r in a.rates) if "latency" in a.phases else 0
    main = [p for p in a.phases if p != "brokers"]
    need = ((a.warmup if main else 0) + (a.families if "throughput" in a.phases else 0) + latency_n
            + (a.scale_families * len(a.instances) if "scale" in a.phases else 0)
            + ((a.warmup + a.stored_families) * len(a.stored) if "stored" in a.phases else 0))
    if "ceiling" in a.phases:
        need = max(need, a.warmup + a.families)
    if "brokers" in a.phases:
        need += a.warmup + a.scale_families  # the same families in every broker configuration
    return need


async def run(a: argparse.Namespace) -> dict:
    await check_stack(a)
    commit, dirty = git_commit()
    started = datetime.now(UTC)
    result: dict = {
        "bench": {"date": started.date().isoformat(), "started_at": started.isoformat(timespec="seconds"),
                  "commit": commit + ("+dirty" if dirty else ""), "dirty": dirty, "args": vars(a).copy()},
        "machine": machine_info(),
        "targets": TARGETS,
    }
    b = Bench(a)  # the world of every phase but brokers (set up only when one of them runs)
    if a.profile:
        b.flames = FlameGraphs(a.report_dir, date=result["bench"]["date"], commit=result["bench"]["commit"],
                               rate=a.profile_rate, log_dir=b.log_dir, log=b.log, checkout=ROOT)
    main_phases = [p for p in a.phases if p != "brokers"]
    result["bench"]["world"] = b.tag if main_phases else None
    need = families_needed(a)
    b.log(f"generating {need} families (seed {a.seed})")
    pool = build_pool(a.seed, max(need, 1))
    result["bench"]["families_generated"] = len(pool.families)
    result["bench"]["sls"] = len(pool.rosters)
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:  # like Ctrl-C: stop measuring, then clean up
        if main_task is not None and not main_task.cancelling():
            main_task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    interrupted = False
    try:
        if main_phases:
            try:
                interrupted = await interruptible(setup_and_measure(b, pool, result), b)
            finally:
                result["services"] = b.memory()
                result["lag_series"] = b.lag_series()
                result["samples"] = [s.__dict__ for s in b.samples]
                b.log("stopping the services, dropping the databases and topics")
                await b.teardown()
        if "brokers" in a.phases and not interrupted:
            result["brokers"] = []
            interrupted = await compare_brokers(a, pool, b.errors, result["brokers"])
    finally:
        result["errors"] = b.errors
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
    result["bench"]["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["bench"]["interrupted"] = interrupted
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    if result.get("scale"):
        result["scale_ratios"] = ratios([(s["instances"], s.get("families_per_s")) for s in result["scale"]])
    if result.get("brokers"):
        result["brokers_ratios"] = ratios([(s["brokers"], s.get("families_per_s")) for s in result["brokers"]])
    if result.get("stored"):
        result["stored_ratios"] = ratios([(s["stored_families"], s.get("families_per_s")) for s in result["stored"]])
    result["profiles"] = b.profiles
    if a.plots:
        result["plots"] = write_plots(a, result)
    result["markdown_row"] = markdown_row(result)
    result["comparison_rows"] = comparison_rows(result)
    return result


def write_plots(a: argparse.Namespace, result: dict) -> list[str]:
    """--plots: the PNGs of this run (and of --rerank-json) into --report-dir."""
    from regsosek_tools.report.plots import write_bench_plots, write_rerank_plot

    written = [str(p) for p in write_bench_plots([result], a.report_dir)]
    if (result.get("rerank") or {}).get("points"):
        written.append(str(write_rerank_plot(result["rerank"]["points"], a.report_dir)))
    if a.rerank_json:
        try:
            written.append(str(write_rerank_plot(json.loads(Path(a.rerank_json).read_text()), a.report_dir)))
        except (OSError, ValueError) as e:
            result["errors"].append(f"plots: {a.rerank_json}: {type(e).__name__}: {e}")
    return written


def _commas(counts: list[int]) -> str:
    return ",".join(str(n) for n in counts)


def parse_counts(text: str) -> list[int]:
    """Non-negative integers separated by commas, ascending (families stored: 0 is the empty store)."""
    try:
        out = sorted({int(x) for x in text.replace(" ", "").replace("_", "").split(",") if x})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not out or out[0] < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers separated by commas, got {text!r}")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--families", type=int, help="families in the throughput phase (default 20000; --quick 2000)")
    p.add_argument("--rates", type=parse_list, default=[100, 500, 1000], help="offered rates, families/s")
    p.add_argument("--duration", type=float, help="seconds per offered rate (default 20; --quick 8)")
    p.add_argument("--instances", type=parse_list, default=[1, 2],
                   help="instances of every service to compare in the scale phase (default 1,2)")
    p.add_argument("--brokers", type=parse_list,
                   help="broker counts to compare (e.g. 1,3) on the three-broker stack; adds the brokers phase "
                        "(default 1,3 when --phases names it)")
    p.add_argument("--scale-families", type=int, help="families per scale configuration (default families/4)")
    p.add_argument("--quick", action="store_true", help="2,000 families, 8 s per rate: to try the harness")
    p.add_argument("--out", help="JSON result (default .local/bench/<UTC time>.json)")
    p.add_argument("--seed", type=int, default=2022)
    p.add_argument("--devices", type=int, default=16, help="concurrent uploading devices in throughput phases")
    p.add_argument("--batch-size", type=int, default=100, help="interviews per batch request")
    p.add_argument("--warmup", type=int, help="families sent before measuring (default 200; --quick 100)")
    p.add_argument("--max-inflight", type=int, default=512, help="open-loop connections to intake at most")
    p.add_argument("--ceiling-records", type=int,
                   help="records through the raw-Kafka ceiling (default max(families, 20000), payloads repeated)")
    p.add_argument("--all-rates", action="store_true",
                   help="run every rate even after the pipeline fell behind at a lower one")
    p.add_argument("--phases", default="throughput,latency,scale,replay,ceiling",
                   help="which measurements (default throughput,latency,scale,replay,ceiling; also: brokers, stored, "
                        "rerank)")
    p.add_argument("--stored", type=parse_counts,
                   help="families already stored to measure throughput at (e.g. 0,200000,2000000); adds the stored "
                        "phase (default 0,200000,2000000 when --phases names it)")
    p.add_argument("--stored-families", type=int, help="families measured at each stored size (default --families)")
    p.add_argument("--rerank-sizes", type=parse_counts,
                   help="families in the scope to time a re-rank and a replay at (e.g. 100000,1000000,5000000), each "
                        "bulk-loaded into a database of its own; adds the rerank phase (default "
                        "100000,1000000,5000000 when --phases names it)")
    p.add_argument("--rerank-replay-sizes", type=parse_counts,
                   help="of --rerank-sizes, those to time a replay at too (default: all)")
    p.add_argument("--rerank-scope", default="regency", choices=("national", "province", "regency"),
                   help="the re-rank's scope in the rerank phase (default regency)")
    p.add_argument("--replay-processes", type=int, default=2,
                   help="processes the rerank phase's replay is spread over (default 2)")
    p.add_argument("--rerank-timeout", type=float, default=7200.0, help="seconds the rerank phase may take at most")
    p.add_argument("--profile", action="store_true",
                   help="flame graphs (py-spy record) of every service during throughput and each stored step")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    p.add_argument("--plots", action="store_true",
                   help="PNG plots of this run into --report-dir (throughput against families stored; re-rank with "
                        "--rerank-json)")
    p.add_argument("--rerank-json", help="a re-rank measurement (time and RSS per scope size) to plot with --plots")
    p.add_argument("--report-dir", type=Path, default=ROOT / "docs" / "bench",
                   help="where --plots and --profile write (default docs/bench)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="extra environment for the services")
    p.add_argument("--settle-timeout", type=float, help="seconds to wait for consumer lag to clear after a phase")
    p.add_argument("--phase-timeout", type=float, help="seconds a phase may take at most")
    p.add_argument("--stall-timeout", type=float, default=120.0,
                   help="a phase ends when the receiver got nothing new for this long")
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--idle-window", type=float, default=10.0,
                   help="seconds with nothing sent after the throughput phase, for the CPU budget's fixed part "
                        "(default 10; 0: none)")
    p.add_argument("--replay-timeout", type=float, default=900.0)
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, with the defaults that depend on --quick filled in."""
    p = parser()
    a = p.parse_args(argv)
    a.phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    unknown = set(a.phases) - {"throughput", "latency", "scale", "replay", "ceiling", "brokers", "stored", "rerank"}
    if unknown:
        p.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if a.brokers and "brokers" not in a.phases:
        a.phases.append("brokers")
    a.brokers = a.brokers or ([1, 3] if "brokers" in a.phases else [])
    if a.stored and "stored" not in a.phases:
        a.phases.append("stored")
    a.stored = a.stored or ([0, 200_000, 2_000_000] if "stored" in a.phases else [])
    if a.rerank_sizes and "rerank" not in a.phases:
        a.phases.append("rerank")
    a.rerank_sizes = a.rerank_sizes or ([100_000, 1_000_000, 5_000_000] if "rerank" in a.phases else [])
    a.rerank_replay_sizes = a.rerank_sizes if a.rerank_replay_sizes is None else a.rerank_replay_sizes
    if a.replay_processes < 1:
        p.error("--replay-processes must be at least 1")
    a.families = a.families or (2000 if a.quick else 20000)
    a.duration = a.duration or (8.0 if a.quick else 20.0)
    a.warmup = a.warmup if a.warmup is not None else (100 if a.quick else 200)
    a.scale_families = a.scale_families or max(200, a.families // 4)
    a.stored_families = a.stored_families or a.families
    a.settle_timeout = a.settle_timeout or (180.0 if a.quick else 600.0)
    a.phase_timeout = a.phase_timeout or (600.0 if a.quick else 1800.0)
    if a.families < 1 or a.duration <= 0 or a.devices < 1 or not 1 <= a.batch_size <= 500:
        p.error("--families, --duration, --devices must be positive and --batch-size 1..500")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_ceiling-stage"]:
        return ceiling_stage_main(argv[1:])
    a = parse_args(argv)
    out = Path(a.out) if a.out else ROOT / ".local" / "bench" / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    try:
        with runner:
            result = runner.run(run(a))
    except SetupError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted again during clean-up: bench databases and topics may be left behind "
              "(names start with bench)", file=sys.stderr)
        return 130
    finally:
        for pid in list(_STARTED):  # only if the orderly stop did not happen
            _kill_group(pid)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=_json_default))
    print_summary(result)
    print_lag(result)
    print(f"\nJSON: {out}")
    if result["bench"].get("interrupted"):
        return 130
    return 1 if result["errors"] else 0


def _json_default(o):
    if isinstance(o, set):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


if __name__ == "__main__":
    raise SystemExit(main())
