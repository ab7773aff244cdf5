-- Each family's decision sequence (docs/ORDERING.md): every outcome verify publishes for a family
-- (verified or flagged, by interview, roster, hold timeout or supervisor) takes the next number in
-- the transaction that decides it, and carries it as `decision_seq`, so classify and intake order
-- verified and flagged events (two topics) by it rather than by arrival. It survives new interview
-- versions (the row is kept), so a newer version's decision is always a higher number.
-- Families decided before this migration start at 0: what they published carried no sequence
-- (read as 0, the oldest), and their next decision is 1.
alter table interviews add column decision_seq bigint not null default 0;
alter table verification_history add column decision_seq bigint;
