-- Erasure (family-erased, issue 11 item 8): notify empties the payload of every delivery of the
-- family (delivered or not; status 'erased' for those not yet sent, so nothing of it is sent any
-- more) and keeps the rows (ids, status, attempts, times: the delivery figures). It remembers the
-- family as erased (ids and a reason code) and queues no later decision about it.
create table erased_families (
    family_id   text primary key,
    sls_id      text not null,
    erasure_id  uuid not null,
    reason      text not null,
    erased_at   timestamptz not null,
    applied_at  timestamptz not null default now()
);
create index deliveries_family on deliveries (family_id);
