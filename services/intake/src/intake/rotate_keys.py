"""Key rotation of the bodies intake keeps sealed (regsosek.crypto, regsosek.key_rotation).

Put the new key first in REGSOSEK_DATA_KEYS (or the keys file), keeping the old ones after it,
roll the instances (new bodies are sealed under the new key, old ones still open), then run:

    python -m intake.rotate_keys [--batch 500] [--dry-run]

It re-seals every body not under the current key (and seals any still in clear, stored before
migration 004), in batches of one transaction each (rows locked with skip locked, so it runs
beside the service and beside another copy of itself), printing progress. Interrupted, it
resumes where it stopped (it picks rows by key id). When it reports 0 left, the old key can be
removed from the configuration. Exit codes: 0 done, 2 usage, 3 database unreachable.
"""

from __future__ import annotations

from regsosek.key_rotation import main as rotation_main


def main(argv: list[str] | None = None) -> int:
    from intake.app import key_rotation  # the composition root
    from intake.settings import IntakeSettings

    s = IntakeSettings()
    return rotation_main("python -m intake.rotate_keys", __doc__.split("\n\n")[0], s.dsn(), s.seal_batch_rows,
                         lambda report: key_rotation(s, report), argv)


if __name__ == "__main__":
    raise SystemExit(main())
