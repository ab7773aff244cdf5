"""Intake's configuration (environment, prefix REGSOSEK_)."""

from datetime import date

from pydantic import Field, PrivateAttr, model_validator

from regsosek.crypto import Keyring, identity_keyring, load_keyring
from regsosek.keys import require_strong_secret
from regsosek.pseudonyms import DEVELOPMENT_NIK_HASH_KEY
from regsosek.settings import TokenSettings


class IntakeSettings(TokenSettings):
    service_name: str = "intake"
    http_port: int = 8001
    collection_start: date = date(2022, 10, 15)
    collection_end: date = date(2022, 11, 20)
    max_batch_items: int = 500
    # Batch uploads (POST /v1/interviews:batch) handled at once per process; more wait their turn
    # unread, so that memory does not grow with the number of devices uploading (~3 MB per 100 items).
    max_batch_uploads: int = Field(default=2, gt=0)
    # Single submissions that arrive while earlier ones are being stored share one transaction
    # (group commit, regsosek.grouping): up to this many transactions at once per process, each of at
    # most this many submissions. At low rates each submission still has a transaction of its own.
    submit_groups_in_flight: int = Field(default=2, gt=0)
    submit_group_max: int = Field(default=100, gt=0)
    # Retention (docs/RETENTION.md): a submission's body (the personal data received) is kept this
    # long after receipt, and until its journey is final; then emptied (ids, hash and journey stay).
    submission_body_retention_days: int = Field(default=730, gt=0)
    # Key of the NIK and KK pseudonyms intake publishes (regsosek.pseudonyms): verify compares them for
    # the nationwide duplicate-NIK check and the roster match. The default is public: in production
    # REGSOSEK_NIK_HASH_KEY must be set, secret and at least 32 bytes. Set once, never rotate (the
    # claims verify stores would no longer match).
    nik_hash_key: str = DEVELOPMENT_NIK_HASH_KEY
    # Keys of the submissions' bodies at rest (AES-256-GCM, regsosek.crypto): REGSOSEK_DATA_KEYS
    # ("kid:base64,..." the first current) or REGSOSEK_DATA_KEYS_FILE; rotate with python -m intake.rotate_keys.
    data_keys: str = ""
    data_keys_file: str = ""
    seal_batch_rows: int = Field(default=500, gt=0)  # rows per transaction when sealing or re-sealing bodies
    # Keys of the identity feed (member-identities: members' NIKs sealed for notify only,
    # regsosek.contracts.identities): REGSOSEK_IDENTITY_KEYS or REGSOSEK_IDENTITY_KEYS_FILE, the same
    # set as notify's; a set of its own, not the data keys.
    identity_keys: str = ""
    identity_keys_file: str = ""

    _keyring: Keyring | None = PrivateAttr(default=None)
    _identity_keyring: Keyring | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _keys_in_production(self) -> "IntakeSettings":
        require_strong_secret("REGSOSEK_NIK_HASH_KEY", self.nik_hash_key, self.env)
        self._keyring = load_keyring(self.data_keys, self.data_keys_file, self.env)
        self._identity_keyring = identity_keyring(self.identity_keys, self.identity_keys_file, self.env)
        return self

    def keyring(self) -> Keyring:
        assert self._keyring is not None
        return self._keyring

    def identity_keyring(self) -> Keyring:
        assert self._identity_keyring is not None
        return self._identity_keyring
