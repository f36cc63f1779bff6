"""Drafts: what each statement of a period should say, worked out from its billable charges under
the cent rule (lines, details, the content hash), before anything is issued."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import groupby
from operator import itemgetter
from typing import Any

from billing.models import PI, BillingPeriod, Charge, Project, Source
from billing.rating import selectors as rating_selectors
from billing.selectors import BILLABLE_STATES, billing_settings_get
from chargeback.money import ZERO, round_currency

# Charge categories that stay on their own (negative) lines instead of joining the usage line.
SEPARATE_KINDS = {"credit": "Credit", "adjustment": "Adjustment"}
_KIND_ORDER = {"": 0, "Credit": 1, "Adjustment": 2}


def line_kind(charge_category: str) -> str:
    return SEPARATE_KINDS.get((charge_category or "").strip().lower(), "")


# --- drafts: what a statement should say ----------------------------------------------------


@dataclass
class DraftLine:
    source_id: int
    source_slug: str
    source_name: str
    service_name: str
    kind: str
    charge_count: int = 0
    list_exact: Decimal = ZERO
    billed_exact: Decimal = ZERO
    list_amount: Decimal = ZERO
    amount: Decimal = ZERO
    # Rated usage (quantity @ unit price) and the discount by name: billing.rating.selectors.LineExplanation.
    rating: dict[str, Any] = field(default_factory=dict)

    @property
    def discount_amount(self) -> Decimal:
        return self.list_amount - self.amount


@dataclass
class StatementDraft:
    """One PI × project of a period as the charges say it should be billed."""

    pi_id: int
    pi_email: str
    project_code: str
    currency: str
    pi_name: str = ""
    pi_department: str = ""
    project_id: int | None = None
    project_name: str = ""
    fund_org: str = ""
    cost_center: str = ""
    reference_1: str = ""
    reference_2: str = ""
    lines: list[DraftLine] = field(default_factory=list)
    details: list[list[Any]] = field(default_factory=list)
    charge_count: int = 0
    held_back_count: int = 0
    held_back_exact: Decimal = ZERO
    rejected_count: int = 0
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO
    content_hash: str = ""

    @property
    def key(self) -> tuple[int, str]:
        return (self.pi_id, self.project_code)

    @property
    def discount_total(self) -> Decimal:
        return self.list_total - self.billed_total

    @property
    def held_back_amount(self) -> Decimal:
        return round_currency(self.held_back_exact, self.currency)


@dataclass
class HeldBack:
    """Flagged charges of a PI × project that has nothing billable (no statement to note them on)."""

    pi_email: str
    project_code: str
    count: int
    billed: Decimal


@dataclass
class PeriodDrafts:
    period: BillingPeriod
    currency: str
    drafts: dict[tuple[int, str], StatementDraft] = field(default_factory=dict)
    held_back_count: int = 0
    held_back_billed: Decimal = ZERO
    held_back_elsewhere: list[HeldBack] = field(default_factory=list)
    rejected_count: int = 0
    rejected_billed: Decimal = ZERO
    unbillable_count: int = 0  # ok/approved charges without a PI: nobody to bill
    unbillable_billed: Decimal = ZERO


class _Group:
    __slots__ = ("charges", "fund_orgs", "held_count", "held_exact", "references", "rejected")

    def __init__(self) -> None:
        self.charges: list[tuple] = []
        self.held_count = 0
        self.held_exact = ZERO
        self.rejected = 0
        self.fund_orgs: dict[str, int] = defaultdict(int)
        self.references: dict[str, dict[str, int]] = {
            "cost_center": defaultdict(int),
            "reference_1": defaultdict(int),
            "reference_2": defaultdict(int),
        }


def _most_common(counts: dict[str, int]) -> str:
    values = [(n, v) for v, n in counts.items() if v]
    if not values:
        return ""
    return min(values, key=lambda item: (-item[0], item[1]))[1]


def _dec(value: Decimal | None) -> str:
    return format(value if value is not None else ZERO, "f")


_CHARGE_FIELDS = (
    "pi_id",
    "project_code",
    "review_state",
    "source_id",
    "service_name",
    "charge_category",
    "resource_id",
    "resource_name",
    "quantity",
    "unit",
    "list_cost",
    "billed_cost",
    "fund_org",
    "cost_center",
    "reference_1",
    "reference_2",
    "id",
)


def statement_drafts(period: BillingPeriod, *, pi_email: str | None = None) -> PeriodDrafts:
    """Every statement the period's charges call for: lines per source × service (credits and
    adjustments apart) from `ok` + `approved` charges, each the exact sum of its charges rounded
    once, half-up, to the currency's minor unit; totals are sums of the rounded lines. Flagged
    charges are held back (recorded, not billed); rejected ones are excluded."""
    currency = billing_settings_get().currency_code
    result = PeriodDrafts(period=period, currency=currency)
    charges = Charge.objects.filter(period=period)
    if pi_email:
        charges = charges.filter(pi__email=pi_email.strip().lower())
    # Read in PI × project order, one statement's charges at a time: only the drafts stay in memory,
    # not every charge of a million-charge period.
    pis = {pi.pk: pi for pi in PI.objects.filter(pk__in=charges.values("pi_id"))}
    projects = {
        p.project_id: p for p in Project.objects.filter(project_id__in=charges.values("project_code"))
    }
    sources = {s.pk: s for s in Source.objects.all()}
    explanations = rating_selectors.charge_explanations(period)
    billable = set(BILLABLE_STATES)
    found: list[tuple[tuple[str, str], StatementDraft | HeldBack]] = []
    rows = charges.values_list(*_CHARGE_FIELDS).order_by("pi_id", "project_code").iterator(chunk_size=10000)
    for (pi_id, code), chunk in groupby(rows, key=itemgetter(0, 1)):
        group = _Group()
        for row in chunk:
            state = row[2]
            if state == Charge.ReviewState.REJECTED:
                result.rejected_count += 1
                result.rejected_billed += row[11]
                group.rejected += 1
            elif state == Charge.ReviewState.FLAGGED:
                result.held_back_count += 1
                result.held_back_billed += row[11]
                group.held_count += 1
                group.held_exact += row[11]
            elif state not in billable:
                continue
            elif pi_id is None:
                result.unbillable_count += 1
                result.unbillable_billed += row[11]
            else:
                group.charges.append(row)
                group.fund_orgs[row[12]] += 1
                for name, value in zip(
                    ("cost_center", "reference_1", "reference_2"), row[13:16], strict=True
                ):
                    group.references[name][value] += 1
        pi = pis.get(pi_id) if pi_id is not None else None
        order = (pi.email if pi else "", code)
        if not group.charges:
            if group.held_count:
                found.append(
                    (order, HeldBack(pi.email if pi else "", code, group.held_count, group.held_exact))
                )
            continue
        assert pi is not None
        project = projects.get(code) if code else None
        draft = StatementDraft(
            pi_id=pi.pk,
            pi_email=pi.email,
            project_code=code,
            currency=currency,
            pi_name=pi.name,
            pi_department=pi.department,
            project_id=project.pk if project else None,
            project_name=project.name if project else "",
            fund_org=_most_common(group.fund_orgs) or (project.fund_org if project else ""),
            cost_center=_most_common(group.references["cost_center"])
            or (project.cost_center if project else ""),
            reference_1=_most_common(group.references["reference_1"])
            or (project.reference_1 if project else ""),
            reference_2=_most_common(group.references["reference_2"])
            or (project.reference_2 if project else ""),
            held_back_count=group.held_count,
            held_back_exact=group.held_exact,
            rejected_count=group.rejected,
        )
        _fill_lines_and_details(draft, group.charges, sources, explanations)
        draft.content_hash = _content_hash(draft)
        found.append((order, draft))

    for _, item in sorted(found, key=itemgetter(0)):
        if isinstance(item, HeldBack):
            result.held_back_elsewhere.append(item)
        else:
            result.drafts[item.key] = item
    return result


def _fill_lines_and_details(
    draft: StatementDraft,
    charges: list[tuple],
    sources: dict[int, Source],
    explanations: dict[int, rating_selectors.ChargeExplanation],
) -> None:
    lines: dict[tuple[int, str, str], DraftLine] = {}
    explained: dict[tuple[int, str, str], rating_selectors.LineExplanation] = {}
    details: dict[tuple[int, str, str, str, str], list[Any]] = {}
    for row in charges:
        source_id, service, category = row[3], row[4], row[5]
        resource_id, resource_name, quantity, unit, list_cost, billed = row[6:12]
        kind = line_kind(category)
        line = lines.get((source_id, service, kind))
        if line is None:
            source = sources[source_id]
            line = lines[(source_id, service, kind)] = DraftLine(
                source_id=source_id,
                source_slug=source.slug,
                source_name=source.display_name or source.slug,
                service_name=service,
                kind=kind,
            )
        line.charge_count += 1
        line.list_exact += list_cost
        line.billed_exact += billed
        explanation = explanations.get(row[16])
        if explanation is not None:
            explained.setdefault((source_id, service, kind), rating_selectors.LineExplanation()).add(
                explanation
            )
        detail = details.get((source_id, service, kind, resource_id, resource_name))
        if detail is None:
            # [quantity, unit, list, billed, charges]; quantity None once units disagree.
            detail = details[(source_id, service, kind, resource_id, resource_name)] = [
                None,
                unit,
                ZERO,
                ZERO,
                0,
            ]
            detail[0] = quantity
        else:
            if detail[0] is not None and quantity is not None and detail[1] == unit:
                detail[0] += quantity
            else:
                detail[0] = None
        detail[2] += list_cost
        detail[3] += billed
        detail[4] += 1
    draft.charge_count = len(charges)
    for key, line in lines.items():
        line.list_amount = round_currency(line.list_exact, draft.currency)
        line.amount = round_currency(line.billed_exact, draft.currency)
        if key in explained:
            line.rating = explained[key].as_json(
                list_exact=line.list_exact,
                billed_exact=line.billed_exact,
                discount=line.discount_amount,
                currency=draft.currency,
            )
    draft.lines = sorted(
        lines.values(), key=lambda ln: (ln.source_name.lower(), ln.service_name.lower(), _KIND_ORDER[ln.kind])
    )
    draft.list_total = sum((ln.list_amount for ln in draft.lines), ZERO)
    draft.billed_total = sum((ln.amount for ln in draft.lines), ZERO)
    ordered = sorted(
        details.items(),
        key=lambda item: (
            sources[item[0][0]].display_name.lower(),
            item[0][1].lower(),
            _KIND_ORDER[item[0][2]],
            item[0][3],
            item[0][4],
        ),
    )
    draft.details = [
        [
            sources[key[0]].display_name or sources[key[0]].slug,
            key[1],
            key[2],
            key[3],
            key[4],
            None if value[0] is None else _dec(value[0].normalize()),
            value[1] if value[0] is not None else "",
            _dec(value[2]),
            _dec(value[3]),
            value[4],
        ]
        for key, value in ordered
    ]


def _content_hash(draft: StatementDraft) -> str:
    """Everything the statement says; equal hashes mean regeneration keeps the version."""
    document = {
        "pi": [draft.pi_email, draft.pi_name, draft.pi_department],
        "project": [draft.project_code, draft.project_name],
        "accounting": [draft.fund_org, draft.cost_center, draft.reference_1, draft.reference_2],
        "currency": draft.currency,
        "lines": [
            [
                ln.source_slug,
                ln.source_name,
                ln.service_name,
                ln.kind,
                ln.charge_count,
                _dec(ln.list_exact),
                _dec(ln.billed_exact),
                # Only lines that have one: statements issued before rating existed keep their hash.
                *([ln.rating] if ln.rating else []),
            ]
            for ln in draft.lines
        ],
        "details": draft.details,
        "held_back": [draft.held_back_count, _dec(draft.held_back_exact)],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
