-- Pseudonymised events (issue 11; docs/DATA_INVENTORY.md). Intake now publishes NIKs and KK numbers
-- as keyed hashes and no names, address or GPS; verify stores what it receives, so no clear
-- identifier is kept here any more.
--
-- Rows stored before this migration still hold clear values (interviews.body, roster_history.body,
-- roster_families.kk_number, rosters.confirmed_by). SQL cannot convert them: the hash key is not
-- available to a migration (it is intake's secret; verify runs without it). They are converted in
-- Python by `python -m verify.pseudonymise` (one-off, resumable, with REGSOSEK_LEGACY_NIK_HASH_KEY
-- set to intake's key), which verify also runs once at start-up whenever that key is available.
alter table roster_families add column kk_hash text;  -- the KK number's keyed hash (hex)
drop index if exists roster_families_kk;
create index roster_families_kk_hash on roster_families (sls_id, kk_hash);
alter table rosters alter column confirmed_by drop not null;  -- the RT head's name: no longer received

-- Erasure (family-erased): a decided family keeps its row (ids, outcome, roster match: progress
-- figures) without its body.
alter table interviews alter column body drop not null;
alter table interviews add column erased_at timestamptz;
create table erased_families (
    family_id   text primary key,
    sls_id      text not null,
    erasure_id  uuid not null,
    reason      text not null,       -- a code (regsosek.contracts.ErasureReason)
    erased_at   timestamptz not null, -- at intake
    applied_at  timestamptz not null default now()
);
