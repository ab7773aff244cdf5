-- Messaging tables every service has (docs/ARCHITECTURE.md reliability rules 1-3).

-- Inbox: ids of events already applied. Written in the same transaction as the
-- effects, so a redelivered event changes nothing.
create table inbox (
    event_id    text primary key,
    topic       text not null,
    received_at timestamptz not null default now()
);
create index inbox_received_at on inbox (received_at);

-- Outbox: events to publish, written in the same transaction as the effects and
-- published by the relay in id order (which keeps per-key order).
create table outbox (
    id            bigserial primary key,
    topic         text not null,
    key           bytea,
    value         bytea,
    header_keys   text[] not null,
    header_values bytea[] not null,
    created_at    timestamptz not null default now()
);
