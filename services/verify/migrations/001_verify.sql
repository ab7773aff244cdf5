-- SLS rosters as confirmed with the RT head; every revision kept.
create table rosters (
    sls_id        text primary key,
    revision      int not null,
    submission_id uuid not null,
    officer_id    text not null,
    confirmed_by  text not null,
    confirmed_at  timestamptz not null,
    received_at   timestamptz not null default now()
);
create table roster_history (
    sls_id        text not null,
    revision      int not null,
    submission_id uuid not null,
    body          jsonb not null,
    received_at   timestamptz not null default now(),
    primary key (sls_id, revision)
);
create table roster_families (
    sls_id        text not null,
    building_no   int not null,
    family_no     int not null,
    kk_number     text,
    member_count  int not null,
    status        text not null,
    primary key (sls_id, building_no, family_no)
);
create index roster_families_kk on roster_families (sls_id, kk_number);

-- The latest interview of each family and where it stands.
create table interviews (
    family_id     text primary key,
    sls_id        text not null,
    submission_id uuid not null,
    version       int not null,
    body          jsonb not null,
    state         text not null,            -- held | verified | flagged | rejected
    outcome       text,                     -- verification outcome or flag reason
    detail        text,
    held_since    timestamptz,
    traceparent   text,                     -- the submission's trace, resumed when a held interview is decided
    decided_at    timestamptz,
    updated_at    timestamptz not null default now()
);
create index interviews_held on interviews (sls_id) where state = 'held';
create index interviews_held_since on interviews (held_since) where state = 'held';

-- Which family each NIK belongs to, nationally. NIKs are stored as keyed hashes.
create table nik_claims (
    nik_hash      bytea primary key,
    family_id     text not null
);
create index nik_claims_family on nik_claims (family_id);

create table resolutions (
    submission_id uuid primary key,
    family_id     text not null,
    decision      text not null,
    supervisor_id text not null,
    reason        text not null,
    decided_at    timestamptz not null
);
