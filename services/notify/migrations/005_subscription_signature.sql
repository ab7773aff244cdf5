-- How each subscription's webhooks are signed (Standard Webhooks, README "Programme integration"):
--   ed25519  v1a signatures with notify's published key (GET /v1/webhook-keys); no shared secret
--   hmac     v1 HMAC-SHA256 with the subscription's secret, plus the X-Regsosek-Signature header
--   both     all of the above
-- Subscriptions made before this column existed have a shared secret and receivers that check
-- X-Regsosek-Signature: they stay 'hmac'. An ed25519-only subscription keeps no secret.
alter table subscriptions
    add column signature text not null default 'hmac'
        constraint subscriptions_signature check (signature in ('ed25519', 'hmac', 'both')),
    alter column secret drop not null,
    add constraint subscriptions_secret_for_hmac check (signature = 'ed25519' or secret is not null);
