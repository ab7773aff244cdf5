"""Inbox, outbox, relay and consumer: the event backbone every service uses.

The names below are loaded from their module on first use (PEP 562), so that importing
what only writes to the outbox (`Outbox`, `UnitOfWork`: a store, a publisher, an operator
command's worker process) does not import the Kafka client and FastStream, which only the
consumer and the relay need (about a second of start-up on a small machine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regsosek.messaging.consumer import EventConsumer, Handler, Incoming, PermanentError, reads
    from regsosek.messaging.outbox import Outbox, OutgoingRecord, RelayWakeup
    from regsosek.messaging.relay import OutboxRelay, make_producer
    from regsosek.messaging.unit_of_work import UnitOfWork

_MODULE_OF = {
    "EventConsumer": "consumer", "Handler": "consumer", "Incoming": "consumer", "PermanentError": "consumer",
    "reads": "consumer",
    "Outbox": "outbox", "OutgoingRecord": "outbox", "RelayWakeup": "outbox",
    "OutboxRelay": "relay", "make_producer": "relay",
    "UnitOfWork": "unit_of_work",
}

__all__ = [
    "EventConsumer",
    "Handler",
    "Incoming",
    "Outbox",
    "OutboxRelay",
    "OutgoingRecord",
    "PermanentError",
    "RelayWakeup",
    "UnitOfWork",
    "make_producer",
    "reads",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value
