-- The newest eligibility decision queued for each family, by classify's decision sequence
-- (docs/ORDERING.md): a decision older than one already queued (a re-published old event, a
-- replayed range of the topic) is not queued again, so subscribers never get it after the newer
-- one. Decisions without a sequence (0, from before sequences existed) are queued as they come.
create table family_decisions (
    family_id     text primary key,
    decision_seq  bigint not null,
    event_id      text not null,
    updated_at    timestamptz not null default now()
);
