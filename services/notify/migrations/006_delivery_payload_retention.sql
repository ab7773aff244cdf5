-- Retention (docs/RETENTION.md): a delivered event's payload (a family's eligibility decision)
-- is emptied REGSOSEK_DELIVERY_PAYLOAD_RETENTION_DAYS after delivery; the delivery row (ids,
-- status, attempts, times) and the delivery log stay, so the figures do not change.
alter table deliveries alter column payload drop not null;
alter table deliveries add column payload_expired_at timestamptz;
create index deliveries_payload_expiry on deliveries (delivered_at)
    where status = 'delivered' and payload is not null;
