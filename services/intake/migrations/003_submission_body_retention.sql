-- Retention (docs/RETENTION.md): what was received is kept REGSOSEK_SUBMISSION_BODY_RETENTION_DAYS
-- after receipt once its journey is final; then the body (the personal data) is emptied. The row
-- stays: ids, content hash (a repeated submission still gets its receipt), who submitted it, when,
-- and the journey.
alter table submissions alter column body drop not null;
alter table submissions add column body_expired_at timestamptz;
create index submissions_body_expiry on submissions (received_at) where body is not null;
