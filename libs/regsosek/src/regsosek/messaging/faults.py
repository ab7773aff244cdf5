"""Fault injection for the crash-recovery tests on the real stack.

Off unless the environment sets it. Each point ends the process abruptly
(os._exit, as SIGKILL would) at a moment a test could not hit by timing alone.

REGSOSEK_FAULT_EXIT_AFTER_DB_COMMIT=N   consumer: after the N-th committed batch, before the offset commit
REGSOSEK_FAULT_RELAY_EXIT_AFTER_SENDS=N relay: after N records are acknowledged by Kafka, before the outbox rows are deleted
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("regsosek.faults")


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
