-- Programme subscriptions and every delivery to them.
create table subscriptions (
    id                   uuid primary key,
    owner                text not null,           -- the programme system's principal
    callback_url         text not null,
    secret               text not null,           -- HMAC key shared with the subscriber
    programmes           text[] not null default '{}',
    area_prefixes        text[] not null default '{}',
    welfare_groups       int[] not null default '{}',
    event_types          text[] not null default '{}',
    status               text not null default 'active',   -- active | paused | suspended | deleted
    consecutive_failures int not null default 0,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now()
);

create table deliveries (
    id              bigserial primary key,
    subscription_id uuid not null references subscriptions(id),
    event_id        text not null,
    event_type      text not null,
    family_id       text not null,
    payload         jsonb not null,
    traceparent     text,
    status          text not null default 'pending',      -- pending | delivered | dead
    attempts        int not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_status     int,
    last_error      text,
    created_at      timestamptz not null default now(),
    delivered_at    timestamptz,
    unique (subscription_id, event_id)
);
create index deliveries_pending on deliveries (subscription_id, id) where status = 'pending';

create table delivery_attempts (
    id              bigserial primary key,
    subscription_id uuid not null,
    message_id      text not null,
    events          int not null,
    status_code     int,
    latency_ms      double precision not null,
    error           text,
    at              timestamptz not null default now()
);
create index delivery_attempts_sub on delivery_attempts (subscription_id, id desc);
