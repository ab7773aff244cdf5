-- Updates that count (family-update) about a family verify has not verified yet: not registered yet
-- (its interview still on its way), held for its SLS roster, or flagged until a supervisor resolves it.
-- Kept here, pseudonymised as received (NIK and KK as keyed hashes, no names), and applied once the
-- family is verified (verify.updates, VerifyHandlers.release_updates); after REGSOSEK_UPDATE_HOLD_TIMEOUT_S
-- an update still waiting gets an update_not_applicable flag. Erasure deletes the family's rows.
create table held_updates (
    submission_id uuid primary key,
    family_id text not null,
    sls_id text not null,
    body jsonb not null,
    why text not null,
    held_since timestamptz not null default now()
);
create index held_updates_family on held_updates (family_id, held_since);
create index held_updates_since on held_updates (held_since);
