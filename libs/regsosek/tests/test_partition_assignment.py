"""The partition assignment of every service's consumer group (docs/ORDERING.md, "Instances and
partition assignment"): partition N of every topic a service reads lands on one instance, so an
SLS's events on different topics meet in one instance, for 1 to 4 instances and the registry's
partition counts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaConnectionError, MemberIdRequired
from aiokafka.protocol.group import JoinGroupRequest, JoinGroupRequest_v5
from faststream.kafka import KafkaBroker

from regsosek.messaging.consumer import PARTITION_ASSIGNMENT, EventConsumer
from regsosek.messaging.outbox import RelayWakeup
from regsosek.settings import ServiceSettings
from regsosek.topics import Topic, specs

PROFILES = ("local", "cluster", "production")
CONSUMERS = sorted({c for s in specs("local") for c in s.consumers})


class Cluster:
    """What an assignor reads of the cluster's metadata: the partitions of each topic."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions[topic]))


def assign(assignor, topics: dict[str, int], members: int) -> dict[str, dict[str, list[int]]]:
    """member -> topic -> partitions, as the group's leader computes it (member ids in a random-looking
    order, as the coordinator hands them out)."""
    ids = [f"regsosek-{i}-{'fedcba'[i]}{i * 7919 % 97:02d}" for i in range(members)]
    meta = {m: assignor.metadata(list(topics)) for m in reversed(ids)}
    out = assignor.assign(Cluster(topics), meta)
    return {m: {topic: list(parts) for topic, parts in out[m].assignment} for m in ids}


def owners(assignment: dict[str, dict[str, list[int]]]) -> dict[tuple[str, int], list[str]]:
    got: dict[tuple[str, int], list[str]] = {}
    for member, by_topic in assignment.items():
        for topic, parts in by_topic.items():
            for p in parts:
                got.setdefault((topic, p), []).append(member)
    return got


def service_topics(service: str, profile: str) -> dict[str, int]:
    return {s.name: s.partitions for s in specs(profile) if service in s.consumers}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("service", CONSUMERS)
def test_a_service_reads_co_partitioned_topics(service: str, profile: str) -> None:
    # The precondition of co-location: every topic a service reads has the same partition count.
    topics = service_topics(service, profile)
    assert topics, f"{service} reads no topic"
    assert len(set(topics.values())) == 1, f"{service}'s topics differ in partitions in {profile}: {topics}"


@pytest.mark.parametrize("members", [1, 2, 3, 4])
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("service", CONSUMERS)
def test_partition_n_of_every_topic_goes_to_one_instance(service: str, profile: str, members: int) -> None:
    topics = service_topics(service, profile)
    assignment = assign(PARTITION_ASSIGNMENT[0], topics, members)
    by_partition = owners(assignment)
    partitions = next(iter(topics.values()))
    # every partition of every topic is assigned exactly once
    assert sorted(by_partition) == sorted((t, p) for t in topics for p in range(partitions))
    assert all(len(m) == 1 for m in by_partition.values())
    # ... and partition N of all topics to the same instance
    for p in range(partitions):
        assert len({by_partition[(t, p)][0] for t in topics}) == 1, f"partition {p} of {service}'s topics split"
    # spread evenly: instances differ by at most one partition number
    counts = [len(next(iter(by_topic.values()), [])) for by_topic in assignment.values()]
    assert max(counts) - min(counts) <= 1
    assert sum(counts) == partitions


def test_round_robin_would_split_an_sls_between_instances() -> None:
    # Why the default is not kept: with verify's three topics (6 partitions each) over four instances,
    # round robin deals the 18 partitions out in turn, so partition N of sls-roster and of
    # interview-submitted go to different instances.
    topics = service_topics("verify", "local")
    by_partition = owners(assign(RoundRobinPartitionAssignor, topics, 4))
    split = [p for p in range(6) if len({by_partition[(t, p)][0] for t in topics}) > 1]
    assert split, "round robin kept every partition number together"


def test_range_is_the_only_strategy_offered() -> None:
    # One assignor: aiokafka joins once per assignor offered (next test), and every extra join of a
    # member with another protocol list starts another rebalance of the whole group.
    assert [a.name for a in PARTITION_ASSIGNMENT] == ["range"]


class _Subscription:
    topics = {"t"}
    active = True


class _Coordinator:
    """What aiokafka's join reads of its group coordinator; counts the JoinGroup requests it sends."""

    def __init__(self) -> None:
        self.member_id, self.generation, self._group_instance_id = "", -1, None
        self._rebalance_timeout_ms = 30_000
        self.joins: list[list[str]] = []

    async def _send_req(self, request):
        if isinstance(request, JoinGroupRequest):
            wire = request.build(JoinGroupRequest_v5)  # the request as the broker reads it
            self.joins.append([name for name, _ in wire.group_protocols])
            # first a member id (KIP-394), then a generation in which another member leads
            if not self.member_id:
                return SimpleNamespace(error_code=MemberIdRequired.errno, member_id="m-1")
            return SimpleNamespace(error_code=0, member_id="m-1", generation_id=1, group_protocol="range",
                                   leader_id="m-0")
        raise KafkaConnectionError("no SyncGroup in this test")

    def request_rejoin(self) -> None:
        pass


@pytest.mark.parametrize(("assignors", "joins"), [
    (PARTITION_ASSIGNMENT, [["range"], ["range"]]),
    # what round robin offered second did: one join per assignor, the first with range alone
    ((RangePartitionAssignor, RoundRobinPartitionAssignor), [["range"], ["range"], ["range", "roundrobin"]]),
])
async def test_aiokafka_joins_once_per_assignor_offered(assignors, joins) -> None:
    # aiokafka's own join (CoordinatorGroupRebalance.perform_group_join), against a coordinator that asks
    # for a member id first. If an upgrade makes the second case send one join with both protocols, a
    # second strategy (for rolling deploys from another one) can be offered again: docs/ORDERING.md.
    coordinator = _Coordinator()
    rebalance = CoordinatorGroupRebalance(coordinator, "g", 0, _Subscription(), [a() for a in assignors],
                                          10_000, 100)
    await rebalance.perform_group_join()
    assert coordinator.joins == joins


def test_the_subscriber_is_given_the_assignment() -> None:
    broker = KafkaBroker("127.0.0.1:1")
    consumer = EventConsumer(ServiceSettings(service_name="verify"), lambda: None, {},
                             [Topic.SLS_ROSTER, Topic.INTERVIEW_SUBMITTED], RelayWakeup())
    consumer.attach(broker)
    (subscriber,) = broker.subscribers
    # FastStream keeps the aiokafka consumer's arguments on the subscriber until it starts it.
    assert subscriber._connection_args["partition_assignment_strategy"] == PARTITION_ASSIGNMENT


def test_the_subscriber_is_given_the_group_timeouts() -> None:
    s = ServiceSettings(service_name="verify")
    broker = KafkaBroker("127.0.0.1:1")
    EventConsumer(s, lambda: None, {}, [Topic.SLS_ROSTER], RelayWakeup()).attach(broker)
    (subscriber,) = broker.subscribers
    args = subscriber._connection_args
    assert (args["session_timeout_ms"], args["heartbeat_interval_ms"], args["rebalance_timeout_ms"],
            args["max_poll_interval_ms"]) == (s.consumer_session_timeout_ms, s.consumer_heartbeat_interval_ms,
                                              s.consumer_rebalance_timeout_ms, s.consumer_max_poll_interval_ms)
    # members notice a rebalance within a third of the session, and the broker holds a join no longer
    # than the client waits for the answer (40 s)
    assert s.consumer_heartbeat_interval_ms * 3 <= s.consumer_session_timeout_ms
    assert s.consumer_rebalance_timeout_ms < 40_000
