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


def usage_file_with_sha256(sha256: str, *, source: Source, period: str) -> UsageFile | None:
    """The usage file in force with these bytes for this source and period (one sacct export may
    cover several months, each rated on its own)."""
    from billing.models import Import

    return (
        UsageFile.objects.filter(
            sha256=sha256, source=source, period__period=period, import_run__status=Import.Status.COMPLETED
        )
        .select_related("source", "period")
        .order_by("-id")
        .first()
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


class LineExplanation:
    """How one statement line (a source × service) was worked out: its rated usage per unit and
    price, and its discount split by name (free allowance, each subsidy, and any other discount
    such as a provider's), the parts adding up exactly to the line's rounded discount."""

    def __init__(self) -> None:
        self.usage: dict[tuple[str, Decimal], Decimal] = {}
        self.reductions: dict[str, Decimal] = {}

    def add(self, item: ChargeExplanation) -> None:
        if item.unit_price is not None:
            key = (item.unit, item.unit_price)
            self.usage[key] = self.usage.get(key, ZERO) + item.quantity
        for name, amount in item.reductions:
            self.reductions[name] = self.reductions.get(name, ZERO) + amount

    def as_json(
        self, *, list_exact: Decimal, billed_exact: Decimal, discount: Decimal, currency: str
    ) -> dict:
        """{"usage": [{quantity, unit, price, text}], "reductions": [{name, amount}]} with amounts
        rounded to the minor unit so that they add up to `discount` (largest remainder)."""
        if not self.usage and not self.reductions:
            return {}
        from .units import format_price, format_quantity, unit_label

        usage = [
            {
                "quantity": format(quantity.normalize(), "f"),
                "unit": unit,
                "price": format(price, "f"),
                "text": f"{format_quantity(quantity)} {unit_label(unit, quantity)} @ {format_price(price, currency)}",
            }
            for (unit, price), quantity in sorted(self.usage.items())
        ]
        parts = sorted(self.reductions.items(), key=lambda item: (item[0] != FREE_ALLOWANCE, item[0]))
        other = list_exact - billed_exact - sum(self.reductions.values(), ZERO)
        if other:
            parts.append((OTHER_DISCOUNT, other))
        amounts = split_rounded([amount for _, amount in parts], discount, currency)
        reductions = [
            {"name": name, "amount": format(amount, "f")}
            for (name, _), amount in zip(parts, amounts, strict=True)
            if amount
        ]
        return {"usage": usage, "reductions": reductions}


OTHER_DISCOUNT = "Other discount"


def split_rounded(parts: list[Decimal], total: Decimal, currency: str) -> list[Decimal]:
    """Each part rounded to the currency's minor unit, adjusted one unit at a time (largest
    remainders first) so that the rounded parts add up exactly to `total`."""
    from chargeback.money import minor_unit, round_currency

    unit = minor_unit(currency)
    rounded = [round_currency(p, currency) for p in parts]
    steps = int((total - sum(rounded, ZERO)) / unit)
    if not parts or not steps:
        return rounded
    direction = 1 if steps > 0 else -1
    # The parts whose rounding moved them furthest against the needed direction adjust first.
    order = sorted(range(len(parts)), key=lambda i: direction * (rounded[i] - parts[i]))
    for n in range(abs(steps)):
        rounded[order[n % len(order)]] += direction * unit
    return rounded


def how_calculated(ratings: Iterable[dict]) -> list[str]:
    """The short 'how this was calculated' note of a statement, from its lines' ratings (empty
    when no line was rated or subsidised)."""
    ratings = [r for r in ratings if r]
    if not ratings:
        return []
    names = {red["name"] for r in ratings for red in r.get("reductions", [])}
    subsidies = sorted(names - {FREE_ALLOWANCE, OTHER_DISCOUNT})
    sentences = []
    if any(r.get("usage") for r in ratings):
        sentences.append(
            "Rated usage is measured from the cluster's job accounting (core-hours: CPUs allocated × hours "
            "run; GPU-hours: GPUs allocated × hours run) and from storage reports (the month's average), and "
            "priced at the rate in effect for the month: quantity × unit price is the list price."
        )
    if FREE_ALLOWANCE in names:
        sentences.append("A free allowance per project per month comes off first.")
    if subsidies:
        sentences.append(
            f"{'Subsidies' if len(subsidies) > 1 else 'The subsidy'} ({', '.join(subsidies)}) then "
            f"{'each pay their' if len(subsidies) > 1 else 'pays its'} percentage of what remains, in a "
            "fixed order, up to any yearly cap per project; that part is paid for you."
        )
    sentences.append("The amount due is what is left; each line's discount is shown by name.")
    return sentences
