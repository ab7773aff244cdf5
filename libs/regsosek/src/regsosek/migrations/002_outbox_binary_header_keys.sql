-- Outbox header keys as bytes (bytea[]), not text[]: a dead letter keeps the header
-- keys of whatever record it carries, and a key may hold a NUL byte (PostgreSQL text
-- cannot) or bytes that are not UTF-8. The relay turns them back into Kafka header
-- keys (messaging/outbox.py: `kafka_header_key`). A subquery cannot appear in
-- ALTER ... USING, hence the copy through a new column; existing keys are UTF-8 text.
alter table outbox add column header_keys_bin bytea[];
update outbox set header_keys_bin = (
    select coalesce(array_agg(convert_to(k, 'UTF8') order by i), '{}'::bytea[])
    from unnest(header_keys) with ordinality as u(k, i)
);
alter table outbox drop column header_keys;
alter table outbox rename column header_keys_bin to header_keys;
alter table outbox alter column header_keys set not null;
