"""Fast unit tests of a service's handler logic without the database or the broker.

`FakeUnitOfWork` is the real `UnitOfWork` with no connection: a handler that reaches
its state only through its store (injected, e.g. an in-memory store in the test) runs
unchanged; what it publishes stays in the outbox, readable as decoded events; deferred
work runs on `commit()`, as it does just before the real commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from regsosek.contracts import Contract
from regsosek.envelope import decode, read_headers, source_of
from regsosek.messaging import Outbox, UnitOfWork


@dataclass(frozen=True)
class Published:
    topic: str
    key: str
    event: Contract
    subject: str | None


class FakeUnitOfWork(UnitOfWork):
    def __init__(self, service: str = "test") -> None:
        super().__init__(conn=None, outbox=Outbox(source_of(service)))
        self.committed = 0

    async def commit(self) -> None:
        await self.run_deferred()
        self.committed += 1

    @property
    def published(self) -> list[Published]:
        out = []
        for r in self.outbox.pending:
            env = read_headers(r.headers)
            out.append(Published(r.topic, (r.key or b"").decode(), decode(env, r.value), env.subject))
        return out

    def events(self, kind: type[Contract]) -> list[Contract]:
        return [p.event for p in self.published if isinstance(p.event, kind)]
