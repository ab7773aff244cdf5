"""The console's words: Bahasa Indonesia first, English second (messages/<lang>.yaml)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from console.domain import resolution_parts
from regsosek.contracts.details import read_detail

LANGUAGES = ("id", "en")
DEFAULT = "id"
_DIR = Path(__file__).resolve().parent / "messages"


@cache
def catalogue(lang: str) -> dict[str, str]:
    return yaml.safe_load((_DIR / f"{lang}.yaml").read_text(encoding="utf-8"))


def language(value: str | None) -> str:
    return value if value in LANGUAGES else DEFAULT


class Words:
    """`t("key")` in templates; a missing key reads as the Indonesian text, then as the key itself."""

    def __init__(self, lang: str) -> None:
        self.lang = language(lang)
        self._own, self._base = catalogue(self.lang), catalogue(DEFAULT)

    def __call__(self, key: str, **values: object) -> str:
        text = self._own.get(key) or self._base.get(key) or key
        return text.format(**values) if values else text

    def code(self, kind: str, code: str) -> str:
        """A code's words (`<kind>.<code>`), else the code itself (one this console does not know yet)."""
        return self._own.get(f"{kind}.{code}") or self._base.get(f"{kind}.{code}") or code

    def codes(self, kind: str, codes: list[str]) -> str:
        return ", ".join(self.code(kind, c) for c in codes)

    def fact(self, detail: str | None) -> str:
        """A verification detail (regsosek.contracts.details) in the reader's language: a sentence
        made from a known template is worded by its `detail.<code>` message, each field as its kind
        says (`_field`); any other text, or a language without the message, shows the detail as it
        came (verify writes it in English)."""
        found = read_detail(detail)
        if found is None:
            return detail or ""
        template, values = found
        words = self._own.get(f"detail.{template.code}")
        if words is None:
            return detail or ""
        return words.format(**{k: self._field(template.kind(k).words, v) for k, v in values.items()})

    def _field(self, words: str | None, value: str) -> str:
        """A field's value worded as its kind says (regsosek.contracts.details.Field)."""
        if words == "detail":
            return self.fact(value)
        if words == "resolution":
            return self.resolution(value)
        return self.code(words, value) if words else value

    def resolution(self, reason: str) -> str:
        """A supervisor's resolution reason with its kind of decision worded (`resolved.<kind>`),
        the supervisor's own note as written."""
        kind, note = resolution_parts(reason)
        if kind is None:
            return note
        return f"{self(f'resolved.{kind}')}: {note}" if note else self(f"resolved.{kind}")
