-- Minimal data (docs/DATA_INVENTORY_CLASSIFY.md): classify keeps each family's HouseholdProfile
-- (regsosek.contracts.household: ages at the interview date, the coded answers the PMT uses,
-- area and ids), no longer the whole interview with names, NIKs, birth dates, KK number,
-- address and GPS.
--
-- Existing rows are converted here, exactly as `household_profile()` does in Python (ages in
-- completed years on the interview's own local date, bounded to 0..150), so re-rank and
-- replay go on classifying them the same way; then the interview column is emptied, dropped,
-- and the table rewritten (CLUSTER) so that the old values do not linger in dead tuples or in
-- the dropped column of the live ones. (Copies in WAL archives and backups from before this
-- migration expire with them.)
alter table families add column profile jsonb;
alter table families alter column interview drop not null;

update families f
   set profile = jsonb_build_object(
         'family_id', f.family_id,
         'sls_id', f.sls_id,
         'submission_id', f.submission_id::text,
         'version', f.version,
         'members', (
           select jsonb_agg(jsonb_build_object(
                    'age', least(greatest(
                             extract(year from day)::int - extract(year from dob)::int
                             - case when (extract(month from day), extract(day from day))
                                         < (extract(month from dob), extract(day from dob)) then 1 else 0 end,
                             0), 150),
                    'sex', m -> 'sex',
                    'relationship', m -> 'relationship',
                    'pregnant', coalesce(m -> 'pregnant', 'false'::jsonb),
                    'school', m -> 'school',
                    'highest_diploma', m -> 'highest_diploma',
                    'worked_last_week', m -> 'worked_last_week',
                    'industry', m -> 'industry',
                    'job_status', m -> 'job_status',
                    'difficulty', coalesce(m -> 'difficulty', '"none"'::jsonb))
                  order by ord)
             from jsonb_array_elements(f.interview -> 'members') with ordinality as t(m, ord),
                  lateral (select left(f.interview ->> 'interviewed_at', 10)::date as day,
                                  (m ->> 'date_of_birth')::date as dob) d),
         'housing', (
           select jsonb_build_object(
                    'floor_area_m2', h -> 'floor_area_m2', 'floor', h -> 'floor', 'wall', h -> 'wall',
                    'roof', h -> 'roof', 'drinking_water', h -> 'drinking_water', 'lighting', h -> 'lighting',
                    'installed_power', h -> 'installed_power', 'cooking_fuel', h -> 'cooking_fuel',
                    'toilet', h -> 'toilet', 'faeces_disposal', h -> 'faeces_disposal')
             from (select f.interview -> 'housing' as h) x),
         'economy', jsonb_build_object(
           'assets', coalesce(f.interview -> 'economy' -> 'assets', '[]'::jsonb),
           'livestock', coalesce(f.interview -> 'economy' -> 'livestock', '{}'::jsonb),
           'internet_access', coalesce(f.interview -> 'economy' -> 'internet_access', 'false'::jsonb),
           'bank_account', coalesce(f.interview -> 'economy' -> 'bank_account', 'false'::jsonb))),
       interview = null;

alter table families alter column profile set not null;
alter table families drop column interview;
-- Rewrite the table: only live tuples are copied and dropped columns are nulled in the copy.
cluster families using families_pkey;
