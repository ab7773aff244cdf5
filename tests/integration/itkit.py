"""The services as real processes on the local Kafka and PostgreSQL (scripts/stack.sh),
each test world in its own topics (REGSOSEK_TOPIC_PREFIX), databases and HTTP ports,
so integration runs never mix with each other or with a running `make run`.

A test world is regsosek_tools.world.World (the same set-up the bench uses) plus the
test's processes, ports and waits. Processes are started through regsosek_tools.processes;
each run of a service logs to its own file under .local/logs/integration/ (named after the
world's tag).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import random
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from regsosek import areas
from regsosek.contracts import Contract
from regsosek.envelope import encode, new_envelope
from regsosek.kafka_security import client_options
from regsosek.messaging.relay import RELAY_LOCK
from regsosek_tools import processes, world
from regsosek_tools.world import free_port

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("REGSOSEK_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
PG_BASE = os.environ.get("REGSOSEK_PG_URL_BASE", "postgresql://regsosek@127.0.0.1:15432").rstrip("/")
LOG_DIR = ROOT / ".local" / "logs" / "integration"


def kafka_options() -> dict[str, Any]:
    """TLS and SASL for the kit's own clients, from REGSOSEK_KAFKA_* like the services (regsosek.kafka_security);
    PLAINTEXT on the local stack."""
    return client_options()


# Fault injection variables (regsosek.messaging.faults): off in every world's processes unless a test arms one.
FAULT_EXIT_AFTER_DB_COMMIT = world.FAULT_EXIT_AFTER_DB_COMMIT
FAULT_RELAY_EXIT_AFTER_SENDS = world.FAULT_RELAY_EXIT_AFTER_SENDS
FAULT_EXIT_CODE = 137


# ---------------------------------------------------------------- polling


async def eventually(probe: Callable[[], Any], *, timeout: float, interval: float = 0.25, what: str = "") -> Any:
    """Calls `probe` (sync or async) until it returns something truthy and returns it.

    Transient errors (database restarting, broker busy) count as "not yet". On timeout
    raises AssertionError with the last value or error, so a hang is a readable failure.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = value
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - polled systems may be briefly unavailable
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or probe!r}; last: {last!r}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- processes


_run_counter = itertools.count(1)


class ServiceProcess:
    """A service (or the reference receiver) as a child process, through
    regsosek_tools.processes, with the waits and probes the tests need."""

    def __init__(self, name: str, env: dict[str, str], port: int, log_path: Path) -> None:
        self.name, self.port = name, port
        self._proc = processes.ServiceProcess(name, env, port)
        self._proc.log_path = log_path  # one file per run of this world, not the shared .local/logs/<name>.log

    @property
    def url(self) -> str:
        return self._proc.url

    @property
    def log_path(self) -> Path:
        return self._proc.log_path

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    @property
    def alive(self) -> bool:
        return self._proc.running

    def start(self) -> ServiceProcess:
        self._proc.start()
        return self

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await self._proc.wait_ready_async(timeout)

    async def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (rc := self._proc.returncode) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {timeout:.0f}s\n{self.log_tail()}")
            await asyncio.sleep(0.1)
        return rc

    async def stop(self) -> None:
        await asyncio.to_thread(self._proc.stop, 12.0)

    def log_tail(self, lines: int = 40) -> str:
        return f"----- last {lines} lines of {self.log_path} -----\n{self._proc.log_tail(lines)}"

    async def metric(self, name: str) -> float:
        """Sum of a Prometheus sample over its labels, from the service's /metrics."""
        async with httpx.AsyncClient(timeout=5.0) as client:
            text = (await client.get(self.url + "/metrics")).text
        total = 0.0
        for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE):
            total += float(m.group(1))
        return total


# ---------------------------------------------------------------- databases


async def create_databases(names: list[str]) -> None:
    await world.create_databases(PG_BASE, names)


async def drop_databases(names: list[str]) -> None:
    await world.drop_databases(PG_BASE, names, timeout_s=60)


# ---------------------------------------------------------------- Kafka


async def partitions_of(topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **kafka_options())
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0 and described["partitions"], f"topic {topic}: {described}"
    return sorted(p["partition"] for p in described["partitions"])


async def read_topic(topic: str, timeout: float = 30.0) -> list[ConsumerRecord]:
    """Every record of `topic` from the beginning to the current end, by partition then offset."""
    partitions = await partitions_of(topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, **kafka_options(), enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while True:
            behind = [tp for tp in tps if await consumer.position(tp) < end[tp]]
            if not behind:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout}s")
            for recs in (await consumer.getmany(*behind, timeout_ms=500)).values():
                out.extend(r for r in recs if r.offset < end[TopicPartition(r.topic, r.partition)])
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


def headers_of(record: ConsumerRecord) -> dict[str, bytes]:
    return {k: v for k, v in record.headers or ()}


def header(record: ConsumerRecord, name: str) -> str | None:
    v = headers_of(record).get(name)
    return None if v is None else v.decode(errors="replace")


def by_subject(records: list[ConsumerRecord]) -> dict[str, list[ConsumerRecord]]:
    out: dict[str, list[ConsumerRecord]] = {}
    for r in records:
        out.setdefault(header(r, "ce_subject") or "", []).append(r)
    return out


async def end_offsets(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None, **kafka_options(), enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def committed_offsets(group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **kafka_options())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: om.offset for tp, om in offsets.items() if om is not None and om.offset >= 0}


async def delete_topics_and_groups(topics: list[str], groups: list[str]) -> None:
    await world.delete_topics_and_groups(BOOTSTRAP, topics, groups)


def stack_env() -> dict[str, str]:
    """The environment for scripts/kafka.sh and scripts/postgres.sh of this checkout (ROOT), aimed at
    the broker and database the tests use: ports from the environment, else from BOOTSTRAP and PG_BASE
    (and the controller port from the running broker's rendered config)."""
    env = dict(os.environ)
    kafka_port = BOOTSTRAP.split(",")[0].rpartition(":")[2]
    env.setdefault("REGSOSEK_KAFKA_PORT", kafka_port)
    assert env["REGSOSEK_KAFKA_PORT"] == kafka_port, \
        f"REGSOSEK_KAFKA_PORT={env['REGSOSEK_KAFKA_PORT']} but the tests use the broker at {BOOTSTRAP}"
    if not env.get("REGSOSEK_KAFKA_CONTROLLER_PORT"):
        props = ROOT / ".local" / "kafka" / "server.properties"
        m = re.search(r"^controller\.quorum\.voters=\S*:(\d+)\s*$", props.read_text() if props.exists() else "",
                      re.MULTILINE)
        if m:
            env["REGSOSEK_KAFKA_CONTROLLER_PORT"] = m.group(1)
    if not env.get("REGSOSEK_PG_EXTERNAL_URL"):
        pg_port = str(urlsplit(PG_BASE).port or 5432)
        env.setdefault("REGSOSEK_PG_PORT", pg_port)
        assert env["REGSOSEK_PG_PORT"] == pg_port, \
            f"REGSOSEK_PG_PORT={env['REGSOSEK_PG_PORT']} but the tests use the database at {PG_BASE}"
    return env


async def stack_script(script: str, *args: str, timeout: float = 180.0, env: dict[str, str] | None = None) -> str:
    """Runs scripts/<script> of this checkout (e.g. "kafka.sh", "start") on the tests' stack, with `env`
    added to its environment; its output."""
    proc = await asyncio.create_subprocess_exec("bash", f"scripts/{script}", *args, cwd=ROOT,
                                                env=stack_env() | (env or {}),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"scripts/{script} {' '.join(args)} still running after {timeout:.0f}s") from None
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"scripts/{script} {' '.join(args)} failed ({proc.returncode}):\n{text[-3000:]}"
    return text


def broker_pid() -> int | None:
    """The pid of this checkout's broker (scripts/kafka.sh), if it is running."""
    try:
        pid = int((ROOT / ".local" / "kafka" / "kafka.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"kafka.Kafka" in cmdline else None


async def stop_broker(*, kill: bool = False) -> None:
    """Stops the tests' broker: SIGKILL (a crash: no controlled shutdown) or scripts/kafka.sh stop."""
    if not kill:
        await stack_script("kafka.sh", "stop")
        return
    pid = broker_pid()
    assert pid is not None, f"no broker of {ROOT} is running (.local/kafka/kafka.pid)"
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, interval=0.1,
                     what=f"the broker (pid {pid}) to exit after SIGKILL")


async def start_broker() -> None:
    await stack_script("kafka.sh", "start")


def cloud_event(data: Contract, *, subject: str, event_id: str | None = None,
                traceparent: str | None = None) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """(ce_id, value, headers) of a record as a producing service would write it."""
    env = new_envelope(data, source="/regsosek/integration-tests", subject=subject, event_id=event_id,
                       trace={"traceparent": traceparent} if traceparent else None)
    return env.id, encode(data), env.headers()


async def start_producer(**options: Any) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, **kafka_options(), acks="all", enable_idempotence=True, linger_ms=0,
                                **options)
    await producer.start()
    return producer


# ---------------------------------------------------------------- a test world


class World(world.World):
    """One isolated pipeline (regsosek_tools.world.World: topic prefix, one database per service)
    with the test's ports, processes and held locks."""

    def __init__(self, services: list[str], tag: str | None = None) -> None:
        super().__init__(services, tag=tag, kind="it", stack=world.Stack(BOOTSTRAP, PG_BASE))
        self.ports: dict[str, int] = {}
        self.processes: list[ServiceProcess] = []
        self._locks: list[asyncpg.Connection] = []

    async def setup(self) -> World:
        await self.create()
        self.ports = {s: free_port() for s in self.services}
        return self

    async def teardown(self) -> None:
        for conn in self._locks:
            if not conn.is_closed():
                await conn.close()
        await asyncio.gather(*(p.stop() for p in self.processes), return_exceptions=True)
        await self.destroy()

    def process(self, name: str, port: int | None = None, **env: str) -> ServiceProcess:
        """A service of this world, not yet started; `env` adds e.g. a fault variable. A second
        instance next to a live one gets a port of its own (the first keeps `ports[name]`) unless
        `port` names one (a replacement on the port of an instance that stopped)."""
        if port is None:
            port = self.ports[name]
            if any(p.name == name and p.alive for p in self.processes):
                port = free_port()
        # faults off unless a test arms one in `env`; tokens of the local key pair that token() signs with
        overrides = self.service_env(name, port, log_level="INFO", extra=env)
        log = LOG_DIR / f"{self.tag}-{name}-{next(_run_counter)}.log"
        p = ServiceProcess(name, overrides, port, log)
        self.processes.append(p)
        return p

    async def start(self, *names: str, **env: str) -> list[ServiceProcess]:
        procs = [self.process(n, **env).start() for n in names]
        await asyncio.gather(*(p.wait_ready() for p in procs))
        return procs

    def receiver(self, secret: str) -> ServiceProcess:
        """The reference programme receiver (regsosek_tools.receiver) on a port of its own."""
        port = free_port()
        env = {"REGSOSEK_HTTP_HOST": "127.0.0.1", "REGSOSEK_HTTP_PORT": str(port), "REGSOSEK_RECEIVER_SECRET": secret}
        p = ServiceProcess("receiver", env, port, LOG_DIR / f"{self.tag}-receiver-{next(_run_counter)}.log")
        self.processes.append(p)
        return p

    async def hold_relay_lock(self, service: str) -> asyncpg.Connection:
        """Takes the outbox relay's advisory lock in `service`'s database: its relay then
        waits (the "another instance is the relay" path) until the connection closes."""
        conn = await asyncpg.connect(self.dsn(service))
        assert await conn.fetchval("select pg_try_advisory_lock($1)", RELAY_LOCK)
        self._locks.append(conn)
        return conn

    async def fetch(self, service: str, sql: str, *args) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn(service), timeout=10)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def fetchval(self, service: str, sql: str, *args) -> Any:
        rows = await self.fetch(service, sql, *args)
        return rows[0][0] if rows else None


# ---------------------------------------------------------------- small, valid data

_serials = itertools.count(random.randint(1, 4000))


@contextlib.asynccontextmanager
async def loaded_classify(families: int, moved: float, *, ranked: bool = False) -> AsyncIterator[World]:
    """A world of classify's database alone, migrated and bulk-loaded with `families` classified
    families by the re-rank benchmark's loader (COPY; `moved` of them one decile off their ranking;
    `ranked`: resting on a finished re-rank, else with provisional bases), torn down afterwards."""
    from classify import app
    from classify.rerank_bench import load
    from classify.settings import ClassifySettings
    from regsosek import db

    w = await World(["classify"]).setup()
    try:
        pool = await db.connect_pool(w.dsn("classify"), max_size=1)
        try:
            await db.migrate(pool, app.MIGRATIONS)
        finally:
            await pool.close()
        await load(w.dsn("classify"), families, "regency", moved, app.load_config(ClassifySettings()), ranked=ranked)
        yield w
    finally:
        await w.teardown()


def new_sls_id(regency: str = "6472") -> str:
    """A random SLS in a real village of `regency` (intake checks villages against the reference)."""
    rng = random.Random()
    return f"{rng.choice(areas.reference().villages_of(regency))}{rng.randint(1, 9999):04d}"


def other_sls_of_village(sls_id: str) -> str:
    """Another random SLS of `sls_id`'s village (an SLS change moves families within a village).
    Random rather than a fixed number, so that two tests of one module never share it: an SLS
    completes once per roster revision, and a shared SLS would complete once for each test."""
    rng = random.Random()
    while (other := f"{sls_id[:10]}{rng.randint(1, 9999):04d}") == sls_id:
        pass
    return other


def family(sls_id: str, building_no: int, family_no: int = 1) -> tuple[dict, dict]:
    """(roster entry, interview document) of a three-member family that verifies cleanly."""
    serial = next(_serials) % 9999 + 1
    area = sls_id[:6]
    kk = f"{area}{building_no:04d}{family_no:03d}{serial % 1000:03d}"
    entry = {"building_no": building_no, "family_no": family_no, "kk_number": kk, "head_name": "Budi",
             "member_count": 3, "status": "present"}
    interview = {
        "submission_id": str(uuid.uuid4()), "officer_id": "OFC-IT", "interviewed_at": "2022-10-20T10:00:00+08:00",
        "location": {"sls_id": sls_id, "building_no": building_no, "family_no": family_no, "kk_number": kk},
        "housing": {"tenure": "owned", "floor_area_m2": 36, "floor": "wood_plank", "wall": "wood_board",
                    "roof": "zinc", "drinking_water": "refill", "lighting": "pln_metered",
                    "installed_power": "450", "cooking_fuel": "lpg_3kg", "toilet": "own",
                    "faeces_disposal": "septic_tank"},
        "members": [
            {"line_no": 1, "name": "Budi", "nik": f"{area}050580{serial:04d}", "sex": "male",
             "date_of_birth": "1980-05-05", "relationship": "head", "marital_status": "married",
             "school": "not_anymore", "highest_diploma": "sd", "worked_last_week": True, "hours_worked": 40,
             "industry": "agriculture", "job_status": "casual"},
            {"line_no": 2, "name": "Siti", "nik": f"{area}450685{serial:04d}", "sex": "female",
             "date_of_birth": "1985-06-05", "relationship": "spouse", "marital_status": "married",
             "school": "not_anymore", "highest_diploma": "sd", "worked_last_week": False},
            {"line_no": 3, "name": "Ani", "sex": "female", "date_of_birth": "2019-01-01", "relationship": "child",
             "marital_status": "never_married", "school": "never", "highest_diploma": "none",
             "worked_last_week": False},
        ],
        "economy": {"assets": ["motorbike", "smartphone"]},
    }
    return entry, interview


def roster(sls_id: str, entries: list[dict]) -> dict:
    return {"submission_id": str(uuid.uuid4()), "sls_id": sls_id, "officer_id": "OFC-IT", "confirmed_by": "Pak RT",
            "confirmed_at": "2022-10-16T08:00:00+08:00", "families": entries}


def family_id_of(interview: dict) -> str:
    loc = interview["location"]
    return f"{loc['sls_id']}-{loc['building_no']:04d}-{loc['family_no']:03d}"


def trace_id_of(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 else None


# ---------------------------------------------------------------- intake's HTTP API


def token(role: str, subject: str = "IT", areas: tuple[str, ...] = ("64",),
          programmes: tuple[str, ...] | None = None) -> str:
    """A bearer token; a programme token names every programme unless `programmes` says which."""
    from regsosek.auth import Role, mint
    from regsosek.programmes import PROGRAMME_CODES

    if role == "programme" and programmes is None:
        programmes = PROGRAMME_CODES
    # signed with the local key pair (.local/auth/, made on first use), for every local service
    return mint(subject=subject, role=Role(role), areas=list(areas),
                programmes=list(programmes) if programmes is not None else None)


@dataclass
class Submitter:
    """Posts submissions to intake; with `retry`, repeats the same submission (same id,
    same content) through errors and outages until intake accepts it."""

    client: httpx.AsyncClient
    officer: str = field(default_factory=lambda: token("officer", "OFC-IT"))
    failed_attempts: int = 0

    async def submit(self, path: str, doc: dict, *, headers: dict | None = None, retry_for: float = 0.0) -> dict:
        deadline = time.monotonic() + retry_for
        h = {"authorization": f"Bearer {self.officer}", **(headers or {})}
        while True:
            try:
                r = await self.client.post(path, json=doc, headers=h)
                if r.status_code in (200, 202):
                    return r.json()
                assert r.status_code >= 500, f"POST {path} refused: {r.status_code} {r.text[:500]}"
                problem = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as e:
                problem = f"{type(e).__name__}: {e}"
            self.failed_attempts += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"POST {path} not accepted: {problem}")
            await asyncio.sleep(0.3)

    async def status(self, submission_id: str) -> dict | None:
        r = await self.client.get(f"/v1/submissions/{submission_id}",
                                  headers={"authorization": f"Bearer {token('admin', 'ADM-IT', ())}"})
        return r.json() if r.status_code == 200 else None
