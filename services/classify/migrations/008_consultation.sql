-- A village consultation's forums as classify tallies them (classify/consultation.py): how many
-- decisions a closed forum counts, which it applied, and whether its regency's re-rank was asked
-- for (once per forum). Ids, kinds and counts only: the decisions themselves are kept where they
-- apply (fkp_adjustments for a group change, withdrawals for a family moved away or dissolved).
create table fkp_forums (
    forum_id     uuid primary key,
    regency      text not null,
    expected     int,                       -- null while the forum is open
    rerank_asked boolean not null default false,
    updated_at   timestamptz not null default now()
);

create table fkp_forum_decisions (
    decision_id uuid primary key,
    forum_id    uuid not null,
    family_id   text not null,
    kind        text not null,
    applied_at  timestamptz not null default now()
);
create index fkp_forum_decisions_forum on fkp_forum_decisions (forum_id);
