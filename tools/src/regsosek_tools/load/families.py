"""The families a load is made of: one deterministic sample, as request bodies."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

DECIDED_OUTCOMES = ("verified", "verified_added")  # verification outcomes that lead to an eligibility decision


@dataclass
class Family:
    family_id: str
    sls_id: str
    officer: str
    body: bytes  # the interview as JSON, exactly as uploaded
    decided: bool  # expected to reach an eligibility decision (verified or verified as added)


@dataclass
class Pool:
    families: list[Family]
    rosters: list[tuple[str, str, bytes]]  # (sls id, officer, roster JSON)
    taken: int = 0

    def take(self, n: int) -> list[Family]:
        if self.taken + n > len(self.families):
            raise RuntimeError(f"sample exhausted: {n} wanted, {len(self.families) - self.taken} left")
        out = self.families[self.taken:self.taken + n]
        self.taken += n
        return out


def build_pool(seed: int, needed: int) -> Pool:
    """`needed` distinct families from one deterministic sample, with every SLS roster.

    The sample's second-wave families (a duplicate NIK copied from an earlier family)
    are left out: whether they or their donor gets flagged depends on arrival order, and
    the bench needs to know in advance which families will be decided."""
    from regsosek_tools.sample import generate, officer_for

    want = needed + needed // 20 + 50
    while True:
        sample = generate(seed, want)
        first = [iv for iv in sample.interviews if iv.family_id not in sample.depends_on]
        if len(first) >= needed:
            break
        want = int(want * 1.2) + 100
    families = [Family(iv.family_id, iv.location.sls_id, officer_for(iv.location.sls_id),
                       orjson.dumps(iv.model_dump(mode="json")), sample.expected[iv.family_id] in DECIDED_OUTCOMES)
                for iv in first[:needed]]
    used = {f.sls_id for f in families}
    rosters = [(r.sls_id, officer_for(r.sls_id), orjson.dumps(r.model_dump(mode="json")))
               for r in sample.rosters if r.sls_id in used]
    return Pool(families, rosters)
