"""The social-protection programmes the system decides eligibility for, by code.

The codes are those of classify's rules file (services/classify/src/classify/data/eligibility-*.yaml,
a test keeps the two equal). A programme token names the programmes it acts for by these codes
(`programmes` claim, regsosek.auth); notify narrows subscriptions and payloads to them.
"""

from __future__ import annotations

PROGRAMME_CODES: tuple[str, ...] = ("pkh", "sembako", "pbi_jkn", "blt_desa", "pip")


def is_programme_code(value: object) -> bool:
    return isinstance(value, str) and value in PROGRAMME_CODES
