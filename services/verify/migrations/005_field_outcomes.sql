-- Field outcomes (docs/DOMAIN.md): a family whose form records a non-response (refused, moved,
-- not found, no competent respondent) is stored with state 'non_response' and accounts for its
-- roster family; the progress figures count those families apart from the RT head's absences.
alter table sls_progress add column non_response int not null default 0;
alter table sls_completions add column non_response int not null default 0;
