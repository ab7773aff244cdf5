"""Consumer lag and Prometheus counters, from offsets and /metrics text."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from regsosek.kafka_security import client_options


def parse_counter(text: str, name: str) -> float:
    """Sum of a Prometheus counter over all its label sets, from /metrics text."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)", text, re.MULTILINE):
        with contextlib.suppress(ValueError):
            total += float(m.group(1))
    return total


def group_lag(committed: dict, ends: dict) -> int:
    """Records behind for a group: end offset minus committed offset per partition; a
    partition without a committed offset counts from 0 (groups start from the earliest)."""
    return sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())


class Offsets:
    """Where consumer groups of a world stand: end offsets of topics, committed offsets of groups,
    lag per group and group membership; one admin client and one group-less consumer, started by
    `start` and closed by `close`."""

    def __init__(self, bootstrap: str, partitions: dict[str, int]) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions  # topic -> partitions, for the end offsets
        self.admin: Any = None
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000, **client_options())
        await self.admin.start()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, **client_options(),
                                          enable_auto_commit=False, request_timeout_ms=10_000)
        await self._consumer.start()

    async def close(self) -> None:
        for closer in (self._consumer, self.admin):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closer.stop() if hasattr(closer, "stop") else closer.close(), 10)

    async def ends(self, topics: Iterable[str]) -> dict:
        from aiokafka import TopicPartition

        tps = [TopicPartition(t, p) for t in topics for p in range(self.partitions.get(t, 1))]
        return await asyncio.wait_for(self._consumer.end_offsets(tps), 10) if tps else {}

    async def committed(self, group: str) -> dict:
        offsets = await asyncio.wait_for(self.admin.list_consumer_group_offsets(group), 10)
        return {tp: om.offset for tp, om in offsets.items() if om is not None and om.offset >= 0}

    async def lags(self, groups: Mapping[str, tuple[str, Iterable[str]]]) -> dict[str, int]:
        """Records behind per name, for {name: (group, topics it reads)}; topics a group turns out
        to have committed offsets for count too."""
        committed = {name: await self.committed(group) for name, (group, _) in groups.items()}
        topics = {name: set(read) | {tp.topic for tp in committed[name]} for name, (_, read) in groups.items()}
        ends = await self.ends(set().union(*topics.values()))
        return {name: group_lag(committed[name], {tp: e for tp, e in ends.items() if tp.topic in topics[name]})
                for name in groups}

    async def members(self, group: str) -> tuple[str, int]:
        """(state, number of members) of a consumer group."""
        (resp,) = await asyncio.wait_for(self.admin.describe_consumer_groups([group]), 10)
        g = resp.to_object()["groups"][0]
        return g["state"], len(g["members"])

    async def wait_members(self, counts: Mapping[str, int], timeout: float = 90.0) -> bool:
        """Until every group in `counts` is Stable with that many members (False on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = {g: await self.members(g) for g in counts}
                if all(st == "Stable" and n == counts[g] for g, (st, n) in states.items()):
                    return True
            except Exception:  # noqa: BLE001 - the coordinator may be busy rebalancing
                pass
            await asyncio.sleep(0.5)
        return False
