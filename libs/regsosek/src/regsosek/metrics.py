"""Prometheus metrics shared by every service (labelled by service)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter("regsosek_events_consumed_total", "Kafka records consumed", ["service"])
EVENTS_DEAD_LETTERED = Counter("regsosek_events_dead_lettered_total", "Records sent to the dead-letter topic", ["service"])
EVENTS_PUBLISHED = Counter("regsosek_events_published_total", "Outbox records published to Kafka", ["service"])
BATCH_SECONDS = Histogram("regsosek_batch_seconds", "Time to apply one consumed batch", ["service"])
# One observation per consumer-group rebalance this instance went through: from giving up its
# partitions to getting the new ones (a new instance: its whole join).
REBALANCE_SECONDS = Histogram("regsosek_consumer_rebalance_seconds",
                              "Time an instance held no partitions during a consumer-group rebalance", ["service"],
                              buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300))

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

# Retention (regsosek.retention): rows pruned or emptied of personal data, per rule.
RETENTION_PRUNED = Counter(
    "regsosek_retention_pruned_rows_total", "Rows deleted or expired by a retention rule", ["service", "rule"])
RETENTION_LAST_RUN = Gauge(
    "regsosek_retention_last_run_timestamp_seconds", "When the retention task last completed a pass", ["service"])

# HTTP API (regsosek.service.HttpMetrics): by route template (`/v1/submissions/{submission_id}`,
# never the raw path), method and status code; requests no route matched count as route="unmatched".
HTTP_REQUESTS = Counter(
    "regsosek_http_requests_total", "HTTP requests answered, by route template and status code",
    ["service", "method", "route", "status"])
HTTP_REQUEST_SECONDS = Histogram(
    "regsosek_http_request_duration_seconds", "Time to answer an HTTP request, by route template",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))

# Probes (regsosek.health).
PROBE_OK = Gauge("regsosek_probe_ok", "1 while a readiness probe (database, broker, schema) passes", ["service", "check"])
EVENT_LOOP_LAG = Gauge(
    "regsosek_event_loop_lag_seconds",
    "How late the event loop's heartbeat is, measured from a watchdog thread (0 when the loop keeps up)", ["service"])
EVENT_LOOP_STALLS = Counter(
    "regsosek_event_loop_stalls_total",
    "Times the event loop did not come round for REGSOSEK_LOOP_LAG_LOG_S (each logged with the loop's stack)",
    ["service"])
