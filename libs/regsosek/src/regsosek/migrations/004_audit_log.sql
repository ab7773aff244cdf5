-- Who read or decided what, in each service's own database (regsosek.audit, docs/RETENTION.md).
-- Written in the transaction of the decision it records (a read: its own small insert).
-- Ids only: the token's subject and role, the action, the object's id (a submission, family,
-- subscription or dead-letter address), never a NIK, KK number or name; the request id and
-- trace id say where it came from. Pruned after REGSOSEK_AUDIT_RETENTION_DAYS.
create table audit_log (
    id          bigserial primary key,
    at          timestamptz not null default now(),
    actor       text not null,             -- token subject (an operator's login for commands)
    role        text not null,             -- token role, or 'operator'
    action      text not null,             -- e.g. submission.read, resolution.submit, subscription.pause
    object_type text not null,             -- submission | family | subscription | dead_letter | audit_log
    object_id   text,
    outcome     text not null default 'ok',   -- ok | denied | not_found | replayed
    request_id  text,
    trace_id    text,
    detail      jsonb not null default '{}'   -- counts and flags only
);
create index audit_log_at on audit_log (at);
create index audit_log_actor on audit_log (actor, at);
create index audit_log_object on audit_log (object_id, at);
