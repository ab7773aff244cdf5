-- The latest classification of each family, with what it was computed from.
create table families (
    family_id      text primary key,
    sls_id         text not null,
    submission_id  uuid not null,
    version        int not null,
    interview      jsonb not null,
    predicted      double precision not null,
    welfare_group  int not null,
    decile         int not null,
    model_version  text not null,
    rule_version   text not null,
    eligible       text[] not null,
    updated_at     timestamptz not null default now()
);
create index families_sls on families (sls_id);

-- Village consultation (FKP) decisions: the audit trail; the latest per family applies.
create table fkp_adjustments (
    submission_id  uuid primary key,
    family_id      text not null,
    welfare_group  int not null,
    reason         text not null,
    decided_by     text not null,
    decided_at     timestamptz not null,
    received_at    timestamptz not null default now()
);
create index fkp_family on fkp_adjustments (family_id, decided_at desc);
