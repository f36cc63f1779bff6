"""A period's totals and its PI x project totals (statements and the CLI read these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count, Q, Sum

from chargeback.errors import Refused
from chargeback.money import ZERO

from ..models import PI, BillingPeriod, Charge
from .periods import BILLABLE_STATES


@dataclass
class ProjectTotals:
    pi_email: str
    project_code: str
    fund_org: str
    charges: int = 0
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO
    flagged_count: int = 0
    flagged_billed: Decimal = ZERO

    @property
    def discount(self) -> Decimal:
        return self.list_total - self.billed_total


@dataclass
class PeriodSummary:
    period: BillingPeriod
    charges: int = 0
    pis: int = 0
    projects: int = 0
    flagged: int = 0
    flagged_billed: Decimal = ZERO
    rejected: int = 0
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO
    billable_total: Decimal = ZERO
    by_source: dict[str, Decimal] = field(default_factory=dict)
    by_project: list[ProjectTotals] = field(default_factory=list)

    @property
    def discount(self) -> Decimal:
        return self.list_total - self.billed_total


def period_summary(period: BillingPeriod) -> PeriodSummary:
    """Totals of every charge of the period (all review states), counts, and billed per PI × project."""
    charges = Charge.objects.filter(period=period)
    summary = PeriodSummary(period=period)
    totals = charges.aggregate(
        n=Count("id"),
        list_total=Sum("list_cost"),
        billed_total=Sum("billed_cost"),
        pis=Count("pi", distinct=True),
        projects=Count("project", distinct=True),
    )
    summary.charges = totals["n"]
    summary.list_total = totals["list_total"] or ZERO
    summary.billed_total = totals["billed_total"] or ZERO
    summary.pis = totals["pis"]
    summary.projects = totals["projects"]
    counts: dict[str, int] = {}
    billed: dict[str, Decimal] = {}
    for state, n, total in (
        charges.values_list("review_state").annotate(n=Count("id"), billed=Sum("billed_cost")).order_by()
    ):
        counts[state], billed[state] = n, total or ZERO
    summary.flagged = counts.get("flagged", 0)
    summary.flagged_billed = billed.get("flagged", ZERO)
    summary.rejected = counts.get("rejected", 0)
    summary.billable_total = sum((billed.get(s, ZERO) for s in BILLABLE_STATES), ZERO)
    summary.by_source = {
        row["source__slug"]: row["billed"] or ZERO
        for row in charges.values("source__slug").annotate(billed=Sum("billed_cost")).order_by("source__slug")
    }
    summary.by_project = period_project_totals(period)
    return summary


def pi_period_projects(pi_email: str, period: BillingPeriod) -> list[ProjectTotals]:
    """Per project of one PI in one period: charges, list, billed, flagged."""
    email = pi_email.strip().lower()
    if not PI.objects.filter(email=email).exists():
        raise Refused(f"no PI with email {email}")
    return period_project_totals(period, pi_email=email)


def period_project_totals(period: BillingPeriod, *, pi_email: str | None = None) -> list[ProjectTotals]:
    """Billed per PI × project (charges in every review state; flagged amounts shown apart)."""
    charges = Charge.objects.filter(period=period)
    if pi_email:
        charges = charges.filter(pi_email=pi_email)
    rows = (
        charges.values("pi_email", "project_code")
        .annotate(
            n=Count("id"),
            list_total=Sum("list_cost"),
            billed=Sum("billed_cost"),
            flagged=Count("id", filter=Q(review_state="flagged")),
            flagged_billed=Sum("billed_cost", filter=Q(review_state="flagged")),
        )
        .order_by("pi_email", "project_code")
    )
    fund_orgs: dict[tuple[str, str], str] = {}
    for email, code, fund_org in (
        charges.exclude(fund_org="").values_list("pi_email", "project_code", "fund_org").distinct().order_by()
    ):
        fund_orgs.setdefault((email, code), fund_org)
    return [
        ProjectTotals(
            pi_email=row["pi_email"],
            project_code=row["project_code"],
            fund_org=fund_orgs.get((row["pi_email"], row["project_code"]), ""),
            charges=row["n"],
            list_total=row["list_total"] or ZERO,
            billed_total=row["billed"] or ZERO,
            flagged_count=row["flagged"],
            flagged_billed=row["flagged_billed"] or ZERO,
        )
        for row in rows
    ]
