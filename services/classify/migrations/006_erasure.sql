-- Erasure (family-erased, issue 11 item 8): classify deletes the family's row (its household
-- profile and classification), its withdrawal and its FKP decisions (free-text reasons), and keeps
-- only that the family was erased (ids and a reason code), so that a later verify event of the
-- family (retained, re-driven) does not classify it again. family_order (ids and decision
-- sequences, no personal values) stays: ordering of anything still in flight.
create table erased_families (
    family_id   text primary key,
    sls_id      text not null,
    erasure_id  uuid not null,
    reason      text not null,
    erased_at   timestamptz not null,
    applied_at  timestamptz not null default now()
);
