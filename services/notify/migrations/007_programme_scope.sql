-- Privacy by design: a subscription receives the decisions of its programmes only
-- (notify.domain.narrow, payload_for). scope_programmes are the programmes whose decisions
-- (with their reasons) its payloads carry, fixed when it is made from the token's programmes claim.
alter table subscriptions add column scope_programmes text[] not null default '{}';

-- Subscriptions from before scopes had no programmes claim to narrow by: they keep the
-- programmes of their filter (none: their payloads carry no programme's decision; the programme
-- subscribes again with a token naming its programmes).
update subscriptions set scope_programmes = programmes;

-- Payloads already queued or kept for redelivery and replay are narrowed the same way, so a
-- re-send never carries another programme's decision either.
update deliveries d
   set payload = jsonb_set(d.payload, '{data,decisions}', coalesce(
         (select jsonb_agg(x order by n) from jsonb_array_elements(d.payload -> 'data' -> 'decisions')
                 with ordinality as t(x, n)
           where x ->> 'programme' = any (s.scope_programmes)), '[]'::jsonb))
  from subscriptions s
 where s.id = d.subscription_id and jsonb_typeof(d.payload -> 'data' -> 'decisions') = 'array';
