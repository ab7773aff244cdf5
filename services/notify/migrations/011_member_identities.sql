-- The identity feed (member-identities, issue 11 item 1): the members' NIKs of each interview,
-- as intake sealed them (AES-256-GCM under the identity feed's keys, bound to family and
-- submission). Opened only at delivery, to put `nik` into the member-level decisions of a
-- programme granted member_identifiers; never copied into a delivery's stored payload.
-- Deleted with the family on erasure; re-sealed under a new key by python -m notify.rotate_identity_keys.
create table member_identities (
    family_id     text not null,
    submission_id uuid not null,
    sealed        bytea not null,
    kid           text not null,
    members       int not null,
    received_at   timestamptz not null default now(),
    primary key (family_id, submission_id)
);
create index member_identities_kid on member_identities (kid);
