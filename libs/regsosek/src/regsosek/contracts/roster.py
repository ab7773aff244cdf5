"""The SLS roster (form VK1) as confirmed with the RT/SLS head before door visits."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from regsosek.contracts.base import Contract
from regsosek.contracts.identifiers import KkNumber, SlsId, SubmissionId


class RosterStatus(StrEnum):
    """The RT head's confirmation of a prelisted family: present = masih tinggal di SLS; moved = pindah; dissolved =
    bubar/meninggal; unknown = tidak dikenal; added = not on the prelist, added with the RT head."""

    PRESENT = "present"  # masih tinggal di SLS
    MOVED = "moved"  # pindah
    DISSOLVED = "dissolved"  # bubar / meninggal
    UNKNOWN = "unknown"  # tidak dikenal
    ADDED = "added"  # not on the prelist, added with the RT head


class RosterFamily(Contract):
    building_no: Annotated[int, Field(ge=1, le=9999)]
    family_no: Annotated[int, Field(ge=1, le=999)]
    kk_number: KkNumber | None = None
    head_name: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    member_count: Annotated[int, Field(ge=1, le=40)]
    status: RosterStatus


class SlsRoster(Contract):
    """VK1: the families expected in one SLS and the RT head's confirmation of each."""

    submission_id: SubmissionId
    sls_id: SlsId
    officer_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    confirmed_by: Annotated[str, StringConstraints(min_length=1, max_length=120)]  # the RT/SLS head
    confirmed_at: datetime
    families: Annotated[list[RosterFamily], Field(min_length=1, max_length=2000)]

    @model_validator(mode="after")
    def _unique_serials(self) -> SlsRoster:
        seen = set()
        for f in self.families:
            k = (f.building_no, f.family_no)
            if k in seen:
                raise ValueError(f"building {f.building_no} family {f.family_no} listed twice")
            seen.add(k)
        return self
