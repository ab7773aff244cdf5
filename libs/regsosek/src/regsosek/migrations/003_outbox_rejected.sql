-- Outbox rows the broker refused for good (record too large for the topic, topic not
-- authorised, invalid topic name, ...). The relay moves such a row here in the same
-- transaction that deletes the rows published with it, so it neither blocks the rows
-- behind it nor is lost: an operator reads the reason, fixes the cause (a topic's
-- max.message.bytes, an ACL) and re-queues it with
--   insert into outbox (topic, key, value, header_keys, header_values)
--   select topic, key, value, header_keys, header_values from outbox_rejected where id = ...;
--   delete from outbox_rejected where id = ...;
--
-- `like outbox` copies the columns with outbox's types as they are when this runs (after
-- 002, which may change the header key type), without its defaults: `id` keeps the row's
-- outbox id and `created_at` when it was written.
create table outbox_rejected (like outbox including comments);
alter table outbox_rejected
    add primary key (id),
    add column error_type  text not null,
    add column reason      text not null,
    add column rejected_at timestamptz not null default now();
create index outbox_rejected_rejected_at on outbox_rejected (rejected_at);
