"""The raw-Kafka ceiling's stages, each a child process: a producer, relays and a sink moving
the same payload bytes through topic hops with plain aiokafka (consumer groups, batch getmany,
idempotent acks=all producers, commit after the produce is acknowledged). Each reports the CPU
seconds of its work (from its first send, or from being ready to consume, to its last record;
start-up and shutdown left out) for the CPU budget (measure.budget).

    python -m regsosek_tools.bench _ceiling-stage produce|relay|sink --bootstrap ... --count N --deadline T ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from regsosek.kafka_security import client_options

HOPS = 3  # intake -> verify -> classify -> notify: three Kafka hops


class CeilingFailed(Exception):
    """A stage did not get ready or did not finish; `results` holds what the others reported."""

    def __init__(self, reason: str, results: dict[str, dict]) -> None:
        super().__init__(reason)
        self.results = results


def ceiling_figures(n: int, partitions: int, results: dict[str, dict], *, payload_bytes_mean: float) -> dict:
    """Records per second from the producer's first send to the sink's last receipt, and the
    producer's rate alone; an error when the sink did not get all `n`."""
    prod, sink = results.get("producer", {}), results.get("sink", {})
    if sink.get("n", 0) < n or "first" not in prod:
        return {"error": f"the sink received {sink.get('n', 0)} of {n}", "stages": results}
    span = sink["last"] - prod["first"]
    return {"records": n, "hops": HOPS, "partitions": partitions, "span_s": span,
            "records_per_s": n / span if span > 0 else None,
            "produce_only_per_s": n / (prod["acked"] - prod["first"]) if prod["acked"] > prod["first"] else None,
            "payload_bytes_mean": payload_bytes_mean, "stages": results}


def write_payload(path: Path, records: list[tuple[bytes, bytes]]) -> None:
    """(key, value) records as the producer stage reads them."""
    with open(path, "wb") as f:
        for k, v in records:
            f.write(struct.pack(">II", len(k), len(v)) + k + v)


def read_payload(data: bytes) -> list[tuple[bytes, bytes]]:
    records = []
    i = 0
    while i < len(data):
        kl, vl = struct.unpack_from(">II", data, i)
        i += 8
        records.append((data[i:i + kl], data[i + kl:i + kl + vl]))
        i += kl + vl
    return records


def _ce_headers(subject: bytes) -> list[tuple[str, bytes]]:
    """Headers the size and shape of the services' CloudEvents headers."""
    return [("ce_id", uuid.uuid4().hex.encode()), ("ce_type", b"id.go.bps.regsosek.interview.submitted.v1"),
            ("ce_source", b"/regsosek/intake"), ("ce_specversion", b"1.0"),
            ("ce_time", datetime.now(UTC).isoformat().encode()), ("ce_subject", subject),
            ("content-type", b"application/json"),
            ("traceparent", f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode())]


async def produce(a: argparse.Namespace) -> dict:
    """The producer stage: every payload record to the first hop, as fast as acks come back."""
    from regsosek.messaging.relay import make_producer

    records = read_payload(Path(a.payload).read_bytes())
    producer = make_producer(a.bootstrap)
    await producer.start()
    try:
        first, cpu0 = time.time(), time.process_time()
        futures = [await producer.send(a.dst, v, key=k, headers=_ce_headers(k)) for k, v in records]
        await asyncio.wait_for(asyncio.gather(*futures), max(10.0, a.deadline - time.time()))
        return {"n": len(records), "first": first, "acked": time.time(), "cpu_s": time.process_time() - cpu0}
    finally:
        await producer.stop()


async def _stage(a: argparse.Namespace) -> dict:
    """A relay (consume, produce to the next hop, commit) or the sink (consume, commit)."""
    from aiokafka import AIOKafkaConsumer

    from regsosek.messaging.relay import make_producer

    if a.role == "produce":
        return await produce(a)
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
        cpu0 = time.process_time()
        while count < a.count and time.time() < a.deadline:
            await handle(await consumer.getmany(timeout_ms=50, max_records=500))
        return {"n": count, "first": first, "last": last, "cpu_s": time.process_time() - cpu0}
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
