"""Prometheus metrics shared by every service (labelled by service)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter("regsosek_events_consumed_total", "Kafka records consumed", ["service"])
EVENTS_DEAD_LETTERED = Counter("regsosek_events_dead_lettered_total", "Records sent to the dead-letter topic", ["service"])
EVENTS_PUBLISHED = Counter("regsosek_events_published_total", "Outbox records published to Kafka", ["service"])
OUTBOX_BACKLOG = Gauge("regsosek_outbox_backlog", "Outbox rows seen waiting at the relay's last poll", ["service"])
BATCH_SECONDS = Histogram("regsosek_batch_seconds", "Time to apply one consumed batch", ["service"])
