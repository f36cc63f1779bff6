"""The subsidy rules, the same for rated usage and imported (cloud) charges.

Order: free allowances come off first (rated usage only); then each subsidy in effect, in order of
`position` and then name, takes its percent of what is still to be billed, rounded half-even to
money's 10 places. A subsidy with a cap pays at most the cap per project per fiscal year: what it
paid in the year's earlier months and on the period's other imports counts, and the charge that
reaches the cap gets only what is left of it. A charge without a project, a zero or negative
charge (a credit) and a subsidy whose scope does not match get nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from chargeback.money import ZERO, quantize_money

from .models import Subsidy


@dataclass(frozen=True)
class Applied:
    subsidy: Subsidy
    amount: Decimal


def subsidy_matches(subsidy: Subsidy, *, project_code: str, pi_email: str, tier: str) -> bool:
    """Whether the subsidy's scope (tier, projects, PIs) covers a charge; the source is checked by
    whoever picks the subsidies in effect."""
    if not project_code:
        return False
    if subsidy.tier and subsidy.tier != tier:
        return False
    if subsidy.projects and project_code not in subsidy.projects:
        return False
    return not (subsidy.pis and (pi_email or "").lower() not in subsidy.pis)


class SubsidyLedger:
    """Applies the subsidies in effect to charges one at a time, in a fixed order, keeping what
    each capped subsidy has paid per project."""

    def __init__(self, subsidies: Iterable[Subsidy], paid: dict[tuple[int, str], Decimal]) -> None:
        self.subsidies = list(subsidies)
        self.paid = dict(paid)

    def projects_in_scope(self) -> set[str] | None:
        """The only projects any subsidy can apply to; None when some subsidy has no project list."""
        codes: set[str] = set()
        for subsidy in self.subsidies:
            if not subsidy.projects:
                return None
            codes.update(subsidy.projects)
        return codes

    def apply(self, *, billed: Decimal, project_code: str, pi_email: str, tier: str = "") -> list[Applied]:
        """The subsidies paying part of a charge whose billed amount (after free allowances) is `billed`."""
        applied: list[Applied] = []
        remaining = billed
        for subsidy in self.subsidies:
            if remaining <= 0:
                break
            if not subsidy_matches(subsidy, project_code=project_code, pi_email=pi_email, tier=tier):
                continue
            amount = quantize_money(remaining * subsidy.percent / 100)
            if subsidy.cap is not None:
                key = (subsidy.pk, project_code)
                left = subsidy.cap - self.paid.get(key, ZERO)
                amount = min(amount, max(left, ZERO))
                self.paid[key] = self.paid.get(key, ZERO) + amount
            if amount > 0:
                applied.append(Applied(subsidy, amount))
                remaining -= amount
        return applied
