-- The console's read model (services/console/README.md): built from the pipeline's topics,
-- ids, codes, groups and times only (no NIK, KK number, name, address or answers).

create table families (
    family_id           text primary key,
    sls_id              text not null,
    submission_id       uuid,                   -- the latest interview's
    version             int,
    interviewed_at      timestamptz,
    verify_seq          bigint not null default -1,
    verify_state        text,                   -- verified | flagged
    verify_outcome      text,                   -- verification outcome, or the flag reason code
    verify_at           timestamptz,
    flag_detail         text,                   -- verify's readable detail for supervisors (no identifiers)
    classify_seq        bigint not null default -1,
    welfare_group       int,
    decile              int,
    model_version       text,
    adjusted_by_fkp     boolean not null default false,
    classified_at       timestamptz,
    rule_version        text,
    eligible_programmes text[] not null default '{}',
    decided_at          timestamptz,
    delivered_at        timestamptz,            -- first acknowledgement by a programme system
    deliveries          int not null default 0,
    resolution          text,                   -- a supervisor's latest decision (verify | reject)
    resolution_at       timestamptz
);
create index families_sls on families (sls_id text_pattern_ops);
create index families_flagged on families (verify_at) where verify_state = 'flagged';

-- Every event about a family, as a step of its journey (one row per event id).
create table journey_steps (
    event_id      text primary key,
    family_id     text not null,
    submission_id uuid,
    step          text not null,
    at            timestamptz not null,
    detail        jsonb not null default '{}'
);
create index journey_steps_family on journey_steps (family_id, at);
create index journey_steps_submission on journey_steps (submission_id);

-- Expected families per SLS: the roster (VK1), then verify's count when the SLS is completed.
create table sls_rosters (
    sls_id   text primary key,
    expected int not null,
    absent   int not null,
    as_of    timestamptz not null,
    revision int not null default 0
);

-- Model, rule and decile-basis versions seen on decisions.
create table versions_seen (
    kind       text not null,                   -- model | rules | decile_basis
    version    text not null,
    first_seen timestamptz not null,
    last_seen  timestamptz not null,
    decisions  bigint not null default 0,
    primary key (kind, version)
);
