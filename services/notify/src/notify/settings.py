"""Notify's configuration (environment, prefix REGSOSEK_)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, PrivateAttr, model_validator

from regsosek.crypto import Keyring, identity_keyring
from regsosek.keys import InsecureSecret, require_strong_secret
from regsosek.settings import TokenSettings
from regsosek.standard_webhooks import LOCAL_DEVELOPMENT_SIGNING_KEY, MalformedKey, load_signing_key, thumbprint


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: Ed25519PrivateKey
    status: str  # current | previous


# notify's member index key in local use; published here, so refused in production (regsosek.keys)
DEVELOPMENT_NIK_LOOKUP_KEY = "local-development-notify-nik-lookup-key"


class NotifySettings(TokenSettings):
    service_name: str = "notify"
    http_port: int = 8004
    delivery_batch_size: int = 200          # events per POST
    delivery_timeout_s: float = 10.0        # one POST, from connecting to the whole answer
    # The delivery and DCI callback loops look for due work every delivery_idle_poll_s while they
    # find some, and back off to delivery_idle_poll_max_s while they find none; a commit of this
    # process (a decision consumed, a subscription or DCI request answered) wakes them sooner. Work
    # due by time alone (a retry's wait over) or written by another instance may wait up to the longest.
    delivery_idle_poll_s: float = Field(default=0.05, gt=0)
    delivery_idle_poll_max_s: float = Field(default=1.0, gt=0)
    delivery_concurrency: int = 64          # subscriptions delivered at the same time by one instance
    resolve_timeout_s: float = 5.0          # production: resolving a callback's name
    retry_base_s: float = 0.5
    retry_cap_s: float = 300.0
    suspend_after_failures: int = 20        # consecutive failed attempts before a subscription is suspended
    metrics_refresh_s: float = 5.0          # how often the per-subscription lag gauges are read from the database
    # what each programme may receive (legal basis, fields): a versioned data file
    programme_access_file: str = str(Path(__file__).resolve().parent / "data" / "programme-access-2022.1.yaml")
    # live subscriptions per programme (each one is another copy of its families' data); beyond: 409
    max_subscriptions_per_programme: int = Field(default=10, ge=1)
    # how much of a subscriber's reply is read; a longer reply is a failed attempt
    max_reply_bytes: int = Field(default=64 * 1024, ge=1024)
    # Retention: a delivered event's payload is emptied this many days after delivery (docs/RETENTION.md).
    delivery_payload_retention_days: int = Field(default=30, gt=0)
    # DCI Social Registry API (/dci, notify.dci): notify's sender_id in DCI envelopes, and the requester
    # key registry: sender_id -> token subject and the Ed25519 public key that signs its requests.
    dci_sender_id: str = "regsosek"
    dci_requesters_file: str = str(Path(__file__).resolve().parent / "data" / "dci-requesters.yaml")
    # on-search, on-subscribe, ... POSTs before a queued callback is given up (backoff retry_base_s..retry_cap_s)
    dci_callback_attempts: int = Field(default=12, ge=1, le=30)
    # a request's header.message_ts may be this far from now (either way); a message_id is taken once
    dci_message_window_s: float = Field(default=300.0, gt=0, le=86400)
    # PEM of the RSA private key (2048 bits or more) encrypted DCI requests are made to (docs/DCI.md);
    # empty: encrypted messages are refused (err.encryption.invalid)
    dci_encryption_key_file: str = ""
    # finished DCI callbacks and settled DCI transactions (ids and statuses) are deleted after this
    dci_bookkeeping_retention_days: int = Field(default=90, gt=0)

    # Ed25519 key that signs webhooks (Standard Webhooks v1a): whsk_<base64 of a 32-byte seed>, or a
    # file holding it (_FILE wins). Production refuses a missing or development key. The public half
    # is published at GET /v1/webhook-keys under the key id (default: its RFC 7638 thumbprint).
    webhook_signing_key: str = ""
    webhook_signing_key_file: str = ""
    webhook_signing_key_id: str = ""
    # Rotation: the key being replaced. While set, every webhook carries a second v1a signature made
    # with it and the key stays published as "previous", so receivers that still hold it keep verifying.
    webhook_previous_signing_key: str = ""
    webhook_previous_signing_key_file: str = ""
    webhook_previous_signing_key_id: str = ""
    # The identity feed (member-identities, regsosek.contracts.identities): the keys that open the
    # members' NIKs intake seals (REGSOSEK_IDENTITY_KEYS or _FILE, the same set as intake's; production
    # refuses none or a development key), and how long a delivery with member-level decisions for a
    # programme granted member_identifiers waits for its family's identity list when it has not arrived
    # yet (topics are read independently); after that it is sent without NIKs (`nik` null), never lost.
    identity_keys: str = ""
    identity_keys_file: str = ""
    identity_wait_s: float = Field(default=300.0, ge=0)
    identity_retry_s: float = Field(default=2.0, gt=0)  # a waiting subscription is looked at again after this
    # Retention: an identity list superseded by a newer one of its family is deleted this many days after
    # it arrived (the family's latest list is kept while the family is registered; erasure deletes all).
    identity_superseded_retention_days: int = Field(default=30, gt=0)
    # Key of the member index (DCI search by a member's NIK, for requesters granted member_identifiers):
    # HMAC-SHA256 of each NIK, notify's own key (not intake's). Production: set, secret, 32 bytes or more.
    nik_lookup_key: str = DEVELOPMENT_NIK_LOOKUP_KEY

    _signing_keys: tuple[SigningKey, ...] = PrivateAttr(default=())
    _identity_keyring: Keyring | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load_webhook_keys(self) -> NotifySettings:
        current = _signing_key("REGSOSEK_WEBHOOK_SIGNING_KEY", self.webhook_signing_key, self.webhook_signing_key_file,
                               self.webhook_signing_key_id, self.env, "current", required=True)
        assert current is not None  # required=True: a missing current key raised already
        keys = [current]
        previous = _signing_key("REGSOSEK_WEBHOOK_PREVIOUS_SIGNING_KEY", self.webhook_previous_signing_key,
                                self.webhook_previous_signing_key_file, self.webhook_previous_signing_key_id,
                                self.env, "previous", required=False)
        if previous is not None:
            if previous.kid == keys[0].kid:
                raise InsecureSecret("REGSOSEK_WEBHOOK_PREVIOUS_SIGNING_KEY has the same key id as the current key")
            keys.append(previous)
        self._signing_keys = tuple(keys)
        self._identity_keyring = identity_keyring(self.identity_keys, self.identity_keys_file, self.env)
        require_strong_secret("REGSOSEK_NIK_LOOKUP_KEY", self.nik_lookup_key, self.env)
        return self

    def identity_keyring(self) -> Keyring:
        assert self._identity_keyring is not None
        return self._identity_keyring

    def webhook_signing_keys(self) -> tuple[SigningKey, ...]:
        """The current key first, then the previous one during a rotation."""
        return self._signing_keys


_DEVELOPMENT_SEED = load_signing_key(LOCAL_DEVELOPMENT_SIGNING_KEY).private_bytes_raw()


def _signing_key(name: str, value: str, file: str, kid: str, env: str, status: str, *, required: bool) -> SigningKey | None:
    if file:
        try:
            value = Path(file).read_text().strip()
        except OSError as e:
            raise InsecureSecret(f"{name}_FILE cannot be read ({type(e).__name__})") from None
    value = value.strip()
    production = env.strip().lower() == "production"
    if not value:
        if required and production:
            raise InsecureSecret(f"{name} (or {name}_FILE) must be set in production "
                                 "(generate one with: python -m regsosek.standard_webhooks)")
        if not required:
            return None
        value = LOCAL_DEVELOPMENT_SIGNING_KEY
    try:  # the form first: the generic rule's advice (openssl rand) would not make a valid key
        key = load_signing_key(value, name)
    except MalformedKey as e:
        raise InsecureSecret(str(e)) from None
    require_strong_secret(name, value, env)
    if production and key.private_bytes_raw() == _DEVELOPMENT_SEED:
        raise InsecureSecret(f"{name} is a development key published in this repository; set a secret one in production")
    return SigningKey(kid=kid.strip() or thumbprint(key.public_key()), key=key, status=status)
