"""Reads of the statements app."""

from __future__ import annotations

from billing.models import BillingPeriod


def period_statement_problems(period: BillingPeriod) -> list[str]:
    """Why the period's statements do not allow finalizing (none until statements exist)."""
    # Statements arrive with their own issue; until then finalize checks review state only.
    return []
