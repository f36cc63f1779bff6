"""Every query of the PI portal, and the object-level authorisation with it.

A user's `PortalScope` says which statements and charges they may see: all of their own PI's
(when the user is a PI), and for each delegation the granting PI's statements and charges of that
one project. Every portal query starts from the scope, so an object outside it is simply not found
(the views answer 404, never 403: nothing is confirmed to exist). Statements and charges are
matched on (PI, project id), the key statements are built on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum

from accounts.models import Delegation
from billing.models import PI, BillingPeriod, Charge, Project, Source
from billing.selectors import BILLABLE_STATES
from chargeback.money import ZERO
from statements.models import Statement
from statements.selectors import statement_totals_by_period

NO_PROJECT = "none"  # the portal's key for a PI's charges without a project


# --- the portal's scope ---------------------------------------------------------------------


@dataclass(frozen=True)
class PortalScope:
    """What one user may see in the portal."""

    user_id: int | None
    own_pi: PI | None = None
    # Delegations: granting PI id → project ids (codes) the user may see of that PI.
    delegated: dict[int, frozenset[str]] = field(default_factory=dict)
    # Project pk → the PIs that delegated it to the user.
    delegated_projects: dict[int, frozenset[int]] = field(default_factory=dict)
    delegating_pis: dict[int, PI] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return self.own_pi is None and not self.delegated

    def q(self, pi_field: str = "pi_id", code_field: str = "project_code") -> Q:
        """The rows of statements or charges in the scope."""
        q = Q(pk__in=[])
        if self.own_pi is not None:
            q |= Q(**{pi_field: self.own_pi.pk})
        for pi_id, codes in sorted(self.delegated.items()):
            q |= Q(**{pi_field: pi_id, f"{code_field}__in": sorted(codes)})
        return q

    def shared_by(self, pi_id: int) -> PI | None:
        """The PI who shared this row's data, or None for the user's own."""
        if self.own_pi is not None and pi_id == self.own_pi.pk:
            return None
        return self.delegating_pis.get(pi_id)


def portal_scope(user: Any) -> PortalScope:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return PortalScope(user_id=None)
    own_pi = PI.objects.filter(user=user).first()
    delegated: dict[int, set[str]] = defaultdict(set)
    projects: dict[int, set[int]] = defaultdict(set)
    pis: dict[int, PI] = {}
    for delegation in Delegation.objects.filter(delegate=user).select_related("pi", "project"):
        delegated[delegation.pi_id].add(delegation.project.project_id)
        projects[delegation.project_id].add(delegation.pi_id)
        pis[delegation.pi_id] = delegation.pi
    return PortalScope(
        user_id=user.pk,
        own_pi=own_pi,
        delegated={k: frozenset(v) for k, v in delegated.items()},
        delegated_projects={k: frozenset(v) for k, v in projects.items()},
        delegating_pis=pis,
    )


def portal_statements(scope: PortalScope) -> QuerySet[Statement]:
    """Every statement version the scope may see (current and superseded)."""
    return Statement.objects.filter(scope.q()).select_related("period", "project")


def portal_statement(scope: PortalScope, pk: int) -> Statement | None:
    return portal_statements(scope).filter(pk=pk).first()


def portal_statement_versions(scope: PortalScope, statement: Statement) -> list[Statement]:
    """The versions of a statement's number the scope may see, newest first."""
    return list(
        portal_statements(scope)
        .filter(period_id=statement.period_id, sequence=statement.sequence)
        .order_by("-version")
    )


@dataclass
class StatementGroup:
    """The versions of one statement number: the current one (None if withdrawn) and the older ones."""

    current: Statement | None
    superseded: list[Statement]

    @property
    def latest(self) -> Statement:
        return self.current or self.superseded[0]


@dataclass
class PeriodStatements:
    period: BillingPeriod
    groups: list[StatementGroup]
    list_total: Decimal = ZERO
    discount_total: Decimal = ZERO
    billed_total: Decimal = ZERO
    currency: str = ""


def _grouped(statements: Iterable[Statement]) -> list[PeriodStatements]:
    by_period: dict[int, dict[int, list[Statement]]] = defaultdict(lambda: defaultdict(list))
    periods: dict[int, BillingPeriod] = {}
    for statement in statements:
        periods[statement.period_id] = statement.period
        by_period[statement.period_id][statement.sequence].append(statement)
    out = []
    for period_id, numbers in by_period.items():
        groups = []
        for versions in numbers.values():
            versions.sort(key=lambda s: -s.version)
            current = next((s for s in versions if s.is_current), None)
            groups.append(StatementGroup(current, [s for s in versions if s is not current]))
        groups.sort(key=lambda g: (g.latest.project_code, g.latest.number))
        currents = [g.current for g in groups if g.current is not None]
        out.append(
            PeriodStatements(
                period=periods[period_id],
                groups=groups,
                list_total=sum((s.list_total for s in currents), ZERO),
                discount_total=sum((s.discount_total for s in currents), ZERO),
                billed_total=sum((s.billed_total for s in currents), ZERO),
                currency=currents[0].currency if currents else (groups[0].latest.currency if groups else ""),
            )
        )
    out.sort(key=lambda p: p.period.period, reverse=True)
    return out


def portal_periods(scope: PortalScope) -> list[PeriodStatements]:
    """The periods with statements the scope may see, newest first, each with its statements."""
    if scope.is_empty:
        return []
    return _grouped(portal_statements(scope).order_by("period__period", "sequence", "-version"))


@dataclass
class ProjectCharges:
    """One (PI, project) of a period as the charges say, for the period page."""

    key: str  # project pk, or NO_PROJECT
    project_code: str
    project_name: str
    pi: PI
    shared_by: PI | None
    charges: int
    list_total: Decimal
    billed_total: Decimal
    held_back: int

    @property
    def discount_total(self) -> Decimal:
        return self.list_total - self.billed_total


@dataclass
class PeriodView:
    period: BillingPeriod
    statements: PeriodStatements | None
    projects: list[ProjectCharges]


def portal_period(scope: PortalScope, period: str) -> PeriodView | None:
    """A period's statements and per-project charge totals in the scope; None when the scope has
    neither (the period page is then not found)."""
    period_obj = BillingPeriod.objects.filter(period=period).first()
    if period_obj is None or scope.is_empty:
        return None
    grouped = _grouped(portal_statements(scope).filter(period=period_obj).order_by("sequence", "-version"))
    query = (
        Charge.objects.filter(period=period_obj)
        .filter(scope.q())
        .exclude(review_state=Charge.ReviewState.REJECTED)
        .values("pi_id", "project_code")
        .annotate(
            n=Count("id"),
            list_total=Sum("list_cost", filter=Q(review_state__in=BILLABLE_STATES)),
            billed_total=Sum("billed_cost", filter=Q(review_state__in=BILLABLE_STATES)),
            held=Count("id", filter=Q(review_state=Charge.ReviewState.FLAGGED)),
        )
        .order_by("project_code")
    )
    rows: list[dict[str, Any]] = [dict(row) for row in query]
    if not grouped and not rows:
        return None
    pis = {pi.pk: pi for pi in PI.objects.filter(pk__in={r["pi_id"] for r in rows})}
    projects = {
        p.project_id: p
        for p in Project.objects.filter(project_id__in={r["project_code"] for r in rows if r["project_code"]})
    }
    out = []
    for row in rows:
        project = projects.get(row["project_code"])
        if row["project_code"] and project is None:
            continue  # a project id without a project row cannot be addressed; its statement still shows
        out.append(
            ProjectCharges(
                key=str(project.pk) if project else NO_PROJECT,
                project_code=row["project_code"],
                project_name=project.name if project else "",
                pi=pis[row["pi_id"]],
                shared_by=scope.shared_by(row["pi_id"]),
                charges=row["n"],
                list_total=row["list_total"] or ZERO,
                billed_total=row["billed_total"] or ZERO,
                held_back=row["held"],
            )
        )
    return PeriodView(period=period_obj, statements=grouped[0] if grouped else None, projects=out)


@dataclass
class ProjectAccess:
    """A project the scope may see in one period, and whose charges of it (which PIs)."""

    key: str
    project: Project | None
    project_code: str
    pi_ids: list[int]
    shared_by: list[PI]

    @property
    def label(self) -> str:
        return self.project_code or "(no project)"


def portal_project(scope: PortalScope, key: str, period: BillingPeriod) -> ProjectAccess | None:
    """The project `key` (a project pk, or NO_PROJECT for the user's own charges without a
    project) if the scope may see it in this period; None otherwise."""
    if scope.is_empty:
        return None
    if key == NO_PROJECT:
        if scope.own_pi is None:
            return None
        return ProjectAccess(key=key, project=None, project_code="", pi_ids=[scope.own_pi.pk], shared_by=[])
    if not key.isdigit():
        return None
    project = Project.objects.filter(pk=int(key)).select_related("pi").first()
    if project is None:
        return None
    code = project.project_id
    pi_ids: list[int] = []
    own = scope.own_pi
    if own is not None and (
        project.pi_id == own.pk
        or Statement.objects.filter(period=period, pi=own, project_code=code).exists()
        or Charge.objects.filter(period=period, pi=own, project_code=code).exists()
    ):
        pi_ids.append(own.pk)
    delegating = sorted(scope.delegated_projects.get(project.pk, ()))
    pi_ids += [pi_id for pi_id in delegating if pi_id not in pi_ids]
    if not pi_ids:
        return None
    return ProjectAccess(
        key=key,
        project=project,
        project_code=code,
        pi_ids=pi_ids,
        shared_by=[scope.delegating_pis[p] for p in delegating if own is None or p != own.pk],
    )


CHARGE_STATES = {
    "billed": ("Billed (approved and not flagged)", BILLABLE_STATES),
    "held": ("Held back for review", (Charge.ReviewState.FLAGGED,)),
    "rejected": ("Rejected (not billed)", (Charge.ReviewState.REJECTED,)),
    "all": ("All charges", tuple(Charge.ReviewState.values)),
}


@dataclass
class ChargeFilters:
    state: str = "billed"
    source: str = ""
    service: str = ""
    category: str = ""
    search: str = ""


def portal_charges(
    access: ProjectAccess, period: BillingPeriod, filters: ChargeFilters | None = None
) -> QuerySet[Charge]:
    """The charges of a project access in a period, filtered, in a stable order."""
    filters = filters or ChargeFilters()
    qs = Charge.objects.filter(period=period, pi_id__in=access.pi_ids, project_code=access.project_code)
    qs = qs.filter(review_state__in=CHARGE_STATES.get(filters.state, CHARGE_STATES["billed"])[1])
    if filters.source:
        qs = qs.filter(source__slug=filters.source)
    if filters.service:
        qs = qs.filter(service_name=filters.service)
    if filters.category:
        qs = qs.filter(charge_category=filters.category)
    if filters.search:
        qs = qs.filter(
            Q(resource_id__icontains=filters.search)
            | Q(resource_name__icontains=filters.search)
            | Q(sku_id__icontains=filters.search)
            | Q(region__icontains=filters.search)
        )
    return qs.select_related("source").order_by(
        "source__slug", "service_name", "resource_id", "resource_name", "id"
    )


@dataclass
class ChargeTotals:
    count: int = 0
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO

    @property
    def discount_total(self) -> Decimal:
        return self.list_total - self.billed_total


def charge_totals(charges: QuerySet[Charge]) -> ChargeTotals:
    """Exact sums (MoneyField sums are exact on SQLite and PostgreSQL)."""
    row = charges.order_by().aggregate(
        n=Count("id"), list_total=Sum("list_cost"), billed_total=Sum("billed_cost")
    )
    return ChargeTotals(row["n"], row["list_total"] or ZERO, row["billed_total"] or ZERO)


@dataclass
class FilterChoices:
    sources: list[tuple[str, str]]
    services: list[str]
    categories: list[str]


def charge_filter_choices(access: ProjectAccess, period: BillingPeriod) -> FilterChoices:
    """The values the filters offer: those of the project's charges in the period."""
    base = Charge.objects.filter(
        period=period, pi_id__in=access.pi_ids, project_code=access.project_code
    ).order_by()
    source_ids = set(base.values_list("source_id", flat=True).distinct())
    sources = [
        (s.slug, s.display_name or s.slug) for s in Source.objects.filter(pk__in=source_ids).order_by("slug")
    ]
    services = sorted(set(base.values_list("service_name", flat=True).distinct()) - {""})
    categories = sorted(set(base.values_list("charge_category", flat=True).distinct()) - {""})
    return FilterChoices(sources=sources, services=services, categories=categories)


# --- spend over time ------------------------------------------------------------------------


@dataclass
class SpendPoint:
    period: str
    list_total: Decimal
    billed_total: Decimal

    @property
    def discount_total(self) -> Decimal:
        return self.list_total - self.billed_total


def _previous_month(period: str) -> str:
    year, month = (int(p) for p in period.split("-"))
    return f"{year - 1}-12" if month == 1 else f"{year}-{month - 1:02d}"


def portal_spend(scope: PortalScope, *, periods: int = 12) -> list[SpendPoint]:
    """List price and amount billed per period over the last `periods` months ending with the
    latest period that has a statement in the scope (current statements: what was billed)."""
    if scope.is_empty:
        return []
    current = portal_statements(scope).exclude(state=Statement.State.SUPERSEDED)
    latest = current.order_by("-period__period").values_list("period__period", flat=True).first()
    if latest is None:
        return []
    months = [latest]
    while len(months) < periods:
        months.append(_previous_month(months[-1]))
    months.reverse()
    totals = statement_totals_by_period(current.filter(period__period__in=months))
    return [
        SpendPoint(
            period=m,
            list_total=totals[m].list_total if m in totals else ZERO,
            billed_total=totals[m].billed_total if m in totals else ZERO,
        )
        for m in months
    ]


# --- delegations ----------------------------------------------------------------------------


def pi_projects(pi: PI) -> QuerySet[Project]:
    """The projects a PI owns (those they may delegate)."""
    return Project.objects.filter(pi=pi).order_by("project_id")


@dataclass
class DelegateRow:
    user: Any
    delegations: list[Delegation]


def pi_delegates(pi: PI) -> list[DelegateRow]:
    """The PI's delegates, each with the delegations they hold, by email."""
    rows: dict[int, DelegateRow] = {}
    for delegation in (
        Delegation.objects.filter(pi=pi)
        .select_related("delegate", "project")
        .order_by("delegate__username", "project__project_id")
    ):
        rows.setdefault(delegation.delegate_id, DelegateRow(delegation.delegate, [])).delegations.append(
            delegation
        )
    return list(rows.values())
