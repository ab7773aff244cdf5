-- Which roster entry each decided interview accounts for, and against which roster revision.
alter table interviews add column roster_building_no int;
alter table interviews add column roster_family_no int;
alter table interviews add column roster_revision int;
create index interviews_sls on interviews (sls_id);
create index interviews_held_prefix on interviews (sls_id text_pattern_ops) where state = 'held';

-- Every outcome published for a family, and why it was decided then.
create table verification_history (
    id              bigserial primary key,
    family_id       text not null,
    sls_id          text not null,
    submission_id   uuid not null,
    version         int not null,
    state           text not null,     -- verified | flagged | rejected
    outcome         text not null,     -- verification outcome or flag reason
    detail          text not null,
    cause           text not null,     -- interview | roster | roster_revision | hold_timeout | resolution | duplicate_interview
    roster_revision int,
    decided_at      timestamptz not null default now()
);
create index verification_history_family on verification_history (family_id, id);

-- The interview version a supervisor resolved.
alter table resolutions add column version int;

-- Per SLS, the counts against its current roster revision (GET /v1/progress sums them by prefix).
create table sls_progress (
    sls_id          text primary key,
    roster_revision int not null,
    expected        int not null,
    interviewed     int not null,
    verified        int not null,
    flagged         int not null,
    absent          int not null,
    outstanding     int not null,
    complete        boolean not null,
    updated_at      timestamptz not null default now()
);
create index sls_progress_prefix on sls_progress (sls_id text_pattern_ops);

-- An SLS is announced complete once per roster revision.
create table sls_completions (
    sls_id          text not null,
    roster_revision int not null,
    expected        int not null,
    interviewed     int not null,
    verified        int not null,
    flagged         int not null,
    absent          int not null,
    completed_at    timestamptz not null default now(),
    primary key (sls_id, roster_revision)
);
