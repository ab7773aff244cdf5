-- What intake received is kept sealed (issue 11, item 3): AES-256-GCM under the current data key
-- (REGSOSEK_DATA_KEYS), the key id in the ciphertext and in body_kid (key rotation finds rows by it).
-- Rows stored before this migration keep their clear `body` until sealed: intake seals them at
-- start-up, and `python -m intake.rotate_keys` does the same (a migration cannot: it has no key).
alter table submissions add column body_enc bytea;
alter table submissions add column body_kid text;
create index submissions_body_kid on submissions (body_kid) where body_enc is not null;
create index submissions_sealed_body_expiry on submissions (received_at) where body_enc is not null;
create index submissions_roster_sls on submissions (sls_id) where kind = 'roster';

-- Erasure (POST /v1/families/{family_id}/erasure): the family's identifiers are removed from every
-- body kept; the family is remembered (ids and a reason code only) and its later submissions refused.
alter table submissions add column identifiers_erased_at timestamptz;
create table erased_families (
    family_id   text primary key,
    sls_id      text not null,
    erasure_id  uuid not null unique,
    reason      text not null,      -- a code (regsosek.contracts.ErasureReason)
    reference   text,               -- the operator's case id (a token, never free text)
    erased_by   text not null,      -- token subject
    erased_at   timestamptz not null default now()
);
