-- DCI Social Registry API (README "DCI Social Registry API", issue 14).
--
-- The read model programmes query through /dci/registry/(sync/)search: the newest eligibility
-- decision of each family (by classify's decision sequence, as family_decisions), built from the
-- eligibility-decided events notify consumes. No member identifiers: no event carries them.
create table registry_families (
    family_id     text primary key,
    sls_id        text not null,
    welfare_group smallint not null,
    decile        smallint not null,
    decision_seq  bigint not null,
    event_id      text not null,
    decided_at    timestamptz not null,
    eligible      text[] not null default '{}',  -- programmes the family is eligible for
    decision      jsonb not null,                -- the whole decision; narrowed per requester (payload_for)
    updated_at    timestamptz not null default now()
);
create index registry_families_sls on registry_families (sls_id text_pattern_ops);

-- DCI transactions (search, subscribe, unsubscribe) for txn/status: ids and outcome only, never
-- the records found (those went to the requester's callback and are not kept here).
create table dci_transactions (
    correlation_id  text primary key,
    requester       text not null,               -- the token subject that made it
    kind            text not null check (kind in ('search', 'subscribe', 'unsubscribe')),
    transaction_id  text not null,
    reference_ids   text[] not null default '{}',
    status          text not null check (status in ('rcvd', 'pdng', 'succ', 'rjct')),
    detail          jsonb not null default '{}', -- per reference id: status, reason code, counts
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index dci_transactions_txn on dci_transactions (requester, transaction_id);

-- How a subscription's deliveries are shaped: webhook (README "Programme integration") or dci
-- (signed /registry/notify envelopes of the DCI standard). Both go through the same queue,
-- retries, ordering, suspension and dead letters.
alter table subscriptions add column format text not null default 'webhook' check (format in ('webhook', 'dci'));
alter table subscriptions add column dci_sender text;
