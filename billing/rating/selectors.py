"""Reads of rating: rates and subsidies in effect, stored usage files, what subsidies and free
allowances have already paid, and how rated and subsidised charges were worked out (statements)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db.models import Q, QuerySet, Sum

from billing.models import BillingPeriod, Charge, Source
from chargeback.money import ZERO

from .models import ChargeRating, ChargeSubsidy, Rate, Rerate, Subsidy, UsageFile
from .units import fiscal_year_start

# --- rates ------------------------------------------------------------------------------------


def rates_all(*, source: Source | None = None) -> QuerySet[Rate]:
    qs = Rate.objects.select_related("source")
    return qs.filter(source=source) if source is not None else qs


def rates_in_effect(*, at: str, source: Source | None = None) -> list[Rate]:
    """For every source, unit and tier, the rate that applies to month `at` (the newest from then or before)."""
    found: dict[tuple[int, str, str], Rate] = {}
    for rate in rates_all(source=source).filter(effective_from__lte=at).order_by("effective_from", "id"):
        found[(rate.source_id, rate.unit, rate.tier)] = rate
    return sorted(found.values(), key=lambda r: (r.source.slug, r.unit, r.tier))


RateTable = dict[tuple[str, str], Rate]


def rate_table(source: Source, period: str) -> RateTable:
    """The source's rates for `period`, by (unit, tier)."""
    return {(r.unit, r.tier): r for r in rates_in_effect(at=period, source=source)}


def rate_for(table: RateTable, unit: str, tier: str) -> Rate | None:
    """The rate of the same tier, else the rate without a tier."""
    return table.get((unit, tier)) or table.get((unit, ""))


def source_is_rated(source: Source) -> bool:
    """Sources with rates are rated: their subsidies are worked out when rating, not at import."""
    return Rate.objects.filter(source=source).exists()


# --- subsidies --------------------------------------------------------------------------------


def subsidies_all() -> QuerySet[Subsidy]:
    return Subsidy.objects.select_related("source")


def subsidies_in_effect(*, period: str, source: Source | None = None) -> list[Subsidy]:
    """Subsidies that apply in `period` (to `source`, when given), in the order they apply."""
    qs = (
        subsidies_all()
        .filter(effective_from__lte=period)
        .filter(Q(effective_until="") | Q(effective_until__gte=period))
    )
    if source is not None:
        qs = qs.filter(Q(source__isnull=True) | Q(source=source))
    return list(qs.order_by("position", "name", "id"))


def fiscal_year_first_month() -> int:
    return int(settings.OPENCHARGEBACK_FISCAL_YEAR_START)


def subsidy_paid(
    *, subsidies: Iterable[Subsidy], projects: Iterable[str], period: str, exclude_imports: Iterable[int] = ()
) -> dict[tuple[int, str], Decimal]:
    """What each subsidy has paid per project so far in `period`'s fiscal year: its months before
    `period`, and `period`'s other imports (not `exclude_imports`, which are being replaced).
    Rejected charges bill nothing, so what a subsidy paid on them does not count."""
    ids = [s.pk for s in subsidies if s.cap is not None]
    codes = sorted(set(projects))
    if not ids or not codes:
        return {}
    first = fiscal_year_start(period, fiscal_year_first_month())
    rows = (
        ChargeSubsidy.objects.filter(
            subsidy_id__in=ids,
            charge__project_code__in=codes,
            charge__period__period__gte=first,
            charge__period__period__lte=period,
        )
        .exclude(charge__review_state=Charge.ReviewState.REJECTED)
        .exclude(charge__import_run_id__in=list(exclude_imports))
        .values_list("subsidy_id", "charge__project_code")
        .annotate(paid=Sum("amount"))
        .order_by()
    )
    return {(sid, code): paid or ZERO for sid, code, paid in rows}


def free_used(
    *, source: Source, period: BillingPeriod | None, exclude_imports: Iterable[int] = ()
) -> dict[tuple[str, str, str], Decimal]:
    """Free allowance already used in the period by other imports, per (unit, tier of the rate, project)."""
    if period is None:
        return {}
    rows = (
        ChargeRating.objects.filter(charge__period=period, charge__source=source, free_quantity__gt=0)
        .exclude(charge__import_run_id__in=list(exclude_imports))
        .values_list("rate__unit", "rate__tier", "charge__project_code")
        .annotate(used=Sum("free_quantity"))
        .order_by()
    )
    return {(unit, tier, code): used or ZERO for unit, tier, code, used in rows}


# --- usage files and re-ratings ---------------------------------------------------------------


def usage_files_current(period: BillingPeriod | None = None) -> QuerySet[UsageFile]:
    """Usage files whose charges are in force (their import was not superseded), oldest first;
    of one period, or of every period."""
    from billing.models import Import

    qs = UsageFile.objects.filter(import_run__status=Import.Status.COMPLETED)
    if period is not None:
        qs = qs.filter(period=period)
    return qs.select_related("source", "period", "import_run").order_by("id")


def usage_file_same_name(*, source: Source, period: BillingPeriod, name: str) -> UsageFile | None:
    """The current usage file a file of this name replaces (same source, period and name)."""
    return usage_files_current(period).filter(source=source, original_name=name).last()


def usage_file_with_sha256(sha256: str) -> UsageFile | None:
    return usage_files_with_sha(sha256).first()


def usage_files_with_sha(sha256: str) -> QuerySet[UsageFile]:
    from billing.models import Import

    return (
        UsageFile.objects.filter(sha256=sha256, import_run__status=Import.Status.COMPLETED)
        .select_related("source", "period")
        .order_by("-id")
    )


def rerates_of(period: BillingPeriod | None = None) -> QuerySet[Rerate]:
    qs = Rerate.objects.select_related("period")
    return (qs.filter(period=period) if period is not None else qs).order_by("-created_at", "-id")


# --- how charges were worked out (statements) -------------------------------------------------


@dataclass
class ChargeExplanation:
    """What a rated or subsidised charge says about itself on a statement."""

    unit: str = ""
    unit_price: Decimal | None = None
    quantity: Decimal = ZERO
    reductions: list[tuple[str, Decimal]] = field(default_factory=list)  # (name, amount)


FREE_ALLOWANCE = "Free allowance"


def charge_explanations(period: BillingPeriod) -> dict[int, ChargeExplanation]:
    """Per charge id of the period: its rating (quantity, unit, price, free allowance) and the
    subsidies that paid part of it. Only charges that were rated or subsidised appear."""
    found: dict[int, ChargeExplanation] = defaultdict(ChargeExplanation)
    ratings = ChargeRating.objects.filter(charge__period=period).values_list(
        "charge_id", "unit", "unit_price", "quantity", "free_quantity", "free_amount"
    )
    for charge_id, unit, price, quantity, free_quantity, free_amount in ratings.iterator(chunk_size=10000):
        item = found[charge_id]
        item.unit, item.unit_price, item.quantity = unit, price, quantity
        if free_quantity:
            item.reductions.append((FREE_ALLOWANCE, free_amount))
    paid = (
        ChargeSubsidy.objects.filter(charge__period=period)
        .values_list("charge_id", "name", "amount")
        .order_by("charge_id", "id")
    )
    for charge_id, name, amount in paid.iterator(chunk_size=10000):
        found[charge_id].reductions.append((name, amount))
    return dict(found)
