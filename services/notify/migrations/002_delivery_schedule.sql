-- The retry schedule belongs to the subscription (its queue waits behind its oldest
-- event), and a lease marks which notify instance is delivering it, so no database
-- connection is held while a subscriber's endpoint is being called.
alter table subscriptions
    add column next_attempt_at       timestamptz not null default now(),
    add column lease_owner           uuid,
    add column lease_until           timestamptz,
    add column delivered_total       bigint not null default 0,
    add column attempts_total        bigint not null default 0,
    add column failed_attempts_total bigint not null default 0,
    add column last_attempt_at       timestamptz;

alter table deliveries drop column next_attempt_at;

-- delivered | retry | refused (the subscriber answered 4xx: its events became dead letters)
alter table delivery_attempts add column outcome text;

create index deliveries_dead on deliveries (subscription_id, id) where status = 'dead';
