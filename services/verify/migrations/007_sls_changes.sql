-- SLS changes during listing (splits, merges, renames: form PSLS). A family interviewed under one
-- SLS may later be listed on another SLS's roster of the same village; verify matches it there by
-- its KK (keyed hash), kept on the row so that the other SLS's progress can count it.
alter table interviews add column kk_hash text;
update interviews set kk_hash = body->'location'->>'kk_hash' where body is not null and kk_hash is null;
create index interviews_kk_hash on interviews (kk_hash) where kk_hash is not null;
create index roster_families_village_kk on roster_families (left(sls_id, 10) text_pattern_ops) where kk_hash is not null;
