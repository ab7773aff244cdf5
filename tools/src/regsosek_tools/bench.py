"""Benchmark the pipeline end to end on the local stack, against issue 7's targets.

    python -m regsosek_tools.bench                      # the full run (20,000 families; ~10-30 min)
    python -m regsosek_tools.bench --quick              # smaller and shorter, to try the harness
    python -m regsosek_tools.bench --families 50000 --rates 100,500,1000,2000 --duration 30 --instances 1,2,3

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
 6. horizontal scale: the throughput measurement with 1, 2, ... instances of verify and
    classify in their consumer groups.

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
import math
import os
import platform
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from regsosek.kafka_security import client_options
from regsosek.progress import Progress, progress
from regsosek_tools.processes import ROOT, ServiceNotReady, ServiceProcess, stack_env

SERVICES = ("intake", "verify", "classify", "notify")
SCALED = ("verify", "classify")  # the services --instances multiplies
# Topics each service's consumer group reads (services/<name>/src/<name>/app.py); the lag
# sampler adds any other topic a group turns out to have committed offsets for.
GROUP_TOPICS = {
    "intake": ("interview-verified", "interview-flagged", "family-classified", "eligibility-decided"),
    "verify": ("sls-roster", "interview-submitted", "verification-resolved"),
    "classify": ("interview-verified", "fkp-adjustment"),
    "notify": ("eligibility-decided",),
}
DECIDED_OUTCOMES = ("verified", "verified_added")  # verification outcomes that lead to an eligibility decision
CONSUMED_METRIC = "regsosek_events_consumed_total"
HOPS = 3  # intake -> verify -> classify -> notify: three Kafka hops

TARGETS = {
    "sustained_families_per_s": 5000.0,  # at least
    "p99_s_at_1000": 1.0,  # at most, at 1,000 families/s offered
    "replay_families_per_s": 20000.0,  # at least
    "rss_mb": 200.0,  # at most, per service process
    "ceiling_ratio": 0.5,  # at least
}
LATENCY_TARGET_RATE = 1000
# Process groups this run started; killed on the way out if the orderly stop was cut short.
_STARTED: set[int] = set()


class SetupError(Exception):
    """The bench could not start: the stack, a service or the subscription is missing."""


# ================================================================ pure helpers


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least p% of values at or below it)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def distribution(values: Sequence[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else None,
            "mean": (sum(values) / len(values)) if values else None}


def schedule(rate: float, duration: float) -> list[float]:
    """Send offsets (seconds from the start) of an open-loop load at `rate` per second for
    `duration` seconds: evenly spaced, round(rate * duration) of them."""
    if rate <= 0 or duration <= 0:
        return []
    return [i / rate for i in range(round(rate * duration))]


def due(offsets: Sequence[float], start: int, elapsed: float) -> int:
    """Index one past the last offset at or before `elapsed`, scanning from `start`."""
    i = start
    while i < len(offsets) and offsets[i] <= elapsed:
        i += 1
    return i


def parse_counter(text: str, name: str) -> float:
    """Sum of a Prometheus counter over all its label sets, from /metrics text."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)", text, re.MULTILINE):
        with contextlib.suppress(ValueError):
            total += float(m.group(1))
    return total


def group_lag(committed: dict, ends: dict) -> int:
    """Records behind for a group: end offset minus committed offset per partition; a
    partition without a committed offset counts from 0 (groups start from the earliest)."""
    return sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())


def sparkline(values: Sequence[float], width: int = 40) -> str:
    if not values:
        return ""
    bars = "▁▂▃▄▅▆▇█"
    if len(values) > width:  # max per bucket: a short spike stays visible
        step = len(values) / width
        values = [max(values[int(i * step):max(int(i * step) + 1, int((i + 1) * step))]) for i in range(width)]
    top = max(values)
    if top <= 0:
        return bars[0] * len(values)
    return "".join(bars[min(len(bars) - 1, int(v / top * (len(bars) - 1) + 0.5))] for v in values)


def parse_list(text: str) -> list[int]:
    out = [int(x) for x in text.replace(" ", "").split(",") if x]
    if not out or any(x <= 0 for x in out):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return out


def fnum(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def meets(value: float | None, target: float, *, at_least: bool) -> bool | None:
    if value is None:
        return None
    return value >= target if at_least else value <= target


def mark(ok: bool | None) -> str:
    return {True: "✓", False: "✗", None: "–"}[ok]


def rate_entry(result: dict, rate: int) -> dict | None:
    return next((e for e in result.get("latency") or [] if e.get("rate") == rate), None)


def target_figures(result: dict) -> dict:
    """Each target's figure from a result, with whether it is met (None: not measured)."""
    tp = result.get("throughput") or {}
    sustained = tp.get("families_per_s")
    lat = rate_entry(result, LATENCY_TARGET_RATE)
    if "latency" not in result:
        p99, p99_ok, p99_note = None, None, "not run"
    elif lat is None:
        p99, p99_ok, p99_note = None, None, f"not run: {LATENCY_TARGET_RATE}/s not in --rates"
    elif lat.get("skipped"):
        p99, p99_ok, p99_note = None, False, f"not run: {lat['skipped']}"
    else:
        p99 = (lat.get("latency_s") or {}).get("p99")
        if lat.get("keeps_up"):
            p99_ok, p99_note = meets(p99, TARGETS["p99_s_at_1000"], at_least=False), ""
        else:
            p99_ok = False
            p99_note = (f"fell behind: {fnum(lat.get('accepted_rate'))}/s accepted, "
                        f"{lat.get('undelivered', 0)} undelivered")
    replay = result.get("replay") or {}
    rfps = replay.get("families_per_s") if replay.get("available") else None
    services = result.get("services") or {}
    rss = [(s.get("max_rss_mb"), name) for name, s in services.items()
           if name in SERVICES and s.get("max_rss_mb") is not None]
    rss_max, rss_who = max(rss) if rss else (None, "")
    ratio = (result.get("ceiling") or {}).get("ratio")
    return {
        "sustained": (sustained, meets(sustained, TARGETS["sustained_families_per_s"], at_least=True)),
        "p99": (p99, p99_ok, p99_note),
        "replay": (rfps, meets(rfps, TARGETS["replay_families_per_s"], at_least=True),
                   "" if replay.get("available") else (replay.get("reason") or "not run")),
        "rss": (rss_max, meets(rss_max, TARGETS["rss_mb"], at_least=False), rss_who),
        "ratio": (ratio, meets(ratio, TARGETS["ceiling_ratio"], at_least=True)),
    }


MARKDOWN_HEADER = (
    "| date | commit | machine | families | sustained families/s (≥ 5,000) | p99 at 1,000/s (≤ 1 s) "
    "| replay families/s (≥ 20,000) | max RSS per service (≤ 200 MB) | pipeline / ceiling (≥ 50%) "
    "| ceiling records/s | instances → families/s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def markdown_row(result: dict) -> str:
    """One row for BENCHMARKS.md (columns as MARKDOWN_HEADER)."""
    b, m = result.get("bench") or {}, result.get("machine") or {}
    f = target_figures(result)
    sustained, ok = f["sustained"]
    p99, p99_ok, p99_note = f["p99"]
    replay, replay_ok, replay_note = f["replay"]
    rss, rss_ok, rss_who = f["rss"]
    ratio, ratio_ok = f["ratio"]
    cells = [
        b.get("date", ""),
        b.get("commit", ""),
        f"{m.get('nproc', '?')} CPU, {m.get('mem_gib', 0):.0f} GiB",
        fnum((result.get("throughput") or {}).get("families")),
        f"{fnum(sustained, 1)} {mark(ok)}",
        (f"{p99:.2f} s {mark(p99_ok)}" if p99 is not None else "n/a") + (f" ({p99_note})" if p99_note else ""),
        f"{fnum(replay)} {mark(replay_ok)}" if replay is not None else f"n/a ({replay_note})",
        f"{rss:.0f} MB {mark(rss_ok)} ({rss_who})" if rss is not None else "n/a",
        f"{ratio * 100:.1f}% {mark(ratio_ok)}" if ratio is not None else "n/a",
        fnum((result.get("ceiling") or {}).get("records_per_s")),
        ", ".join(f"{s['instances']} → {fnum(s.get('families_per_s'), 1)}" for s in result.get("scale") or []) or "n/a",
    ]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


# ================================================================ the machine


def machine_info() -> dict:
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    kafka = ""
    with contextlib.suppress(OSError):
        kafka = next((ln.split("=", 1)[1].strip().strip("\"'") for ln in
                      (ROOT / "scripts" / "versions.env").read_text().splitlines() if ln.startswith("KAFKA_VERSION")), "")
    return {"nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "mem_gib": mem_kb / 1024 / 1024, "cpu": cpu, "python": platform.python_version(),
            "kernel": platform.release(), "kafka": kafka, "loadavg_at_start": os.getloadavg()}


def git_commit() -> tuple[str, bool]:
    """(short commit, whether tracked files differ from it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit or "unknown", dirty


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ================================================================ a lean HTTP/1.1 client


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client for the load generator: requests are prebuilt
    bytes, responses are (status, body). It costs far less CPU per request than a general
    client, which matters when the generator shares two cores with what it measures."""

    IDLE_MAX_S = 3.0  # below uvicorn's keep-alive timeout (5 s): older idle connections are not reused

    def __init__(self, host: str, port: int, *, connections: int, timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(connections)
        self.connections = connections
        self.busy = 0  # requests on a connection now
        self.busy_max = 0  # the most at once since the caller last reset it

    def build(self, method: str, path: str, body: bytes = b"", token: str | None = None) -> bytes:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json",
                f"Content-Length: {len(body)}"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def request(self, raw: bytes) -> tuple[int, bytes, float]:
        """Send one prebuilt request; returns (status, body, wall time it was sent)."""
        async with self._slots:
            self.busy += 1
            self.busy_max = max(self.busy_max, self.busy)
            try:
                return await self._request(raw)
            finally:
                self.busy -= 1

    async def _request(self, raw: bytes) -> tuple[int, bytes, float]:
        for attempt in (0, 1):
            conn = None
            while attempt == 0 and self._idle and conn is None:
                *rw, used = self._idle.pop()
                if time.monotonic() - used < self.IDLE_MAX_S:
                    conn = tuple(rw)
                else:
                    self._close(rw)
            reused = conn is not None
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
            sent = time.time()
            try:
                async with asyncio.timeout(self.timeout):
                    conn[1].write(raw)
                    await conn[1].drain()
                    status, body, keep = await self._response(conn[0])
            except (ConnectionError, asyncio.IncompleteReadError):
                self._close(conn)
                if reused and attempt == 0:
                    continue  # the server had closed this idle keep-alive connection: once more, on a new one
                raise
            except BaseException:
                self._close(conn)
                raise
            if keep:
                self._idle.append((*conn, time.monotonic()))
            else:
                self._close(conn)
            return status, body, sent
        raise AssertionError("unreachable")

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        keep = headers.get("connection", "").lower() != "close"
        if status in (204, 304) or 100 <= status < 200:
            return status, b"", keep
        if "content-length" in headers:
            return status, await reader.readexactly(int(headers["content-length"])), keep
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return status, b"".join(chunks), keep
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
        return status, await reader.read(), False

    @staticmethod
    def _close(conn) -> None:
        with contextlib.suppress(Exception):
            conn[1].close()

    async def close(self) -> None:
        while self._idle:
            self._close(self._idle.pop())


# ================================================================ the families


@dataclass
class Family:
    family_id: str
    sls_id: str
    officer: str
    body: bytes  # the interview as JSON, exactly as uploaded
    decided: bool  # expected to reach an eligibility decision (verified or verified as added)


@dataclass
class Pool:
    families: list[Family]
    rosters: list[tuple[str, str, bytes]]  # (sls id, officer, roster JSON)
    taken: int = 0

    def take(self, n: int) -> list[Family]:
        if self.taken + n > len(self.families):
            raise RuntimeError(f"sample exhausted: {n} wanted, {len(self.families) - self.taken} left")
        out = self.families[self.taken:self.taken + n]
        self.taken += n
        return out


def build_pool(seed: int, needed: int) -> Pool:
    """`needed` distinct families from one deterministic sample, with every SLS roster.

    The sample's second-wave families (a duplicate NIK copied from an earlier family)
    are left out: whether they or their donor gets flagged depends on arrival order, and
    the bench needs to know in advance which families will be decided."""
    from regsosek_tools.sample import generate, officer_for

    want = needed + needed // 20 + 50
    while True:
        sample = generate(seed, want)
        first = [iv for iv in sample.interviews if iv.family_id not in sample.depends_on]
        if len(first) >= needed:
            break
        want = int(want * 1.2) + 100
    families = [Family(iv.family_id, iv.location.sls_id, officer_for(iv.location.sls_id),
                       orjson.dumps(iv.model_dump(mode="json")), sample.expected[iv.family_id] in DECIDED_OUTCOMES)
                for iv in first[:needed]]
    used = {f.sls_id for f in families}
    rosters = [(r.sls_id, officer_for(r.sls_id), orjson.dumps(r.model_dump(mode="json")))
               for r in sample.rosters if r.sls_id in used]
    return Pool(families, rosters)


# ================================================================ processes: RSS, CPU


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_memory_kb(pid: int) -> tuple[int | None, int | None]:
    """(VmRSS, VmHWM) of a process in kB, from /proc/<pid>/status."""
    rss = hwm = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, hwm


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def system_cpu() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    try:
        parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return float(sum(parts) - idle), float(sum(parts))


# ================================================================ the bench


@dataclass
class Instance:
    key: str  # "verify", "verify#2", ...
    service: str  # "verify" (or "receiver")
    proc: ServiceProcess


@dataclass
class Snapshot:
    t: float  # seconds since the bench started
    phase: str
    rss_kb: dict[str, int] = field(default_factory=dict)
    hwm_kb: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    consumed: dict[str, float] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    cpu_busy: float | None = None  # whole machine, % of all CPUs since the previous sample


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        env = stack_env()
        self.bootstrap = env["REGSOSEK_KAFKA_BOOTSTRAP"]
        self.pg_base = env["REGSOSEK_PG_URL_BASE"].rstrip("/")
        self.id = uuid.uuid4().hex[:8]
        self.tag = f"bench{self.id}"
        self.prefix = f"{self.tag}."
        from regsosek.auth import local_jwks_file

        self.jwks_file = str(local_jwks_file())  # the local key pair (made on first use) signs the bench's tokens
        from regsosek_tools import receiver as receiver_mod

        self.receiver_secret = os.environ.get("REGSOSEK_RECEIVER_SECRET") or receiver_mod.DEFAULT_SECRET
        self.log_dir = ROOT / ".local" / "logs" / "bench"
        self.work_dir = ROOT / ".local" / "bench"
        self.instances: dict[str, Instance] = {}
        self.databases: list[str] = []
        self.topics: list[str] = []
        self.groups: list[str] = [f"{self.prefix}regsosek-{s}" for s in SERVICES]
        self.temp_files: list[Path] = []
        self.children: list[asyncio.subprocess.Process] = []
        self.samples: list[Snapshot] = []
        self.phase = "setup"
        self.t0 = time.monotonic()
        self.errors: list[str] = []
        self.partitions: dict[str, int] = {}
        self._tokens: dict[str, str] = {}
        self._admin = None
        self._offsets_consumer = None
        self._sampler: asyncio.Task | None = None
        self.http = None  # httpx.AsyncClient for control calls
        self.intake: RawHttp | None = None
        self.subscription_id: str | None = None
        self.receiver_url = ""
        self.notify_url = ""
        self.progress_every = 2.0 if sys.stderr.isatty() else 5.0

    # ------------------------------------------------------------ small things

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

    def database(self, service: str) -> str:
        return f"{self.tag}_{service}"

    def dsn(self, service: str) -> str:
        return f"{self.pg_base}/{self.database(service)}"

    def service_env(self, service: str, port: int) -> dict[str, str]:
        env = {
            "REGSOSEK_KAFKA_BOOTSTRAP": self.bootstrap,
            "REGSOSEK_PG_URL_BASE": self.pg_base,
            "REGSOSEK_DATABASE_URL": self.dsn(service),
            "REGSOSEK_TOPIC_PREFIX": self.prefix,
            "REGSOSEK_HTTP_HOST": "127.0.0.1",
            "REGSOSEK_HTTP_PORT": str(port),
            "REGSOSEK_LOG_LEVEL": "WARNING",
            "REGSOSEK_AUTH_JWKS_FILE": self.jwks_file,
            # the bench's tokens live for a day (a run can be long); services refuse beyond the maximum
            "REGSOSEK_AUTH_MAX_TOKEN_LIFETIME_S": str(24 * 3600),
            "REGSOSEK_FAULT_EXIT_AFTER_DB_COMMIT": "",
            "REGSOSEK_FAULT_RELAY_EXIT_AFTER_SENDS": "",
        }
        for kv in self.a.env or []:
            k, _, v = kv.partition("=")
            env[k] = v
        return env

    # ------------------------------------------------------------ set-up and tear-down

    async def setup(self, pool: Pool) -> None:
        import asyncpg
        import httpx
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        from regsosek.topics import create_topics, specs

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.http = httpx.AsyncClient(timeout=15.0)
        self.partitions = {self.prefix + s.name: s.partitions for s in specs("local")}

        self.log(f"world {self.tag}: databases {self.tag}_*, topics {self.prefix}*")
        conn = await asyncpg.connect(f"{self.pg_base}/postgres", timeout=15)
        try:
            for s in SERVICES:
                await conn.execute(f'create database "{self.database(s)}"')
                self.databases.append(self.database(s))
        finally:
            await conn.close()
        self.topics = list(self.partitions)
        await asyncio.wait_for(create_topics(self.bootstrap, prefix=self.prefix), 60)

        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000,
                                          **client_options())
        await self._admin.start()
        self._offsets_consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, **client_options(),
                                                  enable_auto_commit=False, request_timeout_ms=10_000)
        await self._offsets_consumer.start()

        for s in SERVICES:
            self._instance(s, s)
        self._instance("receiver", "receiver", {"REGSOSEK_RECEIVER_SECRET": self.receiver_secret})
        await self.start_instances(list(self.instances.values()))
        self.receiver_url = self.instances["receiver"].proc.url
        self.notify_url = self.instances["notify"].proc.url
        self.intake = RawHttp("127.0.0.1", self.instances["intake"].proc.port, connections=self.a.max_inflight)
        self._sampler = asyncio.create_task(self._sample_forever())
        await self.subscribe()
        await self.submit_rosters(pool)

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
            _STARTED.discard(i.proc.pid)

    async def teardown(self) -> None:
        import asyncpg
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.protocol.admin import DeleteGroupsRequest

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
        for closer in (self._offsets_consumer, self._admin):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closer.stop() if hasattr(closer, "stop") else closer.close(), 10)
        if self.databases:
            for attempt in range(10):
                try:
                    conn = await asyncpg.connect(f"{self.pg_base}/postgres", timeout=10)
                    try:
                        for d in list(self.databases):
                            await conn.execute(f'drop database if exists "{d}" with (force)')
                            self.databases.remove(d)
                    finally:
                        await conn.close()
                    break
                except Exception as e:  # noqa: BLE001 - keep trying, then say what is left
                    if attempt == 9:
                        self.log(f"could not drop databases {self.databases}: {type(e).__name__}: {e}")
                    await asyncio.sleep(1.0)
        if self.topics:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=15_000,
                                        **client_options())
            try:
                await asyncio.wait_for(admin.start(), 20)
                existing = set(await admin.list_topics())
                doomed = [t for t in self.topics if t in existing]
                if doomed:
                    await asyncio.wait_for(admin.delete_topics(doomed), 30)
                for g in self.groups:  # best effort: empty groups expire anyway
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(
                            admin._send_request(DeleteGroupsRequest([g]), await admin.find_coordinator(g)), 5)
            except Exception as e:  # noqa: BLE001
                self.log(f"could not delete topics {self.prefix}*: {type(e).__name__}: {e}")
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()
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
        """A submission (idempotent by its id), repeated through 5xx, 429 and connection errors."""
        delay, first_sent = 0.2, None
        for i in range(attempts):
            try:
                status, body, sent = await self.intake.request(raw)
                first_sent = first_sent or sent
                if status < 500 and status != 429:
                    return status, body, first_sent
            except (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                status, body = 0, f"{type(e).__name__}".encode()
                first_sent = first_sent or time.time()
            if i == attempts - 1:
                return status, body, first_sent
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
        raise AssertionError("unreachable")

    async def submit_rosters(self, pool: Pool) -> None:
        self.log(f"submitting {len(pool.rosters)} SLS rosters")
        sem = asyncio.Semaphore(16)
        refused: list[str] = []

        async def one(sls: str, officer: str, body: bytes) -> None:
            async with sem:
                status, text, _ = await self.post_with_retry(
                    self.intake.build("POST", "/v1/rosters", body, self.officer_token(officer)))
            if status not in (200, 202):
                refused.append(f"roster {sls}: HTTP {status} {text[:200]!r}")

        await asyncio.gather(*(one(*r) for r in pool.rosters))
        if refused:
            raise SetupError(f"{len(refused)} rosters refused, e.g. {refused[0]}")
        # Wait until verify has every roster, so the measured phases do not include them.
        topic = self.prefix + "sls-roster"
        deadline = time.monotonic() + self.a.settle_timeout
        while True:
            ends = await self._ends([topic])
            committed = await self._committed(f"{self.prefix}regsosek-verify")
            if sum(ends.values()) >= len(pool.rosters) and group_lag(committed, ends) == 0:
                break
            if time.monotonic() > deadline:
                raise SetupError(f"verify did not take the rosters within {self.a.settle_timeout:.0f} s "
                                 f"({sum(ends.values())}/{len(pool.rosters)} published, "
                                 f"{group_lag(committed, ends)} behind)")
            await asyncio.sleep(0.5)
        self.log("rosters are at verify")

    # ------------------------------------------------------------ Kafka offsets

    async def _ends(self, topics: Iterable[str]) -> dict:
        from aiokafka import TopicPartition

        tps = [TopicPartition(t, p) for t in topics for p in range(self.partitions.get(t, 1))]
        return await asyncio.wait_for(self._offsets_consumer.end_offsets(tps), 10) if tps else {}

    async def _committed(self, group: str) -> dict:
        offsets = await asyncio.wait_for(self._admin.list_consumer_group_offsets(group), 10)
        return {tp: om.offset for tp, om in offsets.items() if om is not None and om.offset >= 0}

    async def lags(self) -> dict[str, int]:
        """Records behind per service consumer group."""
        out = {}
        committed = {s: await self._committed(f"{self.prefix}regsosek-{s}") for s in SERVICES}
        topics = {s: {self.prefix + t for t in GROUP_TOPICS[s]} | {tp.topic for tp in committed[s]} for s in SERVICES}
        ends = await self._ends(set().union(*topics.values()))
        for s in SERVICES:
            out[s] = group_lag(committed[s], {tp: e for tp, e in ends.items() if tp.topic in topics[s]})
        return out

    async def group_members(self, service: str) -> tuple[str, int]:
        (resp,) = await asyncio.wait_for(self._admin.describe_consumer_groups([f"{self.prefix}regsosek-{service}"]), 10)
        g = resp.to_object()["groups"][0]
        return g["state"], len(g["members"])

    async def wait_members(self, counts: dict[str, int], timeout: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = {s: await self.group_members(s) for s in counts}
                if all(st == "Stable" and n == counts[s] for s, (st, n) in states.items()):
                    return True
            except Exception:  # noqa: BLE001 - the coordinator may be busy rebalancing
                pass
            await asyncio.sleep(0.5)
        return False

    # ------------------------------------------------------------ sampling

    async def _metrics(self, inst: Instance) -> float | None:
        try:
            r = await self.http.get(f"{inst.proc.url}/metrics", timeout=2.0)
            return parse_counter(r.text, CONSUMED_METRIC) if r.status_code == 200 else None
        except Exception:  # noqa: BLE001
            return None

    async def _sample_forever(self) -> None:
        prev_cpu = system_cpu()
        next_at = time.monotonic()
        failures = 0
        while True:
            next_at += 1.0
            s = Snapshot(t=round(self.now(), 2), phase=self.phase)
            insts = list(self.instances.values())
            for i in insts:
                if i.proc.running and i.proc.pid:
                    rss, hwm = proc_memory_kb(i.proc.pid)
                    cpu = proc_cpu_s(i.proc.pid)
                    if rss is not None:
                        s.rss_kb[i.key] = rss
                    if hwm is not None:
                        s.hwm_kb[i.key] = hwm
                    if cpu is not None:
                        s.cpu_s[i.key] = cpu
                elif i.proc.proc is not None and i.proc.returncode is not None:
                    msg = f"{i.key} exited with code {i.proc.returncode} (log {i.proc.log_path})"
                    if msg not in self.errors:
                        self.errors.append(msg)
                        self.log("ERROR " + msg)
            got = await asyncio.gather(*(self._metrics(i) for i in insts if i.service != "receiver"))
            for i, v in zip([i for i in insts if i.service != "receiver"], got):
                if v is not None:
                    s.consumed[i.key] = v
            try:
                s.lag = await self.lags()
            except Exception:  # noqa: BLE001 - a sample without lag; keep sampling
                failures += 1
            cpu = system_cpu()
            if cpu and prev_cpu and cpu[1] > prev_cpu[1]:
                s.cpu_busy = round(100 * (cpu[0] - prev_cpu[0]) / (cpu[1] - prev_cpu[1]), 1)
            prev_cpu = cpu
            self.samples.append(s)
            await asyncio.sleep(max(0.05, next_at - time.monotonic()))
            if time.monotonic() - next_at > 5:  # fell far behind (busy machine): do not burst to catch up
                next_at = time.monotonic()

    def latest_lag(self) -> dict[str, int] | None:
        for s in reversed(self.samples[-3:]):
            if s.lag:
                return s.lag
        return None

    # ------------------------------------------------------------ the receiver

    async def receiver_unique(self) -> int:
        r = await self.http.get(f"{self.receiver_url}/stats", timeout=10)
        return int(r.json().get("unique", 0))

    async def receiver_families(self) -> dict[str, float]:
        """family id -> when the receiver got its (latest) eligibility event, epoch seconds."""
        r = await self.http.get(f"{self.receiver_url}/families", timeout=60)
        out = {}
        for fid, rec in r.json()["families"].items():
            ts = rec.get("received_at")
            if ts:
                out[fid] = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        return out

    async def wait_delivered(self, expected: set[str], base: int, *, sending_done: asyncio.Event,
                             label: str) -> tuple[dict[str, float], str]:
        """Wait until the receiver holds every `expected` family's event; returns their
        receive times and how the wait ended (complete | stalled | timeout). The caller
        removes from `expected` the families intake refused, as it learns of them."""
        with progress(f"{label}: delivered", len(expected), unit="families",
                      log_every_s=self.progress_every) as bar:
            return await self._wait_delivered(expected, base, sending_done=sending_done, label=label, bar=bar)

    async def _wait_delivered(self, expected: set[str], base: int, *, sending_done: asyncio.Event, label: str,
                              bar: Progress) -> tuple[dict[str, float], str]:
        deadline = time.monotonic() + self.a.phase_timeout
        last_unique, last_change = base, time.monotonic()
        last_full, last_progress = 0.0, 0.0
        got: dict[str, float] = {}
        while True:
            if bar.total != len(expected):
                bar.set_total(len(expected))  # less the families intake refused
            bar.advance_to(min(last_unique - base, len(expected)))
            with contextlib.suppress(Exception):
                unique = await self.receiver_unique()
                if unique != last_unique:
                    last_unique, last_change = unique, time.monotonic()
                now = time.monotonic()
                if sending_done.is_set() and unique - base >= len(expected) and now - last_full > 3.0:
                    last_full = now
                    fams = await self.receiver_families()
                    got = {f: fams[f] for f in expected if f in fams}
                    if len(got) == len(expected):
                        return got, "complete"
            now = time.monotonic()
            if now - last_progress > self.progress_every:
                last_progress = now
                lag = self.latest_lag() or {}
                lag_text = "lag " + " ".join(f"{k} {v}" for k, v in lag.items())
                if not bar.note(lag_text):  # on a terminal the bar shows count, rate, ETA and the lag
                    self.log(f"{label}: receiver {last_unique - base}/{len(expected)}  {lag_text}")
            quiet = now - last_change
            lag = self.latest_lag()
            if sending_done.is_set() and not expected:
                return {}, "complete"
            if sending_done.is_set() and ((quiet > 20 and lag is not None and not any(lag.values()))
                                          or quiet > self.a.stall_timeout):
                fams = await self.receiver_families()
                return {f: fams[f] for f in expected if f in fams}, "stalled"
            if now > deadline:
                with contextlib.suppress(Exception):
                    fams = await self.receiver_families()
                    got = {f: fams[f] for f in expected if f in fams}
                return got, "timeout"
            await asyncio.sleep(0.5)

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
        self.phase = label
        bs, devices = self.a.batch_size, self.a.devices
        batches = [fams[i:i + bs] for i in range(0, len(fams), bs)]
        queue: asyncio.Queue[list[Family]] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)
        expected = {f.family_id for f in fams if f.decided}  # less those intake refuses
        planned = len(expected)
        base = await self.receiver_unique()
        done = asyncio.Event()
        counts = {"accepted": 0, "duplicate": 0, "refused": 0, "failed_requests": 0}
        first_sent: list[float] = []
        last_answer = [0.0]
        problems: list[str] = []

        async def device(k: int) -> None:
            token = self.token(f"BENCH-DEVICE-{k:02d}", ["64"])
            while not queue.empty():
                batch = queue.get_nowait()
                body = b'{"interviews":[' + b",".join(f.body for f in batch) + b"]}"
                status, text, sent = await self.post_with_retry(
                    self.intake.build("POST", "/v1/interviews:batch", body, token))
                first_sent.append(sent)
                last_answer[0] = time.time()
                if status != 200:
                    counts["failed_requests"] += 1
                    expected.difference_update(f.family_id for f in batch)
                    if len(problems) < 5:
                        problems.append(f"batch: HTTP {status} {text[:200]!r}")
                    continue
                for item in orjson.loads(text)["results"]:
                    st = item.get("status")
                    if st == 202:
                        counts["accepted"] += 1
                    elif st == 200:
                        counts["duplicate"] += 1
                    else:
                        counts["refused"] += 1
                        expected.discard(batch[item["index"]].family_id)
                        if len(problems) < 5:
                            problems.append(f"item: {json.dumps(item)[:200]}")

        async def send_all() -> None:
            try:
                await asyncio.gather(*(device(k) for k in range(devices)))
            finally:
                done.set()

        self.log(f"{label}: {len(fams)} families ({planned} to be decided) in {len(batches)} batches "
                 f"of {bs}, {devices} devices")
        cpu0 = time.process_time()
        sender = asyncio.create_task(send_all())
        try:
            got, ended = await self.wait_delivered(expected, base, sending_done=done, label=label)
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        start = min(first_sent) if first_sent else None
        end = max(got.values()) if got else None
        span = (end - start) if start and end else None
        accept_span = (last_answer[0] - start) if start else None
        missing = len(expected) - len(got)
        if not counts["accepted"] and not counts["duplicate"]:
            ended = "nothing accepted"
        res = {
            "families": len(fams), "decided_expected": len(expected), "decided_delivered": len(got),
            "undelivered": missing, "ended": ended, "batch_size": bs, "devices": devices, **counts,
            "span_s": span, "families_per_s": (len(fams) / span) if span and not missing else None,
            "decided_per_s": (len(got) / span) if span else None,
            "accept_span_s": accept_span,
            "accepted_per_s": (counts["accepted"] / accept_span) if accept_span else None,
            "generator_cpu_s": round(time.process_time() - cpu0, 2),
            "problems": problems,
            "t_start": round(start - time.time() + self.now(), 2) if start else None,
        }
        if missing:
            res["families_per_s_partial"] = (len(fams) / span) if span else None
            self.errors.append(f"{label}: {missing} of {len(expected)} expected decisions never reached the receiver "
                               f"({ended})")
        not_taken = counts["refused"] + bs * counts["failed_requests"]
        if not_taken:
            res["families_per_s"] = None
            res["families_per_s_partial"] = (len(fams) / span) if span else None
            self.errors.append(f"{label}: intake did not take {counts['refused']} interviews and failed "
                               f"{counts['failed_requests']} batch requests, e.g. {problems[:1]}")
        self.log(f"{label}: {fnum(res['families_per_s'] or res.get('families_per_s_partial'), 1)} families/s end "
                 f"to end ({ended}), intake accepted {fnum(res['accepted_per_s'], 1)}/s")
        res["settle"] = await self.settle(label)
        return res

    # ------------------------------------------------------------ phase: latency (open loop)

    async def open_loop(self, fams: list[Family], rate: int, duration: float) -> dict:
        label = f"latency-{rate}"
        self.phase = label
        offsets = schedule(rate, duration)
        fams = fams[:len(offsets)]
        n = len(fams)
        reqs = [self.intake.build("POST", "/v1/interviews", f.body, self.officer_token(f.officer)) for f in fams]
        sent_at: list[float | None] = [None] * n
        due_at: list[float] = [0.0] * n  # wall time each request was due by the schedule
        lateness: list[float] = []
        status: list[int] = [0] * n
        answered: list[float] = []
        base = await self.receiver_unique()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task] = set()

        async def send(i: int, scheduled: float) -> None:
            st, _, sent = await self.post_with_retry(reqs[i], attempts=3)
            sent_at[i], status[i] = sent, st
            due_at[i] = wall0 + (scheduled - mono0)
            if st != 202:
                expected.discard(fams[i].family_id)
            lateness.append(max(0.0, (sent - wall0) - (scheduled - mono0)))
            answered.append(time.time())

        self.log(f"{label}: {n} single submissions at {rate}/s for {duration:g} s, open loop")
        cpu0 = time.process_time()
        self.intake.busy_max = 0
        mono0 = loop.time() + 0.2
        wall0 = time.time() + 0.2
        delivered_task = None

        async def sending() -> None:
            i = 0
            while i < n:
                j = due(offsets, i, loop.time() - mono0)
                for k in range(i, j):
                    t = asyncio.create_task(send(k, mono0 + offsets[k]))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                i = j
                if i < n:
                    await asyncio.sleep(max(0.0, mono0 + offsets[i] - loop.time()))
            window_end[0] = time.time()
            window_lag[0] = self.latest_lag()
            window_busy[0] = self.intake.busy_max
            if tasks:
                await asyncio.wait(list(tasks), timeout=self.a.phase_timeout)
            done.set()

        window_end, window_lag, window_busy = [0.0], [None], [0]
        expected = {f.family_id for f in fams if f.decided}  # less those intake does not accept
        sender = asyncio.create_task(sending())
        try:
            delivered_task = asyncio.create_task(self.wait_delivered(expected, base, sending_done=done, label=label))
            await asyncio.wait([sender], timeout=duration + self.a.phase_timeout)
            got, ended = await delivered_task
        finally:
            for t in (sender, delivered_task, *tasks):
                if t is not None and not t.done():
                    t.cancel()
            await asyncio.gather(sender, *(t for t in (delivered_task,) if t), return_exceptions=True)
        accepted = [i for i in range(n) if status[i] == 202]
        want = [i for i in accepted if fams[i].decided]
        lat = [got[fams[i].family_id] - sent_at[i] for i in want if fams[i].family_id in got and sent_at[i]]
        lat_sched = [got[fams[i].family_id] - due_at[i] for i in want if fams[i].family_id in got and sent_at[i]]
        sent_times = sorted(t for t in sent_at if t)
        in_window = sum(1 for t in sent_times if t <= wall0 + duration + 0.05)
        first, last = (sent_times[0], sent_times[-1]) if sent_times else (None, None)
        backlog = sum(1 for i in want if sent_at[i] and sent_at[i] <= window_end[0]
                      and got.get(fams[i].family_id, math.inf) > window_end[0])
        # Latency trend: the first and last quarter of the window by send time.
        by_send = sorted((sent_at[i], got[fams[i].family_id] - sent_at[i]) for i in want
                         if fams[i].family_id in got and sent_at[i])
        q = max(1, len(by_send) // 4)
        p50_first = percentile([x for _, x in by_send[:q]], 50)
        p50_last = percentile([x for _, x in by_send[-q:]], 50)
        accept_span = (max(answered) - first) if answered and first else None
        res = {
            "rate": rate, "duration_s": duration, "offered": n,
            "sent_in_window": in_window, "sent_rate": in_window / duration,
            "accepted": len(accepted), "not_accepted": n - len(accepted),
            "statuses": {str(k): status.count(k) for k in sorted(set(status))},
            "accepted_rate": (len(accepted) / accept_span) if accept_span else None,
            "decided_expected": len(want), "delivered": len(lat), "undelivered": len(want) - len(lat), "ended": ended,
            "latency_s": distribution(lat),
            # From when the schedule said to send: includes waiting for a free connection when intake
            # answers too slowly (what an open-loop client would see without coordinated omission).
            "latency_from_schedule_s": distribution(lat_sched),
            "p50_first_quarter_s": p50_first, "p50_last_quarter_s": p50_last,
            "send_lateness_s": distribution(lateness),
            "backlog_at_window_end": backlog,
            "connections_busy_max": window_busy[0],
            "lag_at_window_end": window_lag[0],
            "generator_cpu_s": round(time.process_time() - cpu0, 2),
        }
        reasons = []
        if res["sent_rate"] < 0.95 * rate:
            if window_busy[0] >= self.intake.connections:
                why = f"all {self.intake.connections} connections were waiting for intake's answers"
            else:
                why = (f"at most {window_busy[0]} of {self.intake.connections} connections were busy: the generator "
                       f"lacked CPU")
            reasons.append(f"only {res['sent_rate']:.0f}/s were sent ({why})")
        if res["accepted_rate"] is not None and res["accepted_rate"] < 0.9 * rate:
            reasons.append(f"intake accepted only {res['accepted_rate']:.0f}/s")
        if res["not_accepted"]:
            reasons.append(f"intake did not accept {res['not_accepted']} submissions ({res['statuses']})")
        if res["undelivered"]:
            reasons.append(f"{res['undelivered']} decisions never reached the receiver ({ended})")
        if p50_first is not None and p50_last is not None and p50_last > max(2 * p50_first, p50_first + 1.0):
            reasons.append(f"latency grew during the window (p50 {p50_first:.2f} s -> {p50_last:.2f} s): "
                           f"a growing backlog")
        res["keeps_up"] = not reasons
        res["falls_behind_because"] = reasons
        d = res["latency_s"]
        self.log(f"{label}: sent {res['sent_rate']:.0f}/s, accepted {fnum(res['accepted_rate'])}/s, latency p50 "
                 f"{fnum(d['p50'], 2)} s p99 {fnum(d['p99'], 2)} s, backlog at window end {backlog}"
                 + ("" if res["keeps_up"] else "  FALLS BEHIND: " + "; ".join(reasons)))
        res["settle"] = await self.settle(label)
        return res

    # ------------------------------------------------------------ phase: scale

    async def scale(self, pool: Pool, n: int) -> list[dict]:
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
            stable = await self.wait_members({s: k for s in SCALED})
            if not stable:
                self.log(f"WARNING: consumer groups did not settle on {k} members each")
            res = await self.upload(pool.take(n), f"scale-{k}")
            res.update({"instances": k, "scaled_services": list(SCALED), "groups_stable": stable,
                        "partitions": self.partitions.get(self.prefix + "interview-submitted")})
            res["per_service"] = self.phase_services(f"scale-{k}")
            out.append(res)
            if extra:
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

    async def _run_child(self, cmd: list[str], env: dict, name: str, timeout: float) -> dict:
        log = self.log_dir / f"{self.tag}-{name}.log"
        t = time.monotonic()
        with open(log, "ab") as err:
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
        self.topics += hops
        for t in hops:
            self.partitions[t] = spec.partitions
        await asyncio.wait_for(self._admin.create_topics(
            [NewTopic(name=t, num_partitions=spec.partitions, replication_factor=spec.replication_factor,
                      topic_configs=spec.config) for t in hops]), 30)
        n = self.a.ceiling_records or max(len(fams), 20000)
        fams = [fams[i % len(fams)] for i in range(n)]  # the same payloads, repeated to a measurable amount
        payload = self.work_dir / f"{self.tag}-payload.bin"
        self.temp_files.append(payload)
        with open(payload, "wb") as f:
            for fam in fams:
                k = fam.sls_id.encode()
                f.write(struct.pack(">II", len(k), len(fam.body)) + k + fam.body)
        deadline = time.time() + self.a.phase_timeout
        stage = [sys.executable, "-m", "regsosek_tools.bench", "_ceiling-stage", "--bootstrap", self.bootstrap,
                 "--count", str(n), "--deadline", str(deadline)]
        groups = [f"{self.prefix}ceiling-relay{i}" for i in range(1, HOPS)] + [f"{self.prefix}ceiling-sink"]
        self.groups += groups
        roles = [(f"relay{i}", ["relay", "--src", hops[i - 1], "--dst", hops[i], "--group", groups[i - 1]])
                 for i in range(1, HOPS)]
        roles.append(("sink", ["sink", "--src", hops[-1], "--group", groups[-1]]))
        self.log(f"ceiling: {n} records ({sum(len(f.body) for f in fams) / n / 1024:.1f} KiB each) through "
                 f"{HOPS} topics: producer -> {' -> '.join(r for r, _ in roles)}")
        procs: dict[str, asyncio.subprocess.Process] = {}
        results: dict[str, dict] = {}
        try:
            for name, args in roles:
                procs[name] = await self._spawn(stage + args, f"ceiling-{name}")
            for name, p in procs.items():
                line = await asyncio.wait_for(p.stdout.readline(), 90)
                if json.loads(line or b"{}").get("ready") is not True:
                    raise RuntimeError(f"ceiling {name} did not get ready: {line[:200]!r}")
            procs["producer"] = await self._spawn(stage + ["produce", "--dst", hops[0], "--payload", str(payload)],
                                                  "ceiling-producer")
            remaining = max(10.0, deadline - time.time() + 30)
            for name, p in procs.items():
                line = await asyncio.wait_for(p.stdout.readline(), remaining)
                if name == "producer" or name in dict(roles):
                    results[name] = json.loads(line) if line else {"error": "no result"}
                await asyncio.wait_for(p.wait(), 30)
        except (TimeoutError, RuntimeError, ValueError) as e:
            self.errors.append(f"ceiling: {type(e).__name__}: {e}")
            return {"error": f"{type(e).__name__}: {e}", "stages": results}
        finally:
            for p in procs.values():
                if p.returncode is None:
                    _kill_group(p.pid)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(p.wait(), 10)
                if p in self.children:
                    self.children.remove(p)
        prod, sink = results.get("producer", {}), results.get("sink", {})
        if sink.get("n", 0) < n or "first" not in prod:
            return {"error": f"the sink received {sink.get('n', 0)} of {n}", "stages": results}
        span = sink["last"] - prod["first"]
        res = {"records": n, "hops": HOPS, "partitions": spec.partitions, "span_s": span,
               "records_per_s": n / span if span > 0 else None,
               "produce_only_per_s": n / (prod["acked"] - prod["first"]) if prod["acked"] > prod["first"] else None,
               "payload_bytes_mean": sum(len(f.body) for f in fams) / n, "stages": results}
        self.log(f"ceiling: {fnum(res['records_per_s'])} records/s end to end through {HOPS} hops "
                 f"(producer alone {fnum(res['produce_only_per_s'])}/s)")
        return res

    async def _spawn(self, cmd: list[str], name: str) -> asyncio.subprocess.Process:
        log = self.log_dir / f"{self.tag}-{name}.log"
        with open(log, "ab") as err:
            p = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                     stderr=err, start_new_session=True)
        self.children.append(p)
        return p

    # ------------------------------------------------------------ per-service figures from the samples

    def phase_services(self, phase: str) -> dict[str, dict]:
        """Per service during one phase: events consumed/s (mean and peak over 5 s), CPU %."""
        ss = [s for s in self.samples if s.phase == phase]
        out: dict[str, dict] = {}
        if len(ss) < 2:
            return out
        span = ss[-1].t - ss[0].t
        for svc in SERVICES:
            keys = {k for s in ss for k in s.consumed if k.split("#")[0] == svc}
            total = 0.0
            cpu = 0.0
            for k in keys:
                pts = [(s.t, s.consumed[k]) for s in ss if k in s.consumed]
                if len(pts) >= 2:
                    total += pts[-1][1] - pts[0][1]
                cp = [s.cpu_s[k] for s in ss if k in s.cpu_s]
                if len(cp) >= 2:
                    cpu += cp[-1] - cp[0]
            peak = 0.0
            for i in range(len(ss)):
                j = next((j for j in range(i, len(ss)) if ss[j].t - ss[i].t >= 5.0), None)
                if j is None:
                    break
                d = sum(ss[j].consumed.get(k, 0) - ss[i].consumed.get(k, 0) for k in keys
                        if k in ss[i].consumed and k in ss[j].consumed)
                peak = max(peak, d / (ss[j].t - ss[i].t))
            lag = [s.lag.get(svc, 0) for s in ss if s.lag]
            out[svc] = {"instances": len(keys), "consumed": total, "consumed_per_s": total / span if span else None,
                        "peak_consumed_per_s_5s": peak, "cpu_percent": 100 * cpu / span if span else None,
                        "lag_max": max(lag) if lag else None, "lag_end": lag[-1] if lag else None}
        busy = [s.cpu_busy for s in ss if s.cpu_busy is not None]
        out["_machine"] = {"cpu_busy_percent_mean": sum(busy) / len(busy) if busy else None, "span_s": span}
        return out

    def memory(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for s in self.samples:
            for k, v in s.rss_kb.items():
                svc = k.split("#")[0]
                o = out.setdefault(svc, {"max_rss_mb": 0.0, "max_hwm_mb": 0.0, "instances": set()})
                o["max_rss_mb"] = max(o["max_rss_mb"], v / 1024)
                o["instances"].add(k)
            for k, v in s.hwm_kb.items():
                o = out.setdefault(k.split("#")[0], {"max_rss_mb": 0.0, "max_hwm_mb": 0.0, "instances": set()})
                o["max_hwm_mb"] = max(o["max_hwm_mb"], v / 1024)
        for o in out.values():
            o["instances"] = sorted(o["instances"])
        return out

    def lag_series(self) -> dict[str, list]:
        return {svc: [[s.t, s.phase, s.lag.get(svc)] for s in self.samples if s.lag] for svc in SERVICES}


def _kill_group(pid: int | None, sig: int = signal.SIGKILL) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


# ================================================================ the ceiling's stages (child processes)


def _ce_headers(subject: bytes) -> list[tuple[str, bytes]]:
    """Headers the size and shape of the services' CloudEvents headers."""
    return [("ce_id", uuid.uuid4().hex.encode()), ("ce_type", b"id.go.bps.regsosek.interview.submitted.v1"),
            ("ce_source", b"/regsosek/intake"), ("ce_specversion", b"1.0"),
            ("ce_time", datetime.now(UTC).isoformat().encode()), ("ce_subject", subject),
            ("content-type", b"application/json"),
            ("traceparent", f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode())]


async def _stage(a: argparse.Namespace) -> dict:
    from aiokafka import AIOKafkaConsumer

    from regsosek.messaging.relay import make_producer

    if a.role == "produce":
        records = []
        data = Path(a.payload).read_bytes()
        i = 0
        while i < len(data):
            kl, vl = struct.unpack_from(">II", data, i)
            i += 8
            records.append((data[i:i + kl], data[i + kl:i + kl + vl]))
            i += kl + vl
        producer = make_producer(a.bootstrap)
        await producer.start()
        try:
            first = time.time()
            futures = [await producer.send(a.dst, v, key=k, headers=_ce_headers(k)) for k, v in records]
            await asyncio.wait_for(asyncio.gather(*futures), max(10.0, a.deadline - time.time()))
            return {"n": len(records), "first": first, "acked": time.time()}
        finally:
            await producer.stop()

    consumer = AIOKafkaConsumer(a.src, bootstrap_servers=a.bootstrap, group_id=a.group, enable_auto_commit=False,
                                **client_options(),
                                auto_offset_reset="earliest", max_poll_records=500)
    producer = make_producer(a.bootstrap) if a.role == "relay" else None
    await consumer.start()
    if producer:
        await producer.start()
    count, first, last = 0, None, None

    async def handle(batch: dict) -> None:
        nonlocal count, first, last
        recs = [r for rs in batch.values() for r in rs]
        if not recs:
            return
        first = first or time.time()
        if producer:
            futures = [await producer.send(a.dst, r.value, key=r.key, headers=list(r.headers or ())) for r in recs]
            await asyncio.gather(*futures)
        await consumer.commit()
        count += len(recs)
        last = time.time()

    try:
        while not consumer.assignment():
            if time.time() > a.deadline:
                return {"error": "no partitions assigned"}
            await handle(await consumer.getmany(timeout_ms=200))
        print(json.dumps({"ready": True}), flush=True)
        while count < a.count and time.time() < a.deadline:
            await handle(await consumer.getmany(timeout_ms=50, max_records=500))
        return {"n": count, "first": first, "last": last}
    finally:
        await consumer.stop()
        if producer:
            await producer.stop()


def stage_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.bench _ceiling-stage")
    p.add_argument("role", choices=["produce", "relay", "sink"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--deadline", type=float, required=True, help="epoch seconds to give up at")
    p.add_argument("--src")
    p.add_argument("--dst")
    p.add_argument("--group")
    p.add_argument("--payload")
    a = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_stage(a))), flush=True)
    return 0


# ================================================================ the run


async def run(a: argparse.Namespace) -> dict:
    from regsosek_tools.run import SetupError as RunSetupError
    from regsosek_tools.run import check_stack

    try:
        check_stack()
    except RunSetupError as e:
        raise SetupError(str(e)) from None
    commit, dirty = git_commit()
    started = datetime.now(UTC)
    result: dict = {
        "bench": {"date": started.date().isoformat(), "started_at": started.isoformat(timespec="seconds"),
                  "commit": commit + ("+dirty" if dirty else ""), "dirty": dirty, "args": vars(a).copy()},
        "machine": machine_info(),
        "targets": TARGETS,
    }
    b = Bench(a)
    result["bench"]["world"] = b.tag
    scale_n = a.scale_families
    latency_n = sum(len(schedule(r, a.duration)) for r in a.rates) if "latency" in a.phases else 0
    need = (a.warmup + (a.families if "throughput" in a.phases else 0) + latency_n
            + (scale_n * len(a.instances) if "scale" in a.phases else 0))
    if "ceiling" in a.phases:
        need = max(need, a.warmup + a.families)
    b.log(f"generating {need} families (seed {a.seed})")
    pool = build_pool(a.seed, max(need, 1))
    result["bench"]["families_generated"] = len(pool.families)
    result["bench"]["sls"] = len(pool.rosters)
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:  # like Ctrl-C: stop measuring, then clean up
        if not main_task.cancelling():
            main_task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    interrupted = False
    throughput_fams: list[Family] = []
    try:
        await b.setup(pool)
        result["bench"]["partitions"] = b.partitions.get(b.prefix + "interview-submitted")
        if a.warmup:
            b.log(f"warm-up: {a.warmup} families (not measured)")
            w = await b.upload(pool.take(a.warmup), "warmup")
            result["warmup"] = {k: w.get(k) for k in ("families", "families_per_s", "ended")}
        if "throughput" in a.phases:
            throughput_fams = pool.take(a.families)
            result["throughput"] = await b.upload(throughput_fams, "throughput")
            result["throughput"]["per_service"] = b.phase_services("throughput")
        if "latency" in a.phases:
            result["latency"] = []
            failed_at = None
            for rate in a.rates:
                fams = pool.take(len(schedule(rate, a.duration)))
                if failed_at is not None and rate > failed_at and not a.all_rates:
                    result["latency"].append({"rate": rate, "duration_s": a.duration,
                                              "skipped": f"the pipeline fell behind at {failed_at}/s"})
                    b.log(f"latency-{rate}: skipped, the pipeline fell behind at {failed_at}/s (--all-rates runs it)")
                    continue
                random.Random(f"{a.seed}:{rate}").shuffle(fams)  # officers all over the province at once
                entry = await b.open_loop(fams, rate, a.duration)
                entry["per_service"] = b.phase_services(f"latency-{rate}")
                result["latency"].append(entry)
                if not entry["keeps_up"] and failed_at is None:
                    failed_at = rate
        if "scale" in a.phases:
            result["scale"] = await b.scale(pool, scale_n)
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
    except asyncio.CancelledError:
        interrupted = True
        main_task.uncancel()  # the clean-up below must be able to wait and time out normally
        b.log("interrupted: cleaning up")
    finally:
        result["services"] = b.memory()
        result["lag_series"] = b.lag_series()
        result["samples"] = [s.__dict__ for s in b.samples]
        result["errors"] = b.errors
        b.log("stopping the services, dropping the databases and topics")
        await b.teardown()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
    result["bench"]["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["bench"]["interrupted"] = interrupted
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    result["markdown_row"] = markdown_row(result)
    return result


# ================================================================ the report


def print_summary(r: dict) -> None:
    p = print
    b, m = r["bench"], r["machine"]
    p()
    p(f"Regsosek benchmark  {b['started_at']}  commit {b['commit']}  world {b.get('world')}")
    p(f"  machine: {m['nproc']} CPU ({m['cpu']}), {m['mem_gib']:.1f} GiB, Python {m['python']}, Kafka {m['kafka']}; "
      f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}")
    if b.get("interrupted"):
        p("  INTERRUPTED: partial results")
    tp = r.get("throughput")
    if tp:
        p()
        p(f"Throughput: {tp['families']:,} families, POST /v1/interviews:batch ({tp['batch_size']} per request, "
          f"{tp['devices']} devices)")
        fps = tp.get("families_per_s") or tp.get("families_per_s_partial")
        p(f"  end to end      {fnum(fps, 1)} families/s  (first request -> last of {tp['decided_delivered']:,}/"
          f"{tp['decided_expected']:,} eligibility events at the receiver, {fnum(tp['span_s'], 1)} s"
          f"{'' if tp.get('families_per_s') else ', INCOMPLETE: ' + tp['ended']})")
        p(f"  intake accepted {fnum(tp.get('accepted_per_s'), 1)} families/s  ({tp['accepted']:,} accepted, "
          f"{tp['refused']} refused, {tp['failed_requests']} failed requests; generator CPU {tp['generator_cpu_s']} s)")
        _print_services(tp.get("per_service") or {}, r.get("services") or {})
    if r.get("latency"):
        p()
        p("Latency at fixed offered rates (single POST /v1/interviews, open loop): send -> eligibility event at the receiver")
        p(f"  {'offered':>8} {'sent/s':>8} {'accepted/s':>10} {'delivered':>13} {'p50':>7} {'p95':>7} {'p99':>7} "
          f"{'max':>7} {'p99*':>7} {'backlog':>8}  keeps up")
        for e in r["latency"]:
            if e.get("skipped"):
                p(f"  {e['rate']:>7}/s  skipped: {e['skipped']}")
                continue
            d = e["latency_s"]
            p(f"  {e['rate']:>7}/s {e['sent_rate']:>8.0f} {fnum(e['accepted_rate']):>10} "
              f"{e['delivered']:>6}/{e['decided_expected']:<6} {_s(d['p50']):>7} {_s(d['p95']):>7} {_s(d['p99']):>7} "
              f"{_s(d['max']):>7} {_s(e['latency_from_schedule_s']['p99']):>7} {e['backlog_at_window_end']:>8}  "
              + ("yes" if e["keeps_up"] else "NO: " + "; ".join(e["falls_behind_because"])))
        p("  (p99*: from when the schedule said to send, so including any wait for one of the "
          f"{r['bench']['args'].get('max_inflight')} connections;")
        p("   backlog: families sent in the window whose event had not reached the receiver when the window closed)")
    if r.get("scale"):
        p()
        p(f"Horizontal scale: instances of {' and '.join(SCALED)} ({r['scale'][0].get('partitions')} partitions per topic)")
        for s in r["scale"]:
            ps = s.get("per_service") or {}
            per = ", ".join(f"{k} {fnum((ps.get(k) or {}).get('consumed_per_s'))}/s" for k in SCALED)
            p(f"  {s['instances']} instance(s): {fnum(s.get('families_per_s') or s.get('families_per_s_partial'), 1)} "
              f"families/s end to end ({s['families']:,} families{'' if s.get('families_per_s') else ', ' + s['ended']}"
              f"); consumed {per}{'' if s.get('groups_stable', True) else '; groups did not settle'}")
    rp = r.get("replay")
    if rp:
        p()
        if not rp.get("available"):
            p(f"Replay: not available ({rp.get('reason')})")
        elif rp.get("error"):
            p(f"Replay: FAILED ({rp['error']})")
        else:
            p(f"Replay (python -m classify.replay, rules version changed only): {fnum(rp['families_per_s'])} families/s "
              f"({rp['examined']:,} examined, {rp['reclassified']} classified again, {rp['republished']} re-published "
              f"in {rp['work_s']:.2f} s; {fnum(rp['families_per_s_wall'])}/s including {fnum(rp['startup_s'], 2)} s "
              f"start-up)")
    c = r.get("ceiling")
    if c:
        p()
        if c.get("error"):
            p(f"Ceiling: FAILED ({c['error']})")
        else:
            p(f"Ceiling (raw aiokafka, {c['records']:,} interview payloads, {c['hops']} hops, {c['partitions']} "
              f"partitions): {fnum(c['records_per_s'])} records/s end to end (producer alone "
              f"{fnum(c['produce_only_per_s'])}/s)")
            if c.get("ratio") is not None:
                p(f"  pipeline / ceiling = {fnum(c['pipeline_families_per_s'], 1)} / {fnum(c['records_per_s'])} = "
                  f"{100 * c['ratio']:.1f}%")
    p()
    p("Targets (issue 7)")
    f = target_figures(r)
    sustained, ok = f["sustained"]
    p(f"  {mark(ok)} sustained end to end ≥ 5,000 families/s: {fnum(sustained, 1)}")
    p99, p99_ok, note = f["p99"]
    p(f"  {mark(p99_ok)} p99 ≤ 1 s at 1,000 families/s: {_s(p99)}{' (' + note + ')' if note else ''}")
    rps, rok, rnote = f["replay"]
    p(f"  {mark(rok)} replay ≥ 20,000 families/s: {fnum(rps)}{' (' + rnote + ')' if rnote else ''}")
    rss, rssok, who = f["rss"]
    p(f"  {mark(rssok)} ≤ 200 MB RSS per service: max {fnum(rss)} MB ({who})")
    ratio, ratio_ok = f["ratio"]
    p(f"  {mark(ratio_ok)} pipeline ≥ 50% of the raw-Kafka ceiling: "
      + (f"{100 * ratio:.1f}%" if ratio is not None else "n/a"))
    if r.get("errors"):
        p()
        p(f"Problems ({len(r['errors'])}):")
        for e in r["errors"][:10]:
            p(f"  {e}")
    p()
    p("Row for BENCHMARKS.md:")
    p(MARKDOWN_HEADER)
    p(r["markdown_row"])


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}s"


def _print_services(per: dict, mem: dict) -> None:
    p = print
    p(f"  {'service':<9} {'inst':>4} {'consumed/s':>11} {'peak 5s':>9} {'CPU %':>6} {'max RSS MB':>11} "
      f"{'HWM MB':>7}  lag (max; over the phase)")
    for svc in (*SERVICES, "receiver"):
        s = per.get(svc) or {}
        mm = mem.get(svc) or {}
        p(f"  {svc:<9} {s.get('instances', 1):>4} {fnum(s.get('consumed_per_s')):>11} "
          f"{fnum(s.get('peak_consumed_per_s_5s')):>9} {fnum(s.get('cpu_percent')):>6} "
          f"{fnum(mm.get('max_rss_mb')):>11} {fnum(mm.get('max_hwm_mb')):>7}  "
          + (f"{fnum(s.get('lag_max'))}" if s else ""))
    mach = per.get("_machine") or {}
    if mach.get("cpu_busy_percent_mean") is not None:
        p(f"  machine CPU busy {mach['cpu_busy_percent_mean']:.0f}% on average over the phase "
          "(everything: Kafka, PostgreSQL, services, generator)")


def print_lag(r: dict, phase: str = "throughput") -> None:
    series = r.get("lag_series") or {}
    rows = {svc: [v or 0 for t, ph, v in pts if ph == phase] for svc, pts in series.items()}
    if not any(rows.values()):
        return
    print(f"\nConsumer lag per group during {phase}, one sample a second (max):")
    for svc, vals in rows.items():
        print(f"  {svc:<9} {max(vals, default=0):>8,}  {sparkline(vals)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_ceiling-stage"]:
        return stage_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--families", type=int, help="families in the throughput phase (default 20000; --quick 2000)")
    p.add_argument("--rates", type=parse_list, default=[100, 500, 1000], help="offered rates, families/s")
    p.add_argument("--duration", type=float, help="seconds per offered rate (default 20; --quick 8)")
    p.add_argument("--instances", type=parse_list, default=[1, 2],
                   help="instances of verify and classify to compare (default 1,2)")
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
                   help="which measurements (default all: throughput,latency,scale,replay,ceiling)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="extra environment for the services")
    p.add_argument("--settle-timeout", type=float, help="seconds to wait for consumer lag to clear after a phase")
    p.add_argument("--phase-timeout", type=float, help="seconds a phase may take at most")
    p.add_argument("--stall-timeout", type=float, default=120.0,
                   help="a phase ends when the receiver got nothing new for this long")
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--replay-timeout", type=float, default=900.0)
    a = p.parse_args(argv)
    a.phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    unknown = set(a.phases) - {"throughput", "latency", "scale", "replay", "ceiling"}
    if unknown:
        p.error(f"unknown phases: {', '.join(sorted(unknown))}")
    a.families = a.families or (2000 if a.quick else 20000)
    a.duration = a.duration or (8.0 if a.quick else 20.0)
    a.warmup = a.warmup if a.warmup is not None else (100 if a.quick else 200)
    a.scale_families = a.scale_families or max(200, a.families // 4)
    a.settle_timeout = a.settle_timeout or (180.0 if a.quick else 600.0)
    a.phase_timeout = a.phase_timeout or (600.0 if a.quick else 1800.0)
    if a.families < 1 or a.duration <= 0 or a.devices < 1 or not 1 <= a.batch_size <= 500:
        p.error("--families, --duration, --devices must be positive and --batch-size 1..500")
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
