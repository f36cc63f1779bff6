"""Spending over time: what a PI or a project was billed per period and per source, with the
list price, the discount and the charges still held back (open flags); the period-over-period
change per source for the dashboard; and the addresses of the spending pages, so that every PI
and project name in the admin can link to them.

Sums are exact (MoneyField sums are exact on SQLite and PostgreSQL); the period × source table is
a pandas pivot over Decimal values (object columns: pandas adds them as Decimals, never floats).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from urllib.parse import urlencode

import pandas as pd
from django.conf import settings
from django.db.models import Count, Q, Sum
from django.urls import get_script_prefix, get_urlconf, reverse

from chargeback.money import ZERO

from .models import PI, BillingPeriod, Charge, Project
from .selectors import BILLABLE_STATES, SourceHistory

PERIODS_SHOWN = 24


# --- addresses ----------------------------------------------------------------------------------


def pi_spending_url(email: str) -> str:
    return _page_url("ocb_spending_pi") + "?" + urlencode({"pi": email})


def project_spending_url(project_id: str) -> str:
    return _page_url("ocb_spending_project") + "?" + urlencode({"project": project_id})


def _page_url(name: str) -> str:
    # A list page links every row to these pages: reversed once per script prefix and URLconf.
    return _reversed(name, get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF)


@lru_cache(maxsize=32)
def _reversed(name: str, script_prefix: str, urlconf: str) -> str:
    return reverse(name, urlconf=urlconf)


# --- months -------------------------------------------------------------------------------------


def _previous_month(period: str) -> str:
    year, month = (int(p) for p in period.split("-"))
    return f"{year - 1}-12" if month == 1 else f"{year}-{month - 1:02d}"


def months_until(last: str, count: int) -> list[str]:
    """`count` calendar months ending with `last`, oldest first."""
    months = [last]
    while len(months) < count:
        months.append(_previous_month(months[-1]))
    return months[::-1]


def latest_period() -> str | None:
    return BillingPeriod.objects.order_by("-period").values_list("period", flat=True).first()


# --- a PI's or a project's spending -------------------------------------------------------------


@dataclass
class SpendingPeriod:
    """One period of a PI's or project's spending (billable charges: ok and approved)."""

    period: str
    status: str = ""  # the period's state; "" for a month with no period
    charges: int = 0
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO
    by_source: dict[str, Decimal] = field(default_factory=dict)  # billed per source slug
    flagged: int = 0
    flagged_billed: Decimal = ZERO

    @property
    def discount(self) -> Decimal:
        return self.list_total - self.billed_total


@dataclass
class Spending:
    periods: list[SpendingPeriod]
    sources: list[tuple[str, str]]  # (slug, display name) of the sources that billed anything
    pivot: pd.DataFrame  # billed, index period (oldest first) × columns source slug, Decimals

    @property
    def list_total(self) -> Decimal:
        return sum((p.list_total for p in self.periods), ZERO)

    @property
    def billed_total(self) -> Decimal:
        return sum((p.billed_total for p in self.periods), ZERO)

    @property
    def discount(self) -> Decimal:
        return self.list_total - self.billed_total

    @property
    def flagged(self) -> int:
        return sum(p.flagged for p in self.periods)

    @property
    def flagged_billed(self) -> Decimal:
        return sum((p.flagged_billed for p in self.periods), ZERO)

    def source_totals(self) -> dict[str, Decimal]:
        return {slug: sum(self.pivot[slug], ZERO) for slug, _ in self.sources}

    def history(self) -> SourceHistory:
        """The same figures in the shape of the dashboard's chart (billed per source per period)."""
        return SourceHistory(
            periods=[p.period for p in self.periods],
            sources=list(self.sources),
            billed={slug: [Decimal(v) for v in self.pivot[slug]] for slug, _ in self.sources},
        )


def _spending(filters: Q, *, until: str | None, count: int) -> Spending:
    last = until or latest_period()
    months = months_until(last, count) if last else []
    rows = list(
        Charge.objects.filter(filters, period__period__in=months)
        .exclude(review_state=Charge.ReviewState.REJECTED)
        .values_list("period__period", "source__slug", "source__display_name", "review_state")
        .annotate(n=Count("id"), listed=Sum("list_cost"), billed=Sum("billed_cost"))
        .order_by()
    )
    statuses = dict(BillingPeriod.objects.filter(period__in=months).values_list("period", "status"))
    frame = pd.DataFrame(
        [
            (period, slug, state in BILLABLE_STATES, n, listed or ZERO, billed or ZERO)
            for period, slug, _, state, n, listed, billed in rows
        ],
        columns=["period", "source", "billable", "charges", "list", "billed"],
    ).astype({"list": object, "billed": object})
    frame["billable"] = frame["billable"].astype(bool)  # an empty frame's column is object-typed
    billable = frame[frame["billable"]]
    names = {slug: name or slug for _, slug, name, *_ in rows}
    sources = sorted(set(billable["source"]), key=lambda s: (names[s].lower(), s))
    pivot = (
        billable.pivot_table(index="period", columns="source", values="billed", aggfunc="sum")
        if not billable.empty
        else pd.DataFrame()
    )
    pivot = pivot.reindex(index=months, columns=sources).astype(object)
    pivot = pivot.where(pivot.notna(), ZERO)  # fill with Decimal zero, not a float NaN/0.0
    per_period = (
        billable.groupby("period")[["charges", "list", "billed"]].sum() if not billable.empty else None
    )
    held = frame[~frame["billable"]].groupby("period")[["charges", "billed"]].sum() if len(frame) else None
    out = []
    for month in months:
        item = SpendingPeriod(period=month, status=statuses.get(month, ""))
        if per_period is not None and month in per_period.index:
            row = per_period.loc[month]
            item.charges = int(row["charges"])
            item.list_total, item.billed_total = Decimal(row["list"]), Decimal(row["billed"])
            item.by_source = {slug: Decimal(pivot.at[month, slug]) for slug in sources}
        if held is not None and month in held.index:
            item.flagged = int(held.loc[month, "charges"])
            item.flagged_billed = Decimal(held.loc[month, "billed"])
        out.append(item)
    return Spending(periods=out, sources=[(s, names[s]) for s in sources], pivot=pivot)


def pi_spending(pi: PI, *, until: str | None = None, count: int = PERIODS_SHOWN) -> Spending:
    """A PI's spending over `count` months ending with `until` (default: the latest period)."""
    return _spending(Q(pi=pi), until=until, count=count)


def project_spending(project: Project, *, until: str | None = None, count: int = PERIODS_SHOWN) -> Spending:
    """A project's spending (whoever's charges carry its id) over `count` months."""
    return _spending(Q(project_code=project.project_id), until=until, count=count)


# --- the dashboard's change per source ----------------------------------------------------------


@dataclass
class SourceChange:
    slug: str
    name: str
    current: Decimal
    previous: Decimal

    @property
    def change(self) -> Decimal:
        return self.current - self.previous

    @property
    def percent(self) -> Decimal | None:
        if not self.previous:
            return None
        return (self.change * 100 / abs(self.previous)).quantize(Decimal("0.1"))


def source_changes(history: SourceHistory) -> list[SourceChange]:
    """Billed per source in the last period of `history` against the period before it."""
    if not history.periods:
        return []
    last = len(history.periods) - 1
    out = []
    for slug, name in history.sources:
        series = history.billed[slug]
        previous = series[last - 1] if last > 0 else ZERO
        if series[last] or previous:
            out.append(SourceChange(slug=slug, name=name, current=series[last], previous=previous))
    return sorted(out, key=lambda c: (-abs(c.change), c.slug))
