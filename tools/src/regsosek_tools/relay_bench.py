"""The outbox relay alone, under producer settings (BENCHMARKS.md, round 3: classify, notify, relay).

    . .local/stack.env && python -m regsosek_tools.relay_bench --rows 20000 --rounds 2

For each setting (linger_ms, max_batch_size, compression, rows per relay fetch) it fills a fresh
outbox with the same rows (eligibility decisions of the bench's size, CloudEvents headers, keys over
200 SLS ids), lets `OutboxRelay.publish_once` empty it into a 6-partition topic, and reports the
relay's CPU per record (this process) and the broker's (the Kafka process, from /proc), with the
rows per second. Settings run in turn, `--rounds` times each, so that a busy moment of a shared
machine falls on all of them; compare the figures of one run only. acks=all and idempotence are
kept in every setting (the reliability tests depend on them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from regsosek import db
from regsosek.messaging.outbox import RelayWakeup
from regsosek.messaging.relay import OutboxRelay, make_producer
from regsosek.settings import ServiceSettings
from regsosek_tools.measure.proc import proc_cpu_s

SETTINGS: dict[str, dict] = {
    "linger 2 ms, 256 KiB (as shipped)": {},
    "linger 0 ms": {"linger_ms": 0},
    "linger 10 ms": {"linger_ms": 10},
    "linger 10 ms, 1 MiB batches": {"linger_ms": 10, "max_batch_size": 1024 * 1024},
    "gzip": {"compression_type": "gzip"},
}
FETCH = {"5,000 rows per fetch": 5000}


def _row(i: int) -> tuple:
    sls = f"6472{i % 200:010d}"
    fid = f"{sls}-{i % 9999:04d}-001"
    value = json.dumps({
        "family_id": fid, "sls_id": sls, "submission_id": str(uuid.uuid4()), "version": 1, "welfare_group": 2,
        "decile": 3, "model_version": "pmt-illustrative-2022.1", "rule_version": "2022.1",
        "decisions": [{"programme": p, "eligible": True, "rule_version": "2022.1",
                       "reasons": ["decile 3 <= 4", "welfare group 2 <= 3"]} for p in ("pkh", "sembako", "pbi_jkn",
                                                                                          "blt_desa", "pip")],
        "decided_at": datetime.now(UTC).isoformat(), "decision_seq": 1,
        "member_decisions": [{"line_no": n, "programme": "pbi_jkn", "eligible": True, "rule_version": "2022.1",
                              "reasons": ["welfare group 2 <= 3", "every member of an eligible family"]}
                             for n in range(1, 5)]}, separators=(",", ":")).encode()
    headers = [("ce_id", str(uuid.uuid4())), ("ce_type", "id.go.bps.regsosek.eligibility.decided.v1"),
               ("ce_source", "/regsosek/classify"), ("ce_specversion", "1.0"),
               ("ce_time", datetime.now(UTC).isoformat()), ("ce_subject", fid), ("content-type", "application/json"),
               ("traceparent", f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00")]
    return sls.encode(), value, [k.encode() for k, _ in headers], [v.encode() for _, v in headers]


def kafka_pid() -> int | None:
    pid_file = Path(os.environ.get("REGSOSEK_KAFKA_PID_FILE", ".local/kafka/kafka.pid"))
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def one(pool: asyncpg.Pool, topic: str, rows: list[tuple], settings: ServiceSettings, overrides: dict) -> dict:
    async with pool.acquire() as conn:
        await conn.execute("truncate outbox")
        await conn.copy_records_to_table("outbox", records=[(topic, *r) for r in rows],
                                         columns=["topic", "key", "value", "header_keys", "header_values"])
    relay = OutboxRelay(settings, lambda: pool, RelayWakeup(),
                        producer_factory=lambda: make_producer(settings.kafka_bootstrap, settings, **overrides))
    broker = kafka_pid()
    try:
        async with pool.acquire() as conn:
            await relay.publish_once(conn)  # the producer started and the topic's metadata fetched before measuring
            cpu0, broker0, t0 = time.process_time(), proc_cpu_s(broker) if broker else None, time.perf_counter()
            sent = 0
            while n := await relay.publish_once(conn):
                sent += n
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            broker_cpu = (proc_cpu_s(broker) or 0.0) - broker0 if broker and broker0 is not None else None
    finally:
        await relay.stop()
    return {"rows": sent, "rows_per_s": sent / wall, "relay_cpu_us_per_row": cpu / sent * 1e6,
            "broker_cpu_us_per_row": None if broker_cpu is None else broker_cpu / sent * 1e6}


async def run(a: argparse.Namespace) -> list[dict]:
    base = os.environ["REGSOSEK_PG_URL_BASE"]
    name = f"relaybench_{uuid.uuid4().hex[:8]}"
    admin_conn = await asyncpg.connect(f"{base}/postgres")
    await admin_conn.execute(f'create database "{name}"')
    topic = f"relaybench.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["REGSOSEK_KAFKA_BOOTSTRAP"])
    await admin.start()
    results: list[dict] = []
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
        pool = await db.connect_pool(f"{base}/{name}", max_size=2)
        try:
            with tempfile.TemporaryDirectory() as none:  # the shared messaging tables only (outbox)
                await db.migrate(pool, Path(none))
            rows = [_row(i) for i in range(a.rows)]
            cases = [(label, o, 1000) for label, o in SETTINGS.items()] + [(label, {}, n) for label, n in FETCH.items()]
            for r in range(a.rounds):
                for label, overrides, fetch in cases:
                    settings = ServiceSettings(service_name="relaybench", kafka_bootstrap=os.environ["REGSOSEK_KAFKA_BOOTSTRAP"],
                                               relay_batch_size=fetch)
                    res = {"setting": label, "round": r + 1, **await one(pool, topic, rows, settings, overrides)}
                    print(json.dumps(res), flush=True)
                    results.append(res)
        finally:
            await pool.close()
    finally:
        await admin.delete_topics([topic])
        await admin.close()
        await admin_conn.execute(f'drop database "{name}" with (force)')
        await admin_conn.close()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.relay_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args(argv)
    results = asyncio.run(run(a))
    print(f"{'setting':<36} {'rows/s':>8} {'relay µs/row':>13} {'broker µs/row':>14}")
    for label in dict.fromkeys(r["setting"] for r in results):
        for r in (x for x in results if x["setting"] == label):
            b = r["broker_cpu_us_per_row"]
            print(f"{label:<36} {r['rows_per_s']:>8.0f} {r['relay_cpu_us_per_row']:>13.0f} "
                  f"{'-' if b is None else f'{b:.0f}':>14}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
