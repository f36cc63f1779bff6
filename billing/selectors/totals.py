"""A period's totals, computed one way (`periods_totals`), and its PI x project totals.

`PeriodTotals` is what the dashboard, the period pages, `periods list`, `period summary` and
statements read: exact Decimal sums of the charges as imported (every review state), with the
flagged and rejected parts apart. Statements have totals of their own (statements.selectors
`statement_totals`: sums of rounded statement lines under the cent rule); those are a different
number and keep their own name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count, Q, Sum

from chargeback.errors import Refused
from chargeback.money import ZERO
from chargeback.percent import discount_percent_text

from ..models import PI, BillingPeriod, Charge, Import


@dataclass
class SourceTotal:
    slug: str
    name: str
    charges: int = 0
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO


@dataclass
class PeriodTotals:
    """Exact money and review counts of one period, cheap enough for every page view."""

    period: BillingPeriod
    charges: int = 0
    imports: int = 0
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO
    flagged: int = 0
    flagged_billed: Decimal = ZERO
    rejected: int = 0
    rejected_billed: Decimal = ZERO
    by_source: list[SourceTotal] = field(default_factory=list)

    @property
    def discount(self) -> Decimal:
        return self.list_total - self.billed_total

    @property
    def discount_percent(self) -> str:
        """'15 %' by the one rule (chargeback.percent); '' without a list total."""
        return discount_percent_text(self.list_total, self.discount)

    @property
    def billable_total(self) -> Decimal:
        """Billed of the charges statements bill (ok + approved): all but flagged and rejected."""
        return self.billed_total - self.flagged_billed - self.rejected_billed


def periods_totals(periods: Iterable[BillingPeriod]) -> dict[int, PeriodTotals]:
    """The totals of each period (by primary key), in a fixed number of queries whatever the count.

    List, billed and charges per source come from the period's completed imports (each import's
    totals are the exact sums of the charges it wrote, and amounts never change after import),
    checked against the period's charge count; where they disagree (charges not written by an
    import, or an import's totals out of step) the period's charges are summed instead. Flagged
    and rejected counts and money come from the (period, review state, billed) index."""
    result = periods_amount_totals(periods)
    add_review_totals(result)
    return result


def periods_amount_totals(periods: Iterable[BillingPeriod]) -> dict[int, PeriodTotals]:
    """The part of `periods_totals` that review decisions leave as it is: charges, list and billed,
    per source and in all (the flagged and rejected figures left at zero)."""
    result = {period.pk: PeriodTotals(period=period) for period in periods}
    if not result:
        return result
    ids = list(result)
    for row in (
        Import.objects.filter(period_id__in=ids, status=Import.Status.COMPLETED)
        .values("period_id", "source__slug", "source__display_name")
        .annotate(
            n=Count("id"),
            charge_sum=Sum("charges_created"),
            listed=Sum("list_total"),
            billed=Sum("billed_total"),
        )
        .order_by("period_id", "source__slug")
    ):
        totals = result[row["period_id"]]
        totals.imports += row["n"]
        totals.by_source.append(
            SourceTotal(
                slug=row["source__slug"],
                name=row["source__display_name"],
                charges=row["charge_sum"] or 0,
                list_total=row["listed"] or ZERO,
                billed_total=row["billed"] or ZERO,
            )
        )
    for period_id, n in (
        Charge.objects.filter(period_id__in=ids).values_list("period_id").annotate(n=Count("id")).order_by()
    ):
        result[period_id].charges = n
    out_of_step = [pk for pk, t in result.items() if t.charges != sum(s.charges for s in t.by_source)]
    for totals in (result[pk] for pk in out_of_step):
        totals.by_source = []
    for summed in (
        Charge.objects.filter(period_id__in=out_of_step)
        .values("period_id", "source__slug", "source__display_name")
        .annotate(charges=Count("id"), listed=Sum("list_cost"), billed=Sum("billed_cost"))
        .order_by("period_id", "source__slug")
    ):
        result[summed["period_id"]].by_source.append(
            SourceTotal(
                slug=summed["source__slug"],
                name=summed["source__display_name"],
                charges=summed["charges"],
                list_total=summed["listed"] or ZERO,
                billed_total=summed["billed"] or ZERO,
            )
        )
    for totals in result.values():
        totals.list_total = sum((s.list_total for s in totals.by_source), ZERO)
        totals.billed_total = sum((s.billed_total for s in totals.by_source), ZERO)
    return result


def add_review_totals(result: dict[int, PeriodTotals]) -> None:
    """Set the flagged and rejected counts and money of each period's totals (by primary key)."""
    if not result:
        return
    for period_id, state, n, billed in (
        Charge.objects.filter(
            period_id__in=list(result),
            review_state__in=[Charge.ReviewState.FLAGGED, Charge.ReviewState.REJECTED],
        )
        .values_list("period_id", "review_state")
        .annotate(n=Count("id"), billed=Sum("billed_cost"))
        .order_by()
    ):
        totals = result[period_id]
        if state == Charge.ReviewState.FLAGGED:
            totals.flagged, totals.flagged_billed = n, billed or ZERO
        else:
            totals.rejected, totals.rejected_billed = n, billed or ZERO


def period_totals_of(period: BillingPeriod) -> PeriodTotals:
    """The totals of one period, uncached (the dashboard's `period_totals` caches this)."""
    return periods_totals([period])[period.pk]


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
    """`period summary`: the period's totals (one computation, `periods_totals`), its PI and
    project counts, billed per source, and billed per PI x project."""

    totals: PeriodTotals
    pis: int = 0
    projects: int = 0
    by_project: list[ProjectTotals] = field(default_factory=list)

    @property
    def period(self) -> BillingPeriod:
        return self.totals.period

    @property
    def charges(self) -> int:
        return self.totals.charges

    @property
    def list_total(self) -> Decimal:
        return self.totals.list_total

    @property
    def billed_total(self) -> Decimal:
        return self.totals.billed_total

    @property
    def billable_total(self) -> Decimal:
        return self.totals.billable_total

    @property
    def flagged(self) -> int:
        return self.totals.flagged

    @property
    def flagged_billed(self) -> Decimal:
        return self.totals.flagged_billed

    @property
    def rejected(self) -> int:
        return self.totals.rejected

    @property
    def discount(self) -> Decimal:
        return self.totals.discount

    @property
    def by_source(self) -> dict[str, Decimal]:
        """Billed per source slug."""
        return {s.slug: s.billed_total for s in self.totals.by_source}


def period_summary(period: BillingPeriod) -> PeriodSummary:
    """Totals of every charge of the period (all review states), counts, and billed per PI × project."""
    counts = Charge.objects.filter(period=period).aggregate(
        pis=Count("pi", distinct=True), projects=Count("project", distinct=True)
    )
    return PeriodSummary(
        totals=period_totals_of(period),
        pis=counts["pis"],
        projects=counts["projects"],
        by_project=period_project_totals(period),
    )


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
