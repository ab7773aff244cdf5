"""Worlds on the shared local stack: where the broker and database server are, and isolated
worlds on them for the bench and the integration tests.

One Kafka broker and one PostgreSQL server (scripts/stack.sh) serve many runs at once. A
`World` keeps one run apart from every other: its own topic prefix (`<tag>.`, the rule of
regsosek.topics), consumer groups under that prefix, one database per service
(`<tag>_<service>`), and the environment that points a service process at all of that.

    world = World(["intake", "verify"], kind="bench")
    await world.create()                      # databases and topics
    env = world.service_env("verify", port)   # for processes.ServiceProcess
    ...
    await world.destroy()                     # databases, topics and groups (bounded, best effort for groups)

On the three-broker cluster (REGSOSEK_KAFKA_BROKERS=3) `World(..., brokers=1)` places every
partition of the world's topics on one broker alone, `brokers=3` on all three (leaders spread,
min.insync.replicas 2): the bench compares the two in one run (python -m regsosek_tools.bench
--brokers 1,3).

`make run` does not build an isolated world: it runs the services on their own databases and
unprefixed topics, and uses `Stack.check()` and `local_auth_env()` from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from regsosek.kafka_security import client_options
from regsosek.topics import consumer_group, create_topics, specs, wire_name
from regsosek_tools.processes import PIPELINE, stack_env

# Fault injection variables of the services (regsosek.messaging.faults): off in every world unless armed.
FAULT_EXIT_AFTER_DB_COMMIT = "REGSOSEK_FAULT_EXIT_AFTER_DB_COMMIT"
FAULT_RELAY_EXIT_AFTER_SENDS = "REGSOSEK_FAULT_RELAY_EXIT_AFTER_SENDS"


class StackDown(RuntimeError):
    """The local broker or database server does not answer."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_auth_env() -> dict[str, str]:
    """Services verify bearer tokens against the public half of the local key pair that the tools
    and tests sign with (regsosek.auth; made on first use)."""
    from regsosek.auth import local_jwks_file

    return {"REGSOSEK_AUTH_JWKS_FILE": str(local_jwks_file())}


def _reachable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host or "127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Stack:
    """The shared broker and database server."""

    bootstrap: str
    pg_base: str  # postgresql://user@host:port, no database

    @classmethod
    def from_env(cls) -> Stack:
        """From the environment, else .local/stack.env, else the defaults (processes.stack_env)."""
        env = stack_env()
        return cls(env["REGSOSEK_KAFKA_BOOTSTRAP"], env["REGSOSEK_PG_URL_BASE"].rstrip("/"))

    def problems(self) -> list[str]:
        """What does not answer (empty when both do)."""
        host, _, port = self.bootstrap.split(",")[0].rpartition(":")
        pg = urlsplit(self.pg_base)
        problems = []
        if not _reachable(host, int(port)):
            problems.append(f"Kafka at {host or '127.0.0.1'}:{port}")
        if not _reachable(pg.hostname or "127.0.0.1", pg.port or 5432):
            problems.append(f"PostgreSQL at {pg.hostname}:{pg.port or 5432}")
        return problems

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise StackDown(f"the local stack is not up ({', '.join(problems)} not reachable); "
                            "run: bash scripts/stack.sh up")

    def dsn(self, database: str) -> str:
        return f"{self.pg_base}/{database}"


# ---------------------------------------------------------------- databases


async def create_databases(pg_base: str, names: Iterable[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{pg_base}/postgres", timeout=15)
    try:
        for n in names:
            await conn.execute(f'create database "{n}"')
    finally:
        await conn.close()


async def drop_databases(pg_base: str, names: Sequence[str], *, timeout_s: float = 60.0) -> None:
    """Drops the databases (forcing their connections closed), retrying until `timeout_s`; then
    raises the last error."""
    import asyncpg

    deadline = time.monotonic() + timeout_s
    left = list(names)
    while left:
        try:
            conn = await asyncpg.connect(f"{pg_base}/postgres", timeout=10)
            try:
                while left:
                    await conn.execute(f'drop database if exists "{left[0]}" with (force)')
                    left.pop(0)
            finally:
                await conn.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


# ---------------------------------------------------------------- Kafka


async def delete_topics_and_groups(bootstrap: str, topics: Iterable[str], groups: Iterable[str]) -> None:
    """Deletes the topics that exist; groups best effort (the admin client has no public call for it,
    and empty groups expire anyway)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.admin import DeleteGroupsRequest

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000, **client_options())
    await asyncio.wait_for(admin.start(), 20)
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            await asyncio.wait_for(admin.delete_topics(doomed), 30)
        for g in groups:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin._send_request(DeleteGroupsRequest([g]), await admin.find_coordinator(g)), 5)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def placement(partitions: int, brokers: Sequence[int]) -> dict[int, list[int]]:
    """Replicas of each partition on `brokers` (node ids): every partition on all of them, partition
    p led by brokers[p % n] and followed by the next ones in turn, so leaders spread evenly."""
    n = len(brokers)
    if n < 1 or partitions < 1:
        raise ValueError(f"need at least one partition and one broker, got {partitions} and {n}")
    return {p: [brokers[(p + i) % n] for i in range(n)] for p in range(partitions)}


def min_insync(replicas: int) -> int:
    """Production's rule (3 replicas, 2 in sync: one broker may be lost) on fewer replicas."""
    return max(1, min(2, replicas - 1))


async def broker_ids(bootstrap: str) -> list[int]:
    """Node ids of the cluster's brokers, in order."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000, **client_options())
    await asyncio.wait_for(admin.start(), 20)
    try:
        return sorted(b["node_id"] for b in (await admin.describe_cluster())["brokers"])
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def create_placed_topics(bootstrap: str, prefix: str, brokers: int) -> list[str]:
    """The registry's topics (local profile's partitions and retention) under `prefix`, each partition
    replicated on `brokers` of the cluster's brokers (`placement`), min.insync.replicas by `min_insync`."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    nodes = await broker_ids(bootstrap)
    if brokers > len(nodes):
        raise StackDown(f"{brokers} brokers asked for, the cluster at {bootstrap} has {len(nodes)}; "
                        "start the three-broker stack: REGSOSEK_KAFKA_BROKERS=3 bash scripts/stack.sh up")
    chosen = nodes[:brokers]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000, **client_options())
    await asyncio.wait_for(admin.start(), 20)
    try:
        topics = [NewTopic(name=prefix + s.name, num_partitions=-1, replication_factor=-1,
                           replica_assignments=placement(s.partitions, chosen),
                           topic_configs={**s.config, "min.insync.replicas": str(min_insync(brokers))})
                  for s in specs("local")]
        await admin.create_topics(topics)
        return [t.name for t in topics]
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


# ---------------------------------------------------------------- a world


class World:
    """One isolated pipeline on the shared stack: topic prefix, consumer groups, one database per
    service, and the environment of its service processes. Processes themselves are started by the
    caller (regsosek_tools.processes), which knows its ports and log files."""

    def __init__(self, services: Sequence[str] = PIPELINE, *, tag: str | None = None, kind: str = "world",
                 stack: Stack | None = None, brokers: int | None = None) -> None:
        self.services = list(services)
        self.brokers = brokers  # None: topics by the stack's profile; n: on n brokers (create_placed_topics)
        self.tag = tag or f"{kind}{uuid.uuid4().hex[:8]}"
        self.stack = stack or Stack.from_env()
        self.extra_topics: list[str] = []  # made by the caller under this world's prefix; deleted with it
        self.extra_groups: list[str] = []

    @property
    def prefix(self) -> str:
        return f"{self.tag}."

    @property
    def bootstrap(self) -> str:
        return self.stack.bootstrap

    def topic(self, name: str) -> str:
        """A registry topic's name in this world (`Topic.SLS_ROSTER` or "sls-roster")."""
        return wire_name(str(name), self.prefix)

    def topics(self) -> list[str]:
        """Every registry topic of this world."""
        return [self.topic(s.name) for s in specs("local")]

    def partitions(self) -> dict[str, int]:
        """Partitions of every registry topic of this world (the local profile)."""
        return {self.topic(s.name): s.partitions for s in specs("local")}

    def group(self, service: str) -> str:
        return consumer_group(service, self.prefix)

    def database(self, service: str) -> str:
        return f"{self.tag}_{service}"

    def dsn(self, service: str) -> str:
        return self.stack.dsn(self.database(service))

    def service_env(self, service: str, port: int, *, log_level: str = "INFO",
                    extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of one of this world's service processes on `port` (faults off, tokens
        of the local key pair accepted); `extra` last, e.g. a fault to arm."""
        return {
            "REGSOSEK_KAFKA_BOOTSTRAP": self.stack.bootstrap,
            "REGSOSEK_PG_URL_BASE": self.stack.pg_base,
            "REGSOSEK_DATABASE_URL": self.dsn(service),
            "REGSOSEK_TOPIC_PREFIX": self.prefix,
            "REGSOSEK_HTTP_HOST": "127.0.0.1",
            "REGSOSEK_HTTP_PORT": str(port),
            "REGSOSEK_LOG_LEVEL": log_level,
            FAULT_EXIT_AFTER_DB_COMMIT: "",
            FAULT_RELAY_EXIT_AFTER_SENDS: "",
            **local_auth_env(),
            **(extra or {}),
        }

    async def create(self, *, timeout_s: float = 60.0) -> World:
        """Creates the world's databases (empty: services migrate them) and topics."""
        await create_databases(self.stack.pg_base, [self.database(s) for s in self.services])
        if self.brokers is None:
            await asyncio.wait_for(create_topics(self.stack.bootstrap, prefix=self.prefix), timeout_s)
        else:
            await asyncio.wait_for(create_placed_topics(self.stack.bootstrap, self.prefix, self.brokers), timeout_s)
        return self

    async def destroy(self, *, timeout_s: float = 60.0) -> None:
        """Drops the databases and deletes the topics and groups (also those added to `extra_topics`
        and `extra_groups`). Stop the world's processes first."""
        await drop_databases(self.stack.pg_base, [self.database(s) for s in self.services], timeout_s=timeout_s)
        await delete_topics_and_groups(self.stack.bootstrap, [*self.topics(), *self.extra_topics],
                                       [*(self.group(s) for s in self.services), *self.extra_groups])
