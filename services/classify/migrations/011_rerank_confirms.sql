-- A re-rank no longer writes the families whose decile it confirms (issue 16 target 3): one new row
-- version per unchanged family (~95% of a scope) was most of a re-rank's database cost.
--
-- A family's row keeps the decile basis and ranking it was last *written* with. Its basis as read
-- (`placed(...)`) is that of the newest ranking that confirmed it since: a
-- ranking taken by a re-rank run (rankings.run_id) of the family's partition (national, its province or
-- its regency; an area re-rank: its regency only), newer than the row's ranking, whose run applied the
-- family's page (family id <= the run's cursor) -- when the row's own basis is a ranked one ('ranked: ...',
-- with a ranking id). Such a family was in that run's snapshot with the value and decile it still has:
--  * a family whose decile the run moved is written by the run (ranking id = the run's ranking);
--  * a family classified or re-valued after the ranking was taken is written by its handler with a
--    provisional basis ('provisional: ...'), never confirmed by a ranking it was not ranked in;
--  * the run is the only unfinished re-rank (starting one supersedes any other, reclassify.py), so no
--    page of an older ranking is applied after a newer ranking confirmed the family;
--  * everything else that writes a ranked basis (replay, a re-classification with the same value)
--    writes the basis as read here.
-- The FKP note of the row's basis ("; ranked within welfare group ... (FKP)") is kept, as the re-rank's
-- update of the basis kept it. A family whose basis is provisional (never ranked) is still written by
-- the re-rank that confirms its decile, once: from then on its basis is a ranked one.
--
-- Readers take a family's placement as
--     cross join lateral placed(f.family_id, f.sls_id, f.decile_basis, f.ranking_id) p
-- (p.ranking_id, p.decile_basis): a single SELECT the planner inlines into the reader's query (the row's
-- columns passed, not the whole row, which would copy its profile).
create function placed(family text, sls text, basis text, ranking bigint)
    returns table (ranking_id bigint, decile_basis text)
    language sql stable parallel safe as $$
    select coalesce(c.id, placed.ranking),
           case when c.id is null then placed.basis
                else c.basis || coalesce(substr(placed.basis,
                                                nullif(strpos(placed.basis, '; ranked within welfare group'), 0)), '')
           end
      from (select) one
      left join lateral (
            select r.id, r.basis from rankings r join rerank_runs u on u.id = r.run_id
             where placed.ranking is not null and placed.basis like 'ranked: %'
               and r.id > placed.ranking
               and r.partition in ('ID', substr(placed.sls, 1, 2), substr(placed.sls, 1, 4))
               and (r.area is null or r.area = substr(placed.sls, 1, 4))
               and placed.family <= u.cursor
             order by r.id desc limit 1) c on true $$;
