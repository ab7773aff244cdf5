-- Progress at scale (services/console/README.md): per-SLS counters the projection keeps in the same
-- transaction as the family's row, so a page sums SLS rows per area level instead of counting families.
create table sls_progress (
    sls_id      text primary key,
    interviewed int not null default 0,        -- families the read model holds
    verified    int not null default 0,
    flagged     int not null default 0
);
create index sls_progress_prefix on sls_progress (sls_id text_pattern_ops);

-- Interviews per fieldwork day (WITA) and SLS, for the daily chart.
create table sls_days (
    sls_id     text not null,
    day        date not null,
    interviews int not null default 0,
    primary key (sls_id, day)
);
create index sls_days_prefix on sls_days (sls_id text_pattern_ops);

-- Families per field outcome (refused, moved, dissolved, not_found) from the latest roster.
alter table sls_rosters add column outcomes jsonb;
create index sls_rosters_prefix on sls_rosters (sls_id text_pattern_ops);

insert into sls_progress (sls_id, interviewed, verified, flagged)
select sls_id, count(*), count(*) filter (where verify_state = 'verified'), count(*) filter (where verify_state = 'flagged')
  from families group by sls_id;
insert into sls_days (sls_id, day, interviews)
select sls_id, (interviewed_at at time zone 'Asia/Makassar')::date, count(*)
  from families where interviewed_at is not null group by 1, 2;
