"""regsosek_tools.world: the one set-up of an isolated world (bench, integration kit). Names and
environment without a stack; creating and removing a world on the real broker and database
(marked integration)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from regsosek.topics import Topic, specs
from regsosek_tools.world import (
    FAULT_EXIT_AFTER_DB_COMMIT,
    FAULT_RELAY_EXIT_AFTER_SENDS,
    Stack,
    StackDown,
    World,
    free_port,
    local_auth_env,
)

STACK = Stack("127.0.0.1:19092", "postgresql://regsosek@127.0.0.1:15432")


def test_a_world_names_everything_after_its_tag(monkeypatch):
    monkeypatch.setenv("REGSOSEK_TOPIC_PREFIX", "the-environment-does-not-count.")
    w = World(["intake", "verify"], tag="it1234abcd", stack=STACK)
    assert w.prefix == "it1234abcd."
    assert w.topic(Topic.SLS_ROSTER) == w.topic("sls-roster") == "it1234abcd.sls-roster"
    assert w.topics() == [f"it1234abcd.{s.name}" for s in specs("local")]
    assert w.partitions() == {f"it1234abcd.{s.name}": s.partitions for s in specs("local")}
    assert w.group("verify") == "it1234abcd.regsosek-verify"
    assert w.database("verify") == "it1234abcd_verify"
    assert w.dsn("verify") == "postgresql://regsosek@127.0.0.1:15432/it1234abcd_verify"


def test_worlds_get_distinct_tags_of_their_kind():
    a, b = World(kind="bench", stack=STACK), World(kind="bench", stack=STACK)
    assert a.tag.startswith("bench") and b.tag.startswith("bench") and a.tag != b.tag
    assert a.services == ["intake", "verify", "classify", "notify"]


def test_the_service_environment_points_at_the_world_with_faults_off():
    w = World(["classify"], tag="w1", stack=STACK)
    env = w.service_env("classify", 8123, log_level="WARNING", extra={FAULT_EXIT_AFTER_DB_COMMIT: "3"})
    assert env["REGSOSEK_KAFKA_BOOTSTRAP"] == "127.0.0.1:19092"
    assert env["REGSOSEK_DATABASE_URL"] == "postgresql://regsosek@127.0.0.1:15432/w1_classify"
    assert env["REGSOSEK_TOPIC_PREFIX"] == "w1."
    assert (env["REGSOSEK_HTTP_HOST"], env["REGSOSEK_HTTP_PORT"]) == ("127.0.0.1", "8123")
    assert env["REGSOSEK_LOG_LEVEL"] == "WARNING"
    assert env[FAULT_EXIT_AFTER_DB_COMMIT] == "3"  # armed by the caller
    assert env[FAULT_RELAY_EXIT_AFTER_SENDS] == ""  # off
    assert env["REGSOSEK_AUTH_JWKS_FILE"] == local_auth_env()["REGSOSEK_AUTH_JWKS_FILE"]


def test_free_port_is_free():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # would raise if taken


def test_a_stack_that_does_not_answer_is_named():
    port = free_port()  # nothing listens there
    stack = Stack(f"127.0.0.1:{port}", f"postgresql://regsosek@127.0.0.1:{port}")
    assert stack.problems() == [f"Kafka at 127.0.0.1:{port}", f"PostgreSQL at 127.0.0.1:{port}"]
    with pytest.raises(StackDown, match="bash scripts/stack.sh up"):
        stack.check()


@pytest.mark.integration
async def test_a_world_is_created_and_removed_on_the_real_stack():
    import asyncpg
    from aiokafka.admin import AIOKafkaAdminClient

    from regsosek.kafka_security import client_options

    w = World(["verify"], kind="wtest")
    w.stack.check()

    async def databases() -> set[str]:
        conn = await asyncpg.connect(w.stack.dsn("postgres"), timeout=10)
        try:
            return {r["datname"] for r in await conn.fetch("select datname from pg_database")}
        finally:
            await conn.close()

    async def topics() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=w.bootstrap, **client_options())
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    await w.create()
    try:
        assert w.database("verify") in await databases()
        assert set(w.topics()) <= await topics()
    finally:
        await w.destroy()
    assert w.database("verify") not in await databases()
    for _ in range(60):  # topic deletion completes on the broker shortly after the request
        left = set(w.topics()) & await topics()
        if not left:
            break
        await asyncio.sleep(0.5)
    assert not left, f"topics left behind: {sorted(left)}"
