"""GET /v1/webhook-keys: the public keys that verify notify's Ed25519 webhook signatures.

Public, so no token: a programme verifies deliveries with a key from here and shares no secret
with notify. A JWK Set (RFC 7517; Ed25519 keys as in RFC 8037: kty OKP, crv Ed25519, x) with each
key's Standard Webhooks form (`whpk`) and its `status`: `current`, and during a rotation also
`previous`, the key being retired, which still signs every webhook until it is removed.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from notify.settings import NotifySettings
from regsosek.standard_webhooks import jwk

MAX_AGE_S = 300  # receivers may cache the set this long; a rotation keeps the old key listed far longer


def webhook_keys_router(settings: NotifySettings) -> APIRouter:
    router = APIRouter(tags=["webhook keys"])

    @router.get("/v1/webhook-keys", summary="Public keys that verify webhook signatures (no token needed)")
    async def webhook_keys(response: Response) -> dict:
        keys = settings.webhook_signing_keys()
        response.headers["Cache-Control"] = f"public, max-age={MAX_AGE_S}"
        return {"keys": [{**jwk(k.key.public_key(), k.kid), "status": k.status} for k in keys],
                "signature_scheme": "Standard Webhooks v1a (Ed25519) over \"{webhook-id}.{webhook-timestamp}.{body}\""}

    return router
