-- The producer's decision sequence of each step (docs/ORDERING.md): verify's for verified and
-- flagged, classify's for classified and eligibility, 0 for notified and for steps recorded
-- before sequences existed. A submission's final state is read from the newest verify decision
-- by this sequence, not from the order the steps arrived in (two topics).
alter table journey add column decision_seq bigint not null default 0;
