"""Fault injection for the crash-recovery tests on the real stack.

Off unless the environment sets it. The first two end the process abruptly
(os._exit, as SIGKILL would) at a moment a test could not hit by timing alone;
the last simulates a bug that a redeploy fixes (dead letters to re-drive).

REGSOSEK_FAULT_EXIT_AFTER_DB_COMMIT=N   consumer: after the N-th committed batch, before the offset commit
REGSOSEK_FAULT_RELAY_EXIT_AFTER_SENDS=N relay: after N records are acknowledged by Kafka, before the outbox rows are deleted
REGSOSEK_FAULT_REJECT_EVENT_TYPES=T[,T]  consumer: events of these ce_types fail as a permanent handler error (dead
                                        letters), as a bug would; a restart without it is "the fix", for re-drive tests
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("regsosek.faults")

REJECT_EVENT_TYPES = "REGSOSEK_FAULT_REJECT_EVENT_TYPES"

H = TypeVar("H", bound=Callable)


class FaultPoint:
    def __init__(self, env_var: str) -> None:
        raw = os.environ.get(env_var, "")
        self.name = env_var
        self.remaining = int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else None

    @property
    def armed(self) -> bool:
        return self.remaining is not None

    def hit(self, count: int = 1) -> bool:
        """Count `count` occurrences; True when the point fires."""
        if self.remaining is None:
            return False
        self.remaining -= count
        return self.remaining <= 0

    def crash(self) -> None:
        log.error("fault injected: exiting", extra={"fields": {"fault": self.name}})
        logging.shutdown()
        os._exit(137)


def reject_event_types(handlers: dict[str, H], error: type[Exception]) -> dict[str, H]:
    """`handlers` (by ce_type) with those named in REGSOSEK_FAULT_REJECT_EVENT_TYPES replaced
    by one raising `error`: the consumer dead-letters such events like any permanent failure."""
    rejected = {t.strip() for t in os.environ.get(REJECT_EVENT_TYPES, "").split(",") if t.strip()}
    if not rejected:
        return handlers
    log.warning("fault injected: rejecting event types", extra={"fields": {"fault": REJECT_EVENT_TYPES,
                                                                          "types": sorted(rejected)}})

    def rejecting(event_type: str) -> H:
        async def reject(uow, msg) -> None:  # noqa: ARG001
            raise error(f"fault injected: {REJECT_EVENT_TYPES} rejects {event_type}")

        return reject  # type: ignore[return-value]

    return {t: rejecting(t) if t in rejected else h for t, h in handlers.items()}
