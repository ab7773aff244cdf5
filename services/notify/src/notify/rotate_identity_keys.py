"""Key rotation of the identity lists notify keeps (member-identities, sealed by intake under the
identity feed's keys; regsosek.key_rotation).

Put the new key first in REGSOSEK_IDENTITY_KEYS (or the keys file) of BOTH notify and intake,
keeping the old one after it; roll notify first (it must open lists under the new key before intake
seals any), then intake; then run:

    python -m notify.rotate_identity_keys [--batch 500] [--dry-run]

It re-seals every kept list not under the current key, in batches of one transaction each (rows
locked with skip locked), printing progress; interrupted, it resumes. Remove the old key once it
reports 0 left and the member-identities topic's retention has passed (records on the topic stay
under the old key until then). Exit codes: 0 done, 2 usage, 3 database unreachable.
"""

from __future__ import annotations

from regsosek.key_rotation import main as rotation_main


def main(argv: list[str] | None = None) -> int:
    from notify.app import identity_key_rotation  # the composition root
    from notify.settings import NotifySettings

    s = NotifySettings()
    return rotation_main("python -m notify.rotate_identity_keys", __doc__.split("\n\n")[0], s.dsn(), 500,
                         lambda report: identity_key_rotation(s, report), argv)


if __name__ == "__main__":
    raise SystemExit(main())
