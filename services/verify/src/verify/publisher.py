"""Verify's one publisher: every event verify emits is built here and put in the unit of work's
outbox (the transaction's; the relay sends it after commit). Topic, key (the SLS id, so an
SLS's events stay in order on one partition), subject (the family, or the SLS) and type."""

from __future__ import annotations

from datetime import datetime, timedelta

from regsosek.contracts import InterviewFlagged, InterviewVerified, SlsCompleted, UpdateHeld, household_profile
from regsosek.messaging import UnitOfWork
from regsosek.telemetry import in_trace_of
from regsosek.topics import Topic
from verify.domain import Decision, Interview, Outcome, Progress, Roster, Verdict


def verified_event(iv: Interview, d: Decision, at: datetime, decision_seq: int) -> InterviewVerified:
    """The interview-verified event of a verified family: its outcome and, for classify, the
    family's `HouseholdProfile` (ages computed at the interview date; no name, NIK, KK number,
    address, GPS or birth date leaves verify). Pure."""
    if not d.verified:
        raise ValueError("only a verified family has an interview-verified event")
    if d.outcome is None:
        raise ValueError("a verified family's decision carries its outcome")
    return InterviewVerified(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome=d.outcome,
                             verified_at=at, profile=household_profile(iv), decision_seq=decision_seq)


def flagged_event(iv: Interview, d: Decision, at: datetime, decision_seq: int) -> InterviewFlagged:
    if d.reason is None:
        raise ValueError("a flagged family's decision carries its reason")
    return InterviewFlagged(family_id=iv.family_id, sls_id=iv.location.sls_id, submission_id=iv.submission_id,
                            version=iv.version, reason=d.reason, detail=d.detail, flagged_at=at,
                            decision_seq=decision_seq)


class Publisher:
    def __init__(self, update_hold_timeout_s: float) -> None:
        self._update_hold = timedelta(seconds=update_hold_timeout_s)  # when a kept update stops waiting

    def outcome(self, uow: UnitOfWork, outcome: Outcome, now: datetime) -> None:
        """Every decision of the outcome, each in the trace of the interview it decides (a held
        interview's, else the current one); an update kept until its family is verified."""
        for v in outcome.verdicts:
            with in_trace_of(v.traceparent):
                self.verdict(uow, v, now)
        if outcome.held_update is not None:
            e, waits_for = outcome.held_update
            uow.outbox.publish(Topic.UPDATE_HELD, e.sls_id, UpdateHeld(
                submission_id=e.submission_id, family_id=e.family_id, sls_id=e.sls_id, waits_for=waits_for,
                held_at=now, expires_at=now + self._update_hold), subject=e.family_id)

    def verdict(self, uow: UnitOfWork, v: Verdict, now: datetime) -> None:
        """A verified family's profile or a flag. A non-response is neither: it is stored and
        counted in its SLS's progress, and nothing is published about the family."""
        iv, d = v.interview, v.decision
        if d.non_response is not None:
            return
        if d.verified:
            uow.outbox.publish(Topic.INTERVIEW_VERIFIED, iv.location.sls_id,
                               verified_event(iv, d, now, v.decision_seq), subject=iv.family_id)
        else:
            uow.outbox.publish(Topic.INTERVIEW_FLAGGED, iv.location.sls_id,
                               flagged_event(iv, d, now, v.decision_seq), subject=iv.family_id)

    def sls_completed(self, uow: UnitOfWork, roster: Roster, p: Progress, now: datetime) -> None:
        """`absent` of the event counts every roster family accounted for without an interview
        under this SLS: confirmed absent by the RT head, recorded as a non-response on its form,
        or interviewed under another SLS of the village before an SLS change moved it here;
        `non_response` says how many of `absent` were non-responses (the console counts those by the
        forms' results, so it takes them out of `absent`)."""
        uow.outbox.publish(Topic.SLS_COMPLETED, roster.sls_id, SlsCompleted(
            sls_id=roster.sls_id, roster_revision=roster.revision, roster_submission_id=roster.submission_id,
            expected=p.expected, interviewed=p.interviewed, verified=p.verified, flagged=p.flagged,
            absent=p.absent + p.non_response + p.relocated, non_response=p.non_response,
            completed_at=now), subject=roster.sls_id)
