-- Families whose verification was withdrawn after they were classified (a later roster
-- says they moved, a supervisor rejected them, a flagged correction): their eligibility
-- is withdrawn downstream and they leave the ranking until verified again.
create table withdrawals (
    family_id     text primary key,
    sls_id        text not null,
    version       int not null,
    reason        text not null,
    detail        text not null,
    flagged_at    timestamptz not null,
    withdrawn_at  timestamptz not null default now()
);
