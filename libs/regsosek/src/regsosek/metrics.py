"""Prometheus metrics shared by every service (labelled by service)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter("regsosek_events_consumed_total", "Kafka records consumed", ["service"])
EVENTS_DEAD_LETTERED = Counter("regsosek_events_dead_lettered_total", "Records sent to the dead-letter topic", ["service"])
EVENTS_PUBLISHED = Counter("regsosek_events_published_total", "Outbox records published to Kafka", ["service"])
BATCH_SECONDS = Histogram("regsosek_batch_seconds", "Time to apply one consumed batch", ["service"])

# The outbox and its relay. Every instance counts the outbox (it is shared through the
# database), so these read the same on every instance whether or not it is the relay.
OUTBOX_BACKLOG = Gauge(
    "regsosek_outbox_backlog",
    "Rows waiting in the service's outbox (exact up to 100000, the planner's estimate beyond), counted by every instance",
    ["service"])
OUTBOX_REJECTED = Counter(
    "regsosek_outbox_rejected_total",
    "Outbox rows the broker refused for good, moved by this instance's relay to outbox_rejected",
    ["service", "error"])
OUTBOX_REJECTED_ROWS = Gauge(
    "regsosek_outbox_rejected_rows", "Rows in outbox_rejected, waiting for an operator", ["service"])
RELAY_LAST_PROGRESS = Gauge(
    "regsosek_relay_last_progress_timestamp_seconds",
    "When this instance's relay last removed rows from the outbox (published or set aside)", ["service"])
RELAY_STALL_SECONDS = Gauge(
    "regsosek_relay_stall_seconds",
    "How long the oldest outbox row has been waiting without the outbox moving (0 while empty or draining)",
    ["service"])
RELAY_STALLED = Gauge(
    "regsosek_relay_stalled",
    "1 while the outbox has rows and has not moved for REGSOSEK_RELAY_STALL_S (readiness then fails)", ["service"])
RELAY_LEADER = Gauge("regsosek_relay_leader", "1 on the instance holding the relay lock", ["service"])
RELAY_PRODUCER_REBUILDS = Counter(
    "regsosek_relay_producer_rebuilds_total",
    "Kafka producers the relay replaced after an error left the old one unusable", ["service", "error"])
