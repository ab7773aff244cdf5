"""Inbox, outbox, relay and consumer: the event backbone every service uses."""

from regsosek.messaging.consumer import EventConsumer, Handler, Incoming, PermanentError, UnitOfWork, reads
from regsosek.messaging.outbox import Outbox, OutgoingRecord, RelayWakeup
from regsosek.messaging.relay import OutboxRelay, make_producer

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
