"""Move a service's consumer group on every topic it consumes, for rehearsals on the local stack or the
three-broker cluster (production uses Kafka's own kafka-consumer-groups.sh: RUNBOOK.md "The console").

    . .local/stack.env
    .venv/bin/python deploy/reset_offsets.py console --to-earliest
    .venv/bin/python deploy/reset_offsets.py console --to-datetime 2022-10-20T02:00:00+08:00

The group (`regsosek-<service>`, with REGSOSEK_TOPIC_PREFIX) and its topics come from the topic registry.
The service must be stopped: Kafka refuses to commit for a group that has members. Connection settings as
every service's (REGSOSEK_KAFKA_BOOTSTRAP, TLS and SCRAM: regsosek.kafka_security).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from regsosek.kafka_security import client_options
from regsosek.topics import consumed_by, consumer_group, wire_name

BOOTSTRAP = os.environ.get("REGSOSEK_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


async def partitions(topics: list[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, **client_options())
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [TopicPartition(d["topic"], p["partition"]) for d in described if not d["error_code"]
            for p in sorted(d["partitions"], key=lambda p: p["partition"])]


async def reset(service: str, when: datetime | None) -> str:
    group = consumer_group(service)
    topics = [wire_name(t) for t in consumed_by(service)]
    tps = await partitions(topics)
    missing = sorted(set(topics) - {tp.topic for tp in tps})
    if missing:
        raise SystemExit(f"not on this broker: {', '.join(missing)} (REGSOSEK_TOPIC_PREFIX?)")
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False,
                                **client_options())
    await consumer.start()
    try:
        consumer.assign(tps)
        offsets = await consumer.beginning_offsets(tps)
        if when is not None:  # the first record at or after `when`; none yet: the end
            found = await consumer.offsets_for_times({tp: int(when.timestamp() * 1000) for tp in tps})
            ends = await consumer.end_offsets(tps)
            offsets = {tp: (found[tp].offset if found[tp] is not None else ends[tp]) for tp in tps}
        await consumer.commit(offsets)
        return f"{group}: {len(tps)} partitions of {len(topics)} topics moved"
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python deploy/reset_offsets.py", description=__doc__.split("\n\n")[0])
    p.add_argument("service")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-earliest", action="store_true", help="re-read everything the topics still hold")
    where.add_argument("--to-datetime", type=datetime.fromisoformat, help="re-read from this time (ISO 8601, with offset)")
    args = p.parse_args(argv)
    if args.to_datetime is not None and args.to_datetime.tzinfo is None:
        p.error("--to-datetime needs a UTC offset, e.g. 2022-10-20T02:00:00+08:00")
    if not consumed_by(args.service):
        p.error(f"{args.service} consumes no topic of the registry")
    print(asyncio.run(reset(args.service, args.to_datetime)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
