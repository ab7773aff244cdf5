"""The topic registry: names, partitions and configs from topics.yaml.

One declarative file drives the local broker, docker-compose and deploy/. Code
refers to topics through `Topic` so a misspelt name fails at import, not in
production.

The topic prefix (one rule): a deployment, a test world or a bench run may prefix every
topic name and consumer group with REGSOSEK_TOPIC_PREFIX, so that several share one
broker without mixing. The variable is read in one place, `topic_prefix()`; everything
else goes through it: `Topic.wire`, `wire_name()`, `consumer_group()`, `create_topics()`,
`ServiceSettings.topic_prefix` and `.consumer_group`, the AsyncAPI document and the
dead-letter command. Tools that set up a world of their own pass their prefix explicitly
(`wire_name(name, prefix)`, `consumer_group(service, prefix)`) and hand it to the services'
processes in REGSOSEK_TOPIC_PREFIX.

CLI:
  python -m regsosek.topics create --bootstrap HOST:PORT [--profile local]   (TLS/SASL: REGSOSEK_KAFKA_*)
  python -m regsosek.topics render-strimzi [--profile production] [--namespace NS]
  python -m regsosek.topics names
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib.resources import files

import yaml

from regsosek.kafka_security import KafkaClientSettings, client_options

REGISTRY_FILE = files("regsosek").joinpath("topics.yaml")
PREFIX_VARIABLE = "REGSOSEK_TOPIC_PREFIX"


def topic_prefix() -> str:
    """This process's topic prefix: REGSOSEK_TOPIC_PREFIX, "" when unset. The only reader of
    the variable (read on each call: a test may set it for one case)."""
    return os.environ.get(PREFIX_VARIABLE, "")


def wire_name(name: str, prefix: str | None = None) -> str:
    """A topic's name on the broker: the prefix (this process's unless given) + the registry name."""
    return (topic_prefix() if prefix is None else prefix) + name


def consumer_group(service: str, prefix: str | None = None) -> str:
    """The consumer group a service joins: the prefix (this process's unless given) + regsosek-<service>."""
    return f"{topic_prefix() if prefix is None else prefix}regsosek-{service}"


class Topic(StrEnum):
    SLS_ROSTER = "sls-roster"
    INTERVIEW_SUBMITTED = "interview-submitted"
    VERIFICATION_RESOLVED = "verification-resolved"
    FKP_ADJUSTMENT = "fkp-adjustment"
    INTERVIEW_VERIFIED = "interview-verified"
    INTERVIEW_FLAGGED = "interview-flagged"
    FAMILY_CLASSIFIED = "family-classified"
    ELIGIBILITY_DECIDED = "eligibility-decided"
    SLS_COMPLETED = "sls-completed"
    ELIGIBILITY_DELIVERED = "eligibility-delivered"
    FAMILY_ERASED = "family-erased"
    MEMBER_IDENTITIES = "member-identities"
    DEAD_LETTER = "dead-letter"
    FAMILY_UPDATE = "family-update"
    UPDATE_HELD = "update-held"
    FKP_FORUM = "fkp-forum"
    FKP_DECISION = "fkp-decision"
    FKP_GROUND_CHECK = "fkp-ground-check"

    @property
    def wire(self) -> str:
        """The topic's name on the broker: `topic_prefix()` + name (see the module docstring)."""
        return wire_name(self.value)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    description: str = ""
    key: str = ""
    contract: str | None = None  # class name in regsosek.contracts; None for the dead-letter topic
    producers: tuple[str, ...] = ()  # services that publish to the topic
    consumers: tuple[str, ...] = ()  # services whose consumer group reads it


@cache
def _registry() -> dict:
    return yaml.safe_load(REGISTRY_FILE.read_text())


DAY_MS = 24 * 3600 * 1000


def retention_ms(topic: dict, profile: str) -> str:
    """A topic's retention.ms in a profile, from its `retention_days` (days; -1 keeps forever)."""
    profile = _registry()["profiles"][profile].get("retention_days_from", profile)
    days = int(topic["retention_days"][profile])
    return "-1" if days < 0 else str(days * DAY_MS)


def specs(profile: str = "local") -> list[TopicSpec]:
    reg = _registry()
    prof = reg["profiles"][profile]
    out = []
    for t in reg["topics"]:
        config = {**reg["defaults"]["config"], **prof.get("config", {}), **t.get("config", {})}
        if "retention_days" in t:
            config["retention.ms"] = retention_ms(t, profile)
        out.append(
            TopicSpec(
                name=t["name"],
                partitions=int(t.get("partitions", prof["partitions"])),
                replication_factor=int(prof["replication_factor"]),
                config={k: str(v) for k, v in config.items()},
                description=t.get("description", ""),
                key=t.get("key", ""),
                contract=t.get("contract"),
                producers=tuple(t.get("producers") or ()),
                consumers=tuple(t.get("consumers") or ()),
            )
        )
    return out


def consumed_by(service: str) -> list[str]:
    """Topics whose consumers include `service`, in registry order."""
    return [s.name for s in specs() if service in s.consumers]


# Kafka deletes a whole log segment once its newest record is older than retention.ms, and a
# segment is closed after segment.ms (broker default 7 days): a record can outlive retention.ms
# by up to that much.
DEFAULT_SEGMENT_MS = 7 * DAY_MS


def redelivery_window_ms(service: str, profile: str) -> int | None:
    """How long after it was written a record of a topic `service` consumes may still be read
    again (a consumer-group reset, or expired group offsets re-reading from the earliest): the
    longest retention.ms plus segment.ms among those topics, in `profile`. -1 when one of them
    keeps records forever; None when the service consumes nothing."""
    values = []
    for s in specs(profile):
        if service in s.consumers:
            retention = int(s.config.get("retention.ms", "-1"))
            if retention < 0:
                return -1
            values.append(retention + int(s.config.get("segment.ms", DEFAULT_SEGMENT_MS)))
    return max(values) if values else None


def produced_by(service: str) -> list[str]:
    """Topics whose producers include `service`, in registry order."""
    return [s.name for s in specs() if service in s.producers]


async def create_topics(bootstrap: str, profile: str | None = None, prefix: str | None = None,
                        security: KafkaClientSettings | None = None) -> list[str]:
    """Create missing topics; existing ones are left as they are. Returns created names.
    The profile defaults to REGSOSEK_TOPIC_PROFILE (`local`; `cluster` on the local three-broker
    cluster, which scripts/stack.sh exports). `prefix`: this process's `topic_prefix()` unless given.
    TLS and SASL from `security`, else from the environment (regsosek.kafka_security)."""
    profile = profile or os.environ.get("REGSOSEK_TOPIC_PROFILE") or "local"
    prefix = topic_prefix() if prefix is None else prefix
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options(security))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [s for s in specs(profile) if prefix + s.name not in existing]
        if wanted:
            await admin.create_topics(
                [
                    NewTopic(
                        name=prefix + s.name,
                        num_partitions=s.partitions,
                        replication_factor=s.replication_factor,
                        topic_configs=s.config,
                    )
                    for s in wanted
                ]
            )
        return [prefix + s.name for s in wanted]
    finally:
        await admin.close()


def render_strimzi(profile: str = "production", namespace: str = "regsosek", cluster: str = "regsosek") -> str:
    docs = []
    for s in specs(profile):
        docs.append(
            {
                "apiVersion": "kafka.strimzi.io/v1beta2",
                "kind": "KafkaTopic",
                "metadata": {
                    "name": s.name,
                    "namespace": namespace,
                    "labels": {"strimzi.io/cluster": cluster},
                },
                "spec": {"partitions": s.partitions, "replicas": s.replication_factor, "config": s.config},
            }
        )
    header = ("# Generated by `python -m regsosek.topics render-strimzi` from "
              "libs/regsosek/src/regsosek/topics.yaml. Do not edit.\n")
    return header + yaml.safe_dump_all(docs, sort_keys=True)


async def warm_group_coordinator(bootstrap: str, timeout_s: float = 120.0,
                                 security: KafkaClientSettings | None = None) -> float:
    """Waits until the brokers can coordinate consumer groups; returns the seconds it took. A fresh
    cluster creates its offsets topic on the first group look-up; consumers that race that creation
    (several services starting at once) were seen to wait minutes before they could join, so a fresh
    stack does it once, before any service starts."""
    import time

    from aiokafka.admin import AIOKafkaAdminClient

    started = time.monotonic()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options(security))
    await admin.start()
    try:
        while True:
            try:
                await admin.find_coordinator("regsosek-coordinator-check")
                return time.monotonic() - started
            except Exception:  # noqa: BLE001 - not coordinating yet (the offsets topic is being created)
                if time.monotonic() - started > timeout_s:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regsosek.topics")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--profile", default=None, help="topic profile (default REGSOSEK_TOPIC_PROFILE, else local)")
    r = sub.add_parser("render-strimzi")
    r.add_argument("--profile", default="production")
    r.add_argument("--namespace", default="regsosek")
    sub.add_parser("names")
    a = p.parse_args(argv)
    if a.cmd == "create":
        created = asyncio.run(create_topics(a.bootstrap, a.profile))
        print(f"topics created: {', '.join(created) if created else 'none (all exist)'}")
        waited = asyncio.run(warm_group_coordinator(a.bootstrap))
        print(f"consumer groups can be coordinated (after {waited:.1f} s)")
    elif a.cmd == "render-strimzi":
        sys.stdout.write(render_strimzi(a.profile, a.namespace))
    else:
        print("\n".join(s.name for s in specs()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
