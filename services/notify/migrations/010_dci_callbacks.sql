-- DCI callbacks (on-search, on-subscribe, on-unsubscribe, txn/on-status) kept until the requester
-- acknowledges them (docs/DCI.md): written in the request's transaction, delivered by notify's
-- background loop (notify.dci.DciCallbackWorker) with backoff, so a restart loses none. One instance
-- at a time sends a given callback (lease_until). The message, which may hold search results, is
-- emptied once the callback is acknowledged or given up.
create table dci_callbacks (
    id              bigserial primary key,
    correlation_id  text not null,
    requester       text not null,                -- the token subject the callback answers
    url             text not null,                -- header.sender_uri + the specification's path
    action          text not null check (action in ('on-search', 'on-subscribe', 'on-unsubscribe', 'txn-on-status')),
    header          jsonb not null,               -- fixed when queued: the same message_id on every attempt
    message         jsonb,                        -- null once delivered or dead
    status          text not null default 'pending' check (status in ('pending', 'delivered', 'dead')),
    attempts        int not null default 0,
    next_attempt_at timestamptz not null default now(),
    lease_until     timestamptz,
    last_status     int,
    last_error      text,
    created_at      timestamptz not null default now(),
    finished_at     timestamptz
);
create index dci_callbacks_due on dci_callbacks (next_attempt_at) where status = 'pending';
create index dci_callbacks_requester on dci_callbacks (requester, correlation_id);
-- retention (REGSOSEK_DCI_BOOKKEEPING_RETENTION_DAYS): finished callbacks and settled transactions go
create index dci_callbacks_finished on dci_callbacks (finished_at) where status <> 'pending';
create index dci_transactions_updated on dci_transactions (updated_at) where status <> 'pdng';

-- Replay protection: each sender's message_id is taken once (within the accepted message_ts window;
-- older rows are forgotten, a message that old is refused by its timestamp anyway).
create table dci_messages (
    sender_id   text not null,
    message_id  text not null,
    received_at timestamptz not null default now(),
    primary key (sender_id, message_id)
);
create index dci_messages_received on dci_messages (received_at);
