-- The village consultation as held (FKP; docs/CONSULTATION.md): one forum per village, its
-- decisions per family (added families included) and the ground checks of the families it added.
-- No names: participants are roles and counts; who recorded is the token's subject.
create table fkp_forums (
    forum_id     uuid primary key,
    village_id   text not null unique,      -- one forum per village
    sls_ids      text[] not null,
    held_on      date not null,
    participants jsonb not null,            -- [{role, count}]
    content_hash bytea not null,            -- of the opening: the same opening again is a repeat
    opened_by    text not null,
    opened_at    timestamptz not null default now(),
    closed_by    text,
    closed_at    timestamptz
);

create table fkp_decisions (
    decision_id   uuid primary key,
    forum_id      uuid not null references fkp_forums (forum_id),
    family_id     text not null,
    sls_id        text not null,
    kind          text not null,            -- group_change | confirmed | moved | died | added
    welfare_group int,
    reason        text not null,            -- the forum's reason (no names); emptied when the family is erased
    content_hash  bytea not null,
    decided_by    text not null,
    decided_at    timestamptz not null default now(),
    unique (forum_id, family_id)            -- one decision per family per forum
);
create index fkp_decisions_family on fkp_decisions (family_id);

create table fkp_ground_checks (
    forum_id      uuid not null references fkp_forums (forum_id),
    family_id     text not null,
    outcome       text not null,            -- found | not_found
    checked_on    date not null,
    checked_by    text not null,
    content_hash  bytea not null,
    submission_id uuid,                     -- the found family's interview (submissions, kind interview)
    checked_at    timestamptz not null default now(),
    primary key (forum_id, family_id)
);
