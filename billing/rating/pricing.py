"""Usage priced by the rates in effect: quantity × unit price, less free allowances and subsidies.

Every amount is an exact Decimal: a quantity is rounded once, half-even, to 6 decimal places (the
precision a charge stores), prices have at most 4, so list cost = quantity × price is exact at
money's 10 places; subsidies are rounded half-even to those 10 places. The statements' cent rule
is the only rounding after that.

Who pays is worked out as the ingest will (billing/ingest/attribution.py): a Slurm account or a
quota line's project is first looked up as a mapped sub-account (a mapping for this source wins
over one for every source), then, for quota lines, as a project id. Free allowances and subsidies
apply per project, so usage nobody is known to pay for gets neither (it is imported unattributed
and flagged; map it and rate the period again).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from billing.models import AccountMapping, BillingPeriod, Project, Source
from chargeback.errors import Refused
from chargeback.money import ZERO

from . import selectors
from .models import Rate
from .subsidies import Applied, SubsidyLedger
from .units import STORAGE_UNITS, UNITS, decimal_of, unit_label


@dataclass
class UsageRow:
    """Usage of one resource in the period, before pricing: seconds of a compute unit, or the
    mean bytes stored (the storage unit is the rate's)."""

    sub_account: str
    tier: str
    resource_id: str
    service_name: str
    service_category: str
    measure: Fraction  # seconds (compute) or bytes (storage)
    unit: str = ""  # compute: core-hour or gpu-hour; storage: "" until priced
    may_be_project: bool = False  # storage: the sub-account may be a project id
    detail: dict[str, str] = field(default_factory=dict)  # extra Tags (jobs, samples)


@dataclass
class RatedRow:
    usage: UsageRow
    rate: Rate
    quantity: Decimal
    project_code: str = ""
    pi_email: str = ""
    by_project_tag: bool = False  # attributed through the project id (Tags), not a mapping
    free_quantity: Decimal = ZERO
    subsidies: list[Applied] = field(default_factory=list)

    @property
    def unit(self) -> str:
        return self.rate.unit

    @property
    def price(self) -> Decimal:
        return self.rate.price

    @property
    def resource_name(self) -> str:
        return f"{self.usage.resource_id} {unit_label(self.unit)}"

    @property
    def list_cost(self) -> Decimal:
        return self.quantity * self.price

    @property
    def free_amount(self) -> Decimal:
        return self.free_quantity * self.price

    @property
    def subsidy_total(self) -> Decimal:
        return sum((a.amount for a in self.subsidies), ZERO)

    @property
    def billed(self) -> Decimal:
        return self.list_cost - self.free_amount - self.subsidy_total


def _storage_rate(table: selectors.RateTable, tier: str) -> tuple[Rate | None, list[str]]:
    """The storage rate of a tier (else of no tier) and, when several units compete, their names."""
    for candidate in (tier, ""):
        found = [table[(unit, candidate)] for unit in STORAGE_UNITS if (unit, candidate) in table]
        if len(found) == 1:
            return found[0], []
        if found:
            return None, [r.unit for r in found]
    return None, []


def _rates(rows: list[UsageRow], source: Source, period: str) -> list[Rate]:
    """The rate of every row; refuses naming every (unit, tier) without one."""
    table = selectors.rate_table(source, period)
    rates: list[Rate] = []
    missing: set[tuple[str, str]] = set()
    ambiguous: set[tuple[str, tuple[str, ...]]] = set()
    for row in rows:
        if row.unit:
            rate = selectors.rate_for(table, row.unit, row.tier)
            if rate is None:
                missing.add((row.unit, row.tier))
        else:
            rate, competing = _storage_rate(table, row.tier)
            if competing:
                ambiguous.add((row.tier, tuple(competing)))
            elif rate is None:
                missing.add(("/".join(STORAGE_UNITS), row.tier))
        rates.append(rate)  # type: ignore[arg-type]
    if ambiguous:
        detail = "; ".join(f"tier {t or '(any)'}: {', '.join(u)}" for t, u in sorted(ambiguous))
        raise Refused(
            f"{source.slug} has storage rates in several units for the same tier in {period} ({detail})"
        )
    if missing:
        detail = ", ".join(
            f"{unit} on tier {tier!r}" if tier else f"{unit} (no tier)" for unit, tier in sorted(missing)
        )
        raise Refused(
            f"no rate for {source.slug} in {period}: {detail}; add with "
            f"`openchargeback rates add {source.slug} UNIT PRICE --tier T --from {period}` (or without --tier for "
            "every tier); nothing was rated"
        )
    return rates


def _payers(rows: list[UsageRow], source: Source) -> dict[str, tuple[str, str, bool]]:
    """sub-account -> (project id, PI email, by project tag), for those someone pays for."""
    names = sorted({r.sub_account for r in rows})
    mapped: dict[str, tuple[str, str, bool]] = {}
    mappings = (
        AccountMapping.objects.filter(sub_account_id__in=names)
        .filter(source__isnull=True)
        .values_list("sub_account_id", "project__project_id", "project__pi__email")
    )
    for name, code, email in mappings:
        mapped[name] = (code, email, False)
    for name, code, email in AccountMapping.objects.filter(
        sub_account_id__in=names, source=source
    ).values_list("sub_account_id", "project__project_id", "project__pi__email"):
        mapped[name] = (code, email, False)  # a mapping for this source wins
    candidates = sorted({r.sub_account for r in rows if r.may_be_project and r.sub_account not in mapped})
    for code, email in Project.objects.filter(project_id__in=candidates).values_list(
        "project_id", "pi__email"
    ):
        mapped[code] = (code, email, True)
    return mapped


def price_usage(
    rows: list[UsageRow], *, source: Source, period: str, replaces: list[int] | tuple[int, ...] = ()
) -> list[RatedRow]:
    """Price usage rows with the rates, free allowances and subsidies in effect in `period`.

    `replaces`: imports the result will supersede; what they used of free allowances and subsidy
    caps is given back first.
    """
    rates = _rates(rows, source, period)
    payers = _payers(rows, source)
    rated: list[RatedRow] = []
    for row, rate in zip(rows, rates, strict=True):
        unit = UNITS[rate.unit]
        quantity = decimal_of(row.measure / (unit.seconds or unit.bytes))
        if quantity <= 0:
            continue
        code, email, by_tag = payers.get(row.sub_account, ("", "", False))
        rated.append(RatedRow(row, rate, quantity, code, email, by_tag))
    rated.sort(key=lambda r: (r.project_code, r.usage.resource_id, r.unit))

    period_obj = BillingPeriod.objects.filter(period=period).first()
    _take_free_allowances(rated, source, period_obj, replaces)
    subsidies = selectors.subsidies_in_effect(period=period, source=source)
    if subsidies:
        paid = selectors.subsidy_paid(
            subsidies=subsidies,
            projects=[r.project_code for r in rated if r.project_code],
            period=period,
            exclude_imports=replaces,
        )
        ledger = SubsidyLedger(subsidies, paid)
        for item in rated:
            item.subsidies = ledger.apply(
                billed=item.list_cost - item.free_amount,
                project_code=item.project_code,
                pi_email=item.pi_email,
                tier=item.usage.tier,
            )
    return rated


def _take_free_allowances(
    rated: list[RatedRow], source: Source, period: BillingPeriod | None, replaces: list[int] | tuple[int, ...]
) -> None:
    """Each project's free allowance per rate comes off its usage of that rate, in resource order;
    what the period's other imports already used of it counts."""
    used = selectors.free_used(source=source, period=period, exclude_imports=replaces)
    left: dict[tuple[str, str, str], Decimal] = defaultdict(lambda: ZERO)
    seen: set[tuple[str, str, str]] = set()
    for row in rated:
        if not row.project_code or not row.rate.free_quantity:
            continue
        key = (row.rate.unit, row.rate.tier, row.project_code)
        if key not in seen:
            seen.add(key)
            left[key] = max(row.rate.free_quantity - used.get(key, ZERO), ZERO)
        row.free_quantity = min(row.quantity, left[key])
        left[key] -= row.free_quantity
