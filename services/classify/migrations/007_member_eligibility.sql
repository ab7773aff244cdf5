-- Per-member decisions (issue 12 item 4): each family's member-level eligibility of the individual
-- programmes (PBI-JKN, PIP) as last published, "programme:line_no" -> eligible, so a re-rank or replay
-- re-publishes a family when a member's eligibility changes even though no family-level one does.
-- Rows from before are '{}': the first replay to rules with member decisions publishes them once, so
-- programmes with by-name access receive each family's member decisions.
alter table families add column member_eligibility jsonb not null default '{}';
