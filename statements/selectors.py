"""Reads of the statements app: what the statements of a period should say (drafts computed
from the charges under the cent rule), how they compare with what was issued, progress of
rendering and delivery, and why a period's statements do not allow finalizing."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from itertools import groupby
from operator import itemgetter
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from billing.models import PI, BillingPeriod, Charge, Project, Source
from billing.rating import selectors as rating_selectors
from billing.selectors import BILLABLE_STATES, billing_settings_get
from chargeback.errors import Refused
from chargeback.money import ZERO, format_money, round_currency

from .models import Delivery, Statement

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


# --- comparing drafts with what was issued --------------------------------------------------


@dataclass
class StatementChanges:
    """Drafts against current statements: what generate would do."""

    drafts: PeriodDrafts
    new: list[StatementDraft] = field(default_factory=list)
    changed: list[tuple[StatementDraft, Statement]] = field(default_factory=list)
    unchanged: list[tuple[StatementDraft, Statement]] = field(default_factory=list)
    withdrawn: list[Statement] = field(default_factory=list)  # current, but nothing billable any more

    @property
    def up_to_date(self) -> bool:
        return not (self.new or self.changed or self.withdrawn)


def current_statements(period: BillingPeriod, *, pi_email: str | None = None) -> QuerySet[Statement]:
    """The statements in force (issued or sent, not superseded), by number."""
    qs = Statement.objects.filter(period=period).exclude(state=Statement.State.SUPERSEDED)
    if pi_email:
        qs = qs.filter(pi__email=pi_email.strip().lower())
    return qs.order_by("sequence")


def statement_changes(period: BillingPeriod, *, pi_email: str | None = None) -> StatementChanges:
    drafts = statement_drafts(period, pi_email=pi_email)
    changes = StatementChanges(drafts=drafts)
    current = {(s.pi_id, s.project_code): s for s in current_statements(period, pi_email=pi_email)}
    for key, draft in drafts.drafts.items():
        existing = current.pop(key, None)
        if existing is None:
            changes.new.append(draft)
        elif existing.content_hash == draft.content_hash and existing.currency == draft.currency:
            changes.unchanged.append((draft, existing))
        else:
            changes.changed.append((draft, existing))
    changes.withdrawn = sorted(current.values(), key=lambda s: s.sequence)
    return changes


def period_statement_problems(period: BillingPeriod) -> list[str]:
    """Why the period's statements do not allow finalizing (empty when they are current):
    billable charges without a statement, statements out of date or without their PDF, and
    billable charges nobody can be billed for (no PI)."""
    changes = statement_changes(period)
    problems = []
    currency = changes.drafts.currency
    if changes.new:
        n = len(changes.new)
        problems.append(
            f"{n} PI × project{' has' if n == 1 else 's have'} billable charges but no statement; run generate"
        )
    stale = len(changes.changed) + len(changes.withdrawn)
    if stale:
        problems.append(
            f"{stale} statement{' is' if stale == 1 else 's are'} out of date "
            "(charges changed since generating); run generate"
        )
    unrendered = current_statements(period).filter(pdf="").count()
    if unrendered:
        problems.append(
            f"{unrendered} statement{' has' if unrendered == 1 else 's have'} no PDF yet; run generate"
        )
    if changes.drafts.unbillable_count:
        n = changes.drafts.unbillable_count
        problems.append(
            f"{n} billable charge{'' if n == 1 else 's'} ({format_money(changes.drafts.unbillable_billed, currency)}) "
            f"{'has' if n == 1 else 'have'} no PI to bill; correct the attribution or reject "
            f"{'it' if n == 1 else 'them'}"
        )
    return problems


# --- totals, versions, deliveries -----------------------------------------------------------


@dataclass
class StatementTotals:
    statements: int = 0
    pis: int = 0
    list_total: Decimal = ZERO
    discount_total: Decimal = ZERO
    billed_total: Decimal = ZERO
    held_back_amount: Decimal = ZERO
    unsent: int = 0
    without_pdf: int = 0


def statement_totals(statements: QuerySet[Statement]) -> StatementTotals:
    """Counts and exact sums over statements (rounded amounts, so Σ is the cent rule's total)."""
    row = statements.aggregate(
        n=Count("id"),
        pis=Count("pi", distinct=True),
        list_total=Sum("list_total"),
        discount_total=Sum("discount_total"),
        billed_total=Sum("billed_total"),
        held=Sum("held_back_amount"),
        unsent=Count("id", filter=Q(state=Statement.State.ISSUED)),
        without_pdf=Count("id", filter=Q(pdf="")),
    )
    return StatementTotals(
        statements=row["n"],
        pis=row["pis"],
        list_total=row["list_total"] or ZERO,
        discount_total=row["discount_total"] or ZERO,
        billed_total=row["billed_total"] or ZERO,
        held_back_amount=row["held"] or ZERO,
        unsent=row["unsent"],
        without_pdf=row["without_pdf"],
    )


def period_statement_totals(period: BillingPeriod) -> StatementTotals:
    """Totals of the period's statements in force: what its PIs are billed, under the cent rule."""
    return statement_totals(current_statements(period))


def statement_versions(statement: Statement) -> QuerySet[Statement]:
    """Every version of the statement's number, newest first."""
    return Statement.objects.filter(period_id=statement.period_id, sequence=statement.sequence).order_by(
        "-version"
    )


def statement_get(period: str, number: str, version: int | None = None) -> Statement:
    qs = Statement.objects.filter(period__period=period, number=number)
    found = qs.filter(version=version).first() if version else qs.order_by("-version").first()
    if found is None:
        raise Refused(f"no statement {number}{f' v{version}' if version else ''} in {period}")
    return found


def discount_percent(list_total: Decimal, discount: Decimal) -> Decimal | None:
    """Discount as a percentage of list (None when list is zero)."""
    if not list_total:
        return None
    return discount / list_total * 100


def format_percent(value: Decimal | None) -> str:
    """'15 %' (whole percent from 1 %, one decimal below, half-up)."""
    if value is None:
        return ""
    places = Decimal(1) if abs(value) >= 1 or value == 0 else Decimal("0.1")
    return f"{value.quantize(places, rounding=ROUND_HALF_UP)} %"


def sending_stale_before() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=settings.OPENCHARGEBACK_SENDING_STALE_SECONDS)


@dataclass
class Progress:
    renders: int = 0
    rendered: int = 0
    render_failed: int = 0
    deliveries: int = 0
    sent: int = 0
    failed: int = 0
    sending: int = 0

    @property
    def done(self) -> bool:
        return (
            self.rendered + self.render_failed >= self.renders and self.sent + self.failed >= self.deliveries
        )

    @property
    def total(self) -> int:
        return self.renders + self.deliveries

    @property
    def completed(self) -> int:
        return min(self.rendered + self.render_failed, self.renders) + min(
            self.sent + self.failed, self.deliveries
        )


def dispatch_progress(statement_ids: Iterable[int], delivery_ids: Iterable[int]) -> Progress:
    """How far rendering and sending of a dispatch has come (read from the database, so any
    number of workers, restarts included, report into the same figures)."""
    statement_ids, delivery_ids = list(statement_ids), list(delivery_ids)
    progress = Progress(renders=len(statement_ids), deliveries=len(delivery_ids))
    if statement_ids:
        row = Statement.objects.filter(pk__in=statement_ids).aggregate(
            rendered=Count("id", filter=~Q(pdf="")),
            failed=Count("id", filter=Q(pdf="") & ~Q(render_error="")),
        )
        progress.rendered, progress.render_failed = row["rendered"], row["failed"]
    if delivery_ids:
        counts = dict(
            Delivery.objects.filter(pk__in=delivery_ids)
            .values_list("state")
            .annotate(n=Count("id"))
            .order_by()
            .values_list("state", "n")
        )
        progress.sent = counts.get(Delivery.State.SENT, 0)
        progress.failed = counts.get(Delivery.State.FAILED, 0)
        progress.sending = counts.get(Delivery.State.SENDING, 0)
    return progress


def deliveries_for(period: BillingPeriod, *, pi_email: str | None = None) -> QuerySet[Delivery]:
    qs = Delivery.objects.filter(period=period)
    if pi_email:
        qs = qs.filter(pi__email=pi_email.strip().lower())
    return qs.select_related("pi").order_by("pi__email", "-id")


def period_statements_summary(period: BillingPeriod) -> dict[str, Any]:
    """The current statements of a period by state, with their total (the admin's period page)."""
    rows = (
        Statement.objects.filter(period=period)
        .exclude(state=Statement.State.SUPERSEDED)
        .values_list("state")
        .annotate(n=Count("id"), total=Sum("billed_total"))
        .order_by("state")
    )
    states = [{"state": state, "count": n, "total": total or ZERO} for state, n, total in rows]
    try:
        url = reverse("admin:statements_statement_changelist") + f"?period__id__exact={period.pk}"
    except NoReverseMatch:
        url = ""
    return {
        "states": states,
        "count": sum(s["count"] for s in states),
        "total": sum((s["total"] for s in states), ZERO),
        "url": url,
    }
