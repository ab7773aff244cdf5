"""Operability on the real PostgreSQL and Kafka: readiness follows the database, the
migrate command is its own step and a service waits for it, and database spans carry
no statement parameters.

The database outage is simulated for one service only: its DATABASE_URL points at a TCP
proxy in this test, which the test cuts (every connection dropped, new ones refused) and
restores. The shared dev PostgreSQL is never stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from itkit import PG_BASE, ROOT, World, eventually, free_port, stack_env

pytestmark = pytest.mark.integration

PROBES = {"REGSOSEK_PROBE_INTERVAL_S": "0.5", "REGSOSEK_PROBE_TIMEOUT_S": "1"}


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL until cut."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.server = None
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        if self.server is not None:
            await self.cut()


def pg_target() -> tuple[str, int]:
    hostport = PG_BASE.rsplit("@", 1)[1]
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


async def status(url: str, path: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.get(url + path)
    return r.status_code, r.json()


async def test_readiness_follows_the_database_and_liveness_does_not(stack):
    world = await World(["notify"]).setup()
    proxy = CuttableProxy(*pg_target())
    await proxy.start()
    try:
        dsn = f"{PG_BASE.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}/{world.database('notify')}"
        notify = world.process("notify", REGSOSEK_DATABASE_URL=dsn, **PROBES).start()
        await notify.wait_ready(90)
        code, body = await status(notify.url, "/healthz")
        assert code == 200, body
        assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok", body
        assert body["checks"]["schema"] == "ok" and body["checks"]["relay"] == "ok", body

        await proxy.cut()  # the database is gone for this service
        code, body = await eventually(
            lambda: _when(status(notify.url, "/healthz"), lambda r: r[0] == 503), timeout=15, what="readiness 503")
        assert body["ready"] is False and body["checks"]["database"] != "ok", body
        assert body["checks"]["broker"] == "ok", body  # the broker is fine: only the database is named
        code, live = await status(notify.url, "/livez")
        assert code == 200 and live == {"alive": True}  # an outage is no reason to restart

        await proxy.start()  # back
        code, body = await eventually(
            lambda: _when(status(notify.url, "/healthz"), lambda r: r[0] == 200), timeout=30, what="readiness 200")
        assert body["checks"]["database"] == "ok", body
        text = (await httpx.AsyncClient(timeout=5).get(notify.url + "/metrics")).text
        assert 'regsosek_probe_ok{check="database",service="notify"} 1.0' in text
        assert "regsosek_event_loop_lag_seconds{" in text
    finally:
        await world.teardown()
        await proxy.stop()


async def _when(call, ok):
    r = await call
    return r if ok(r) else None


def migrate(service: str, dsn: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack_env(), "REGSOSEK_DATABASE_URL": dsn}
    return subprocess.run([sys.executable, "-m", "regsosek.migrate", "--service", service, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def test_migrations_are_their_own_step_and_the_service_waits_for_them(stack):
    from regsosek.db import expected_migrations
    from verify.app import MIGRATIONS

    world = await World(["verify"]).setup()
    try:
        dsn = world.dsn("verify")
        check = migrate("verify", dsn, "--check")
        assert check.returncode == 3, check.stderr[-2000:]  # an empty database: everything pending

        verify = world.process("verify", REGSOSEK_MIGRATE_ON_START="false", **PROBES).start()
        code, body = await eventually(
            lambda: _when(status(verify.url, "/healthz"),
                          lambda r: r[1]["checks"].get("schema", "not checked yet") != "not checked yet"),
            timeout=60, what="the service serving its probes while it waits")
        assert code == 503 and body["checks"]["schema"].startswith("schema behind"), body
        assert "python -m regsosek.migrate --service verify" in body["checks"]["schema"]
        assert (await status(verify.url, "/livez"))[0] == 200  # waiting for a migration is alive
        assert await world.fetchval("verify", "select to_regclass('schema_migrations') is not null") is False

        done = migrate("verify", dsn)
        assert done.returncode == 0, done.stderr[-2000:]
        assert migrate("verify", dsn, "--check").returncode == 0
        applied = {r["name"] for r in await world.fetch("verify", "select name from schema_migrations")}
        assert applied == set(expected_migrations(MIGRATIONS))
        await verify.wait_ready(60)  # the service notices and starts
        code, body = await status(verify.url, "/healthz")
        assert code == 200 and body["checks"]["schema"] == "ok", body
        again = migrate("verify", dsn)  # idempotent
        assert again.returncode == 0 and '"applied":[]' in again.stderr, again.stderr[-2000:]
    finally:
        await world.teardown()


def test_database_spans_carry_the_statement_but_never_its_parameters(stack, tmp_path: Path):
    """Through telemetry.setup, as a service runs: an insert with a NIK-like value, then the span file."""
    spans = tmp_path / "spans.jsonl"
    value = f"6472{uuid.uuid4().int % 10**12:012d}"
    script = f"""
import asyncio, asyncpg
from regsosek import telemetry
telemetry.setup("spantest")

async def main():
    conn = await asyncpg.connect({PG_BASE + '/postgres'!r})
    try:
        await conn.execute("create temporary table t (nik text not null)")
        await conn.execute("insert into t (nik) values ($1)", {value!r})
        await conn.fetchval("select count(*) from t where nik = $1", {value!r})
        try:
            await conn.execute("select $1::bigint", {value + 'x'!r})  # the error message quotes the value
        except asyncpg.DataError:
            pass
    finally:
        await conn.close()

asyncio.run(main())
"""
    env = {**os.environ, **stack_env(), "REGSOSEK_TRACE_FILE": str(spans)}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    docs = [json.loads(line) for line in spans.read_text().splitlines() if line.strip()]
    inserts = [d for d in docs if "insert into t" in json.dumps(d.get("attributes", {}))]
    assert inserts, f"no span for the insert among {[d['name'] for d in docs]}"
    assert inserts[0]["kind"] == "SpanKind.CLIENT"
    assert "db.statement.parameters" not in inserts[0]["attributes"]
    failed = [d for d in docs if "::bigint" in json.dumps(d.get("attributes", {}))]
    assert failed and failed[0]["status"]["status_code"] == "ERROR"
    assert value not in spans.read_text()  # neither the parameters nor the error's message
