-- The living registry (docs/DOMAIN.md, after the census): updates and their field check, complaints
-- and their outcomes. What was received stays in `submissions` (sealed, idempotent, journey); these
-- tables keep ids, codes and dates only, for the decisions and the status views.

-- An update's field check (one per update): confirmed makes the update count (published on family-update).
create table update_checks (
    update_id    uuid primary key,         -- the update's submission id
    check_id     uuid not null unique,     -- the field check's submission id
    family_id    text not null,
    outcome      text not null,            -- confirmed | not_confirmed
    checked_on   date not null,
    checked_by   text not null,            -- token subject
    recorded_at  timestamptz not null default now()
);

-- A complaint (sanggahan/pengaduan) and where it stands; its description stays in the sealed body.
create table complaints (
    complaint_id uuid primary key,         -- the complaint's submission id
    family_id    text not null,
    sls_id       text not null,
    complainant  text not null,            -- family | village | programme
    subject      text not null,            -- decision | omission
    programme    text,
    status       text not null,            -- filed | revisit | corrected | rejected
    filed_at     timestamptz not null,
    updated_at   timestamptz not null default now()
);
create index complaints_family on complaints (family_id);

-- Each outcome of a complaint; a rejection's reason stays in the outcome's sealed body.
create table complaint_outcomes (
    submission_id uuid primary key,        -- the outcome's submission id (a correction's journey is under it)
    complaint_id  uuid not null references complaints (complaint_id),
    outcome       text not null,           -- revisit | correction | rejected
    decided_on    date not null,
    recorded_at   timestamptz not null default clock_timestamp()
);
create index complaint_outcomes_complaint on complaint_outcomes (complaint_id);
