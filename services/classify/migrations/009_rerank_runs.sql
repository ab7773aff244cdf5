-- Re-ranks ranked in the database, applied in pages and resumable (issue 16 target 3), at national,
-- province or regency scope (issue 12 item 5), on demand, on a schedule or after an FKP adjustment.
--
-- A run takes its ranking once, in one transaction: every family of the scope ranked by
-- (rank value, family id) with window functions, the place of each family it will apply to kept
-- in rerank_members (its snapshot), one `rankings` row per partition with its cut-points. It then
-- applies the snapshot in pages of family ids, each page committing its rows, its events and the
-- run's cursor together: a run killed mid-way is taken up again after its last committed page by
-- the next re-rank of the same scope and area. Python never holds more than a page.
create table rerank_runs (
    id             bigserial primary key,
    scope          text not null,          -- national | province | regency
    area           text,                   -- the regency of an area re-rank, null for a full one
    reason         text not null,          -- command | schedule | request | fkp
    model_version  text not null,
    ranked         bigint not null default 0,
    cursor         text not null default '', -- the last family id applied
    examined       bigint not null default 0,
    changed        bigint not null default 0,
    unchanged      bigint not null default 0,
    skipped        bigint not null default 0,
    started_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    finished_at    timestamptz,
    outcome        text                    -- finished | superseded
);
create index rerank_runs_unfinished on rerank_runs (scope, area) where finished_at is null;

-- A run's snapshot: each family the run applies to, its partition, its rank value when ranked and
-- its ranked decile. Emptied when the run finishes. Unlogged (no WAL for millions of rows written
-- once): a database crash empties it, and the run it belonged to is then ranked afresh
-- (reclassify.py); a killed re-rank process loses nothing.
create unlogged table rerank_members (
    run_id      bigint not null,
    family_id   text not null,
    partition   text not null,
    rank_value  double precision not null,
    decile      int not null,
    primary key (run_id, family_id)
);

-- A re-rank rewrites every family's decile basis: room on each page lets those updates stay on
-- the page (no index entries to add), which is most of their cost.
alter table families set (fillfactor = 80);

-- Which run took a ranking, and its decile basis ("ranked: ... among n families").
alter table rankings add column run_id bigint, add column basis text, add column decile_sizes int[];
create index rankings_run on rankings (run_id, partition);

-- Re-ranks asked for (POST /v1/reranks, or the schedule), done one at a time by the service.
create table rerank_requests (
    id            bigserial primary key,
    scope         text not null,
    reason        text not null,           -- request | schedule
    requested_by  text not null,
    requested_at  timestamptz not null default now(),
    run_id        bigint,
    done_at       timestamptz
);
create index rerank_requests_waiting on rerank_requests (id) where done_at is null;

-- Replays spread over processes: the stored families split by family id into slices
-- (lower, upper], each with its own cursor and counters, so each process commits its batches
-- independently and an interrupted replay resumes every slice after its last committed batch.
create table replay_slices (
    run_id       bigint not null,
    slice        int not null,
    lower_id     text not null,            -- exclusive
    upper_id     text,                     -- inclusive; null: no upper bound
    cursor       text not null,
    examined     bigint not null default 0,
    changed      bigint not null default 0,
    finished_at  timestamptz,
    primary key (run_id, slice)
);
