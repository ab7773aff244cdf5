"""Instances joining and leaving a consumer group on the real broker, configured as every service's
consumer is (`EventConsumer.attach`: range alone, the group timeouts of ServiceSettings).

A join is one generation of the group: with a second assignor offered, aiokafka 0.14 joined twice per
rebalance (two generations, the second join starting another rebalance), and new instances of the
scale-out run waited up to two minutes to be assigned partitions (docs/ORDERING.md, "Why range
alone"). Generations are read from aiokafka's own log of each join ("Joined group ... (generation N)").
"""

from __future__ import annotations

import logging
import re

import pytest
from faststream.kafka import KafkaBroker

from regsosek.messaging.consumer import EventConsumer
from regsosek.messaging.outbox import RelayWakeup
from regsosek.settings import ServiceSettings
from regsosek.topics import Topic

from itkit import BOOTSTRAP, World, eventually

pytestmark = pytest.mark.integration

TOPICS = [Topic.SLS_ROSTER, Topic.INTERVIEW_SUBMITTED, Topic.VERIFICATION_RESOLVED]
_JOINED = re.compile(r"Joined group '(?P<group>[^']+)' \(generation (?P<generation>\d+)\)")


class _Joins(logging.Handler):
    """The generations aiokafka reports joining, in order."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.generations: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if m := _JOINED.search(record.getMessage()):
            self.generations.append(int(m["generation"]))


@pytest.fixture
async def world(stack, monkeypatch):
    w = await World(["verify"]).setup()
    monkeypatch.setenv("REGSOSEK_TOPIC_PREFIX", w.prefix)  # the consumer's topics and group: this world's
    try:
        yield w
    finally:
        await w.teardown()


@pytest.fixture
def joins():
    handler, logger = _Joins(), logging.getLogger("aiokafka.consumer.group_coordinator")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _instance() -> KafkaBroker:
    settings = ServiceSettings(service_name="verify", kafka_bootstrap=BOOTSTRAP)
    broker = KafkaBroker(settings.kafka_bootstrap_servers, security=settings.kafka_faststream_security())
    EventConsumer(settings, lambda: None, {}, TOPICS, RelayWakeup()).attach(broker)
    return broker


def _assigned(broker: KafkaBroker) -> dict[str, set[int]]:
    (subscriber,) = broker.subscribers
    out: dict[str, set[int]] = {}
    for tp in subscriber.consumer.assignment():
        out.setdefault(tp.topic, set()).add(tp.partition)
    return out


async def test_an_instance_joins_and_leaves_in_one_generation_each(world, joins) -> None:
    first, second = _instance(), _instance()
    try:
        await first.start()  # returns once the group has assigned it partitions
        (g1,) = joins.generations
        alone = _assigned(first)
        await second.start()
        # the second instance's join: one generation, which both instances joined
        assert joins.generations[1:] == [g1 + 1, g1 + 1], joins.generations
        # range: each instance holds the same partition numbers of every topic, none held twice. The
        # second's start returns once it is assigned; the first learns its share in its own SyncGroup
        # of that same generation, a moment later: wait for it (no further join may happen meanwhile)
        await eventually(lambda: _assigned(first) != alone, timeout=30,
                         interval=0.1, what="the first instance given its share of the new generation")
        assert joins.generations[1:] == [g1 + 1, g1 + 1], joins.generations
        a, b = _assigned(first), _assigned(second)
        assert len({frozenset(p) for p in a.values()}) == 1 and len({frozenset(p) for p in b.values()}) == 1, (a, b)
        assert set(a) == set(b) == {t.wire for t in TOPICS}
        assert not (next(iter(a.values())) & next(iter(b.values())))
        await second.stop()  # leaves the group: the first takes everything back in one more generation
        seen = len(joins.generations)

        def all_partitions_back() -> bool:
            held = _assigned(first)
            return len(joins.generations) > seen and len(held) == len(TOPICS) and all(
                held[t] == a[t] | b[t] for t in held)

        await eventually(all_partitions_back, timeout=60, interval=0.1,
                         what="the first instance holding every partition again")
        assert joins.generations[seen:] == [g1 + 2], joins.generations
    finally:
        await second.stop()
        await first.stop()

