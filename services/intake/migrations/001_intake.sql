-- What intake received. The body is the submission as accepted; this database is
-- the protected store of personal data (Law 27/2022): access by service role only.
create table submissions (
    submission_id uuid primary key,
    kind          text not null,            -- interview | roster | resolution | fkp
    sls_id        text not null,
    family_id     text,
    version       int,
    content_hash  bytea not null,
    body          jsonb not null,
    warnings      jsonb not null default '[]',
    event_id      text not null,
    trace_id      text,
    submitted_by  text not null,
    received_at   timestamptz not null default now()
);
create index submissions_family on submissions (family_id, version);
create index submissions_sls on submissions (sls_id);

-- The submission's journey, built from the downstream topics.
create table journey (
    submission_id uuid not null,
    step          text not null,            -- verified | flagged | classified | eligibility
    detail        jsonb not null,
    event_id      text not null,
    at            timestamptz not null default now(),
    primary key (submission_id, event_id)
);
