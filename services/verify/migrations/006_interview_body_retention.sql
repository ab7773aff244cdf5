-- Retention of interview bodies (docs/RETENTION.md): a family's pseudonymised interview is emptied
-- REGSOSEK_INTERVIEW_BODY_RETENTION_DAYS after it was decided, once its state is final (verified,
-- rejected by a supervisor, or a non-response); the row (ids, outcome, roster match) stays, so the
-- progress figures do not change. A flagged family keeps its body until a supervisor resolves it.
alter table interviews add column body_expired_at timestamptz;
create index interviews_body_expiry on interviews (decided_at)
    where body is not null and state in ('verified', 'rejected', 'non_response');
