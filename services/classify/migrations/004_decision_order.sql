-- Per family, what orders the decisions (docs/ORDERING.md), kept even for a family never
-- classified or withdrawn (its `families` row is gone):
--  * the newest of verify's decisions applied (its decision sequence; for events from before
--    sequences, 0, ordered by interview version and then by when verify decided): a verified or
--    flagged event is applied only when it is newer, so a flag that arrives before the
--    verification it withdraws still makes that verification stale;
--  * classify's own decision sequence: every family-classified + eligibility-decided pair it
--    publishes for the family (classification, FKP, re-rank, replay, withdrawal) takes the next.
create table family_order (
    family_id       text primary key,
    verify_seq      bigint not null default 0,
    verify_version  int not null default 0,
    verify_at       timestamptz not null default '-infinity',
    verified        boolean,                 -- what that decision was: verified, or flagged (null: none seen)
    decision_seq    bigint not null default 0
);

-- What was applied before this migration, without sequences: a withdrawal stands as a flag of its
-- version at its time; a classified family as a verification of its version older than any flag
-- or verification of that version still to come (as the previous rules treated them).
insert into family_order (family_id, verify_version, verify_at, verified)
select family_id, version, flagged_at, false from withdrawals
on conflict do nothing;
insert into family_order (family_id, verify_version, verified)
select family_id, version, true from families
on conflict (family_id) do update set verify_version = excluded.verify_version, verify_at = '-infinity',
    verified = true
where family_order.verify_version < excluded.verify_version;
