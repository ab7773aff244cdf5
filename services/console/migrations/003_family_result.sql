-- The family's result (issue 13's field outcomes, services/console/README.md "Field outcomes"): each family row
-- carries its latest form's result, and each SLS counts its families per result, so a refused, moved or not found
-- family counts as refused / not reached, not as interviewed.
alter table families add column result text;          -- InterviewResult: complete ... not_found; null = responded

-- Families per result beyond interviewed (complete or partly complete), kept by the projection like the others.
alter table sls_progress add column refused int not null default 0;
alter table sls_progress add column moved int not null default 0;
alter table sls_progress add column not_found int not null default 0;
alter table sls_progress add column no_respondent int not null default 0;  -- no competent respondent

-- Of a roster's `absent` (verify's count at completion), the families accounted for by a non-response form.
alter table sls_rosters add column non_response int not null default 0;

-- Families projected before this migration have no result and count as interviewed, as before (most responded:
-- verify decides only on those); rebuilding the read model from the topics gives any non-response its figure.
