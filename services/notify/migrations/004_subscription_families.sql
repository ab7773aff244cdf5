-- Which subscriptions have been given a decision about which family, so that a later decision
-- reaches them even when it no longer matches their filters (a withdrawal, a family that
-- stops being eligible for the subscription's programme): see notify.domain.recipients.
create table subscription_families (
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    family_id       text not null,
    primary key (subscription_id, family_id)
);
create index subscription_families_family on subscription_families (family_id);

insert into subscription_families (subscription_id, family_id)
select distinct subscription_id, family_id from deliveries
on conflict do nothing;
