-- DCI search of a family by a member's NIK (idtype-value, type NIK; issue 14 item 2), for requesters
-- whose programmes are granted member_identifiers: each identity list's NIKs as keyed hashes
-- (HMAC-SHA256 under notify's REGSOSEK_NIK_LOOKUP_KEY, not intake's), with the member's form row.
-- Goes with its identity list (erasure, superseded-list retention, re-sealing leaves it alone).
create table member_index (
    nik_hash      bytea not null,
    family_id     text not null,
    submission_id uuid not null,
    line_no       int not null,
    primary key (nik_hash, family_id, submission_id),
    foreign key (family_id, submission_id) references member_identities (family_id, submission_id) on delete cascade
);
create index member_index_family on member_index (family_id, submission_id);
