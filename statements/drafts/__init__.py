"""Drafts: what each statement of a period should say, worked out from its billable charges under
the cent rule (lines, details, the content hash), before anything is issued.

Two sides: `inputs.draft_inputs` reads what the period's charges need from the database into
plain records (`records`), and the pure `stages` turn those records into drafts, stage by
stage (see `stages` for the order); `comparison` sets drafts against the versions in force.
`statement_drafts` reads and computes."""

from __future__ import annotations

from billing.models import BillingPeriod

from .comparison import DraftComparison, drafts_compare
from .inputs import draft_inputs
from .records import (
    ChargeGroup,
    ChargeRow,
    DraftInputs,
    DraftLine,
    HeldBack,
    PeriodDrafts,
    PIRef,
    ProjectRef,
    ReviewStates,
    SourceRef,
    StatementDraft,
)
from .stages import SEPARATE_KINDS, drafts_compute, line_kind

__all__ = [
    "SEPARATE_KINDS",
    "ChargeGroup",
    "ChargeRow",
    "DraftComparison",
    "DraftInputs",
    "DraftLine",
    "HeldBack",
    "PIRef",
    "PeriodDrafts",
    "ProjectRef",
    "ReviewStates",
    "SourceRef",
    "StatementDraft",
    "draft_inputs",
    "drafts_compare",
    "drafts_compute",
    "line_kind",
    "statement_drafts",
]


def statement_drafts(period: BillingPeriod, *, pi_email: str | None = None) -> PeriodDrafts:
    """Every statement the period's charges call for: lines per source × service (credits and
    adjustments apart) from `ok` + `approved` charges, each the exact sum of its charges rounded
    once, half-up, to the currency's minor unit; totals are sums of the rounded lines. Flagged
    charges are held back (recorded, not billed); rejected ones are excluded."""
    return drafts_compute(draft_inputs(period, pi_email=pi_email), period=period)
