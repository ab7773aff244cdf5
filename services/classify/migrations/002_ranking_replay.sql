-- What each family's decile rests on, the versions it was computed with, and each
-- programme's decision, so a re-rank or replay can tell what changed.
alter table families
    add column rank_value      double precision,
    add column decile_basis    text not null default '',
    add column lines_version   text not null default '',
    add column eligibility     jsonb not null default '{}'::jsonb,
    add column ranking_id      bigint;
-- Rows classified before this migration: their rank value is their prediction, their decile
-- came from the model's reference cut-points, and their eligibility is read back from the
-- eligible list over the programmes of the only rules shipped until then (rules-2022.1).
-- lines_version stays '' (unknown), so `python -m classify.replay` classifies them again
-- and publishes only those whose outcome changes.
update families set rank_value = predicted,
                    decile_basis = 'provisional: reference cut-points of ' || model_version,
                    eligibility = jsonb_build_object(
                        'pkh', 'pkh' = any(eligible), 'sembako', 'sembako' = any(eligible),
                        'pbi_jkn', 'pbi_jkn' = any(eligible), 'blt_desa', 'blt_desa' = any(eligible),
                        'pip', 'pip' = any(eligible))
 where rank_value is null;
alter table families alter column rank_value set not null;

-- Every ranking of a scope's families (a re-rank, or an area re-rank after an FKP
-- adjustment): its cut-points place families classified after it.
create table rankings (
    id             bigserial primary key,
    scope          text not null,          -- national | province
    partition      text not null,          -- 'ID' (national) or the province code
    area           text,                   -- the regency of an area re-rank, null for a full one
    model_version  text not null,
    families       int not null,
    cutpoints      double precision[] not null,
    ranked_at      timestamptz not null default now()
);
create index rankings_partition on rankings (partition, id desc);

-- Regencies waiting for an area re-rank (marked by FKP adjustments).
create table rerank_areas (
    regency        text primary key,
    reason         text not null,
    requested_at   timestamptz not null default now()
);

-- Replays of the stored families with a configured model, lines and rules; the cursor
-- (last family id done) makes an interrupted replay resume where it stopped.
create table replay_runs (
    id             bigserial primary key,
    model_version  text not null,
    lines_version  text not null,
    rule_version   text not null,
    cursor         text not null default '',
    examined       int not null default 0,
    changed        int not null default 0,
    started_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    finished_at    timestamptz,
    outcome        text                    -- finished | superseded
);
