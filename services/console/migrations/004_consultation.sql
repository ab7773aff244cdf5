-- The village consultation (FKP) in the read model (console/consultation.py): a village's forum,
-- its decisions and the ground checks of the families it added. Ids, kinds, groups, reasons, dates.
create table fkp_forums (
    forum_id       text primary key,
    village_id     text not null,
    sls_ids        text[] not null,
    held_on        date not null,
    participants   jsonb not null,          -- [[role, count], ...]
    status         text not null,           -- open | closed
    decisions      int not null default 0,
    added_families int not null default 0,
    at             timestamptz not null
);
create index fkp_forums_village on fkp_forums (village_id text_pattern_ops);

create table fkp_forum_decisions (
    decision_id   text primary key,
    forum_id      text not null,
    family_id     text not null,
    sls_id        text not null,
    kind          text not null,
    welfare_group int,
    reason        text not null,
    decided_at    timestamptz not null
);
create index fkp_forum_decisions_forum on fkp_forum_decisions (forum_id);

create table fkp_ground_checks (
    forum_id   text not null,
    family_id  text not null,
    outcome    text not null,
    checked_on date not null,
    primary key (forum_id, family_id)
);
