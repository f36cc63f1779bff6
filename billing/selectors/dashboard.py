"""The dashboard: period totals, rankings (cached), billed by source over time."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

from django.db.models import Count, Sum

from chargeback.money import ZERO

from ..models import PI, BillingPeriod, Charge, Import
from .charges import charges_in_period
from .totals import PeriodTotals, add_review_totals, periods_amount_totals


def period_default() -> BillingPeriod | None:
    """The period to show when none is chosen: the latest with a completed import, else the latest."""
    latest_imported = (
        BillingPeriod.objects.filter(imports__status=Import.Status.COMPLETED).order_by("-period").first()
    )
    return latest_imported or BillingPeriod.objects.order_by("-period").first()


def period_totals(period: BillingPeriod) -> PeriodTotals:
    """The period's totals (billing.selectors.totals.periods_totals: the one computation).

    Cached under the period's fingerprint (see period_fingerprint), so a changed period is
    recomputed on its next read and an unchanged one costs two small queries. The part a review
    decision leaves as it is (the charges counted, list and billed) is cached apart, under the
    fingerprint of amounts: after a decision only the flagged and rejected charges are summed again
    (through the (period, review state, billed) index), not the period's million charges counted."""
    from django.core.cache import cache

    key = f"openchargeback:totals:v2:{period.pk}:{period_fingerprint(period)}"
    totals = cache.get(key)
    if totals is None:
        amounts_key = (
            f"openchargeback:amounts:v1:{period.pk}:{period_fingerprint(period, attribution_only=True)}"
        )
        totals = cache.get(amounts_key)
        if totals is None:
            totals = periods_amount_totals([period])[period.pk]
            cache.set(amounts_key, totals, RANKINGS_CACHE_SECONDS)
        totals = replace(totals, by_source=list(totals.by_source))
        add_review_totals({period.pk: totals})
        cache.set(key, totals, RANKINGS_CACHE_SECONDS)
    totals.period = period
    return totals


@dataclass
class RankedTotal:
    key: str  # PI email or project id ("" for unattributed)
    label: str  # PI name, or the project's PI
    charges: int = 0
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO


@dataclass
class PeriodRankings:
    """Who the money of a period goes to: counts, top PIs and projects, services (cached)."""

    pis: int = 0
    projects: int = 0
    unattributed_charges: int = 0
    unattributed_billed: Decimal = ZERO
    top_pis: list[RankedTotal] = field(default_factory=list)
    top_projects: list[RankedTotal] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    seconds: float = 0.0


def period_fingerprint(period: BillingPeriod, *, attribution_only: bool = False) -> str:
    """Changes whenever the period's charges may have changed: an import started, finished or was
    superseded, or a review decision, correction or re-evaluation was logged (two small queries).

    `attribution_only`: changes only when the amounts or the attribution (PI, project) of the
    charges may have changed: imports, corrections and credits, not approvals, rejections or
    re-flagging, which change review states alone (the rankings do not depend on them)."""
    import hashlib

    from ..models import ReviewLog

    imports = list(Import.objects.filter(period=period).order_by("id").values_list("id", "status"))
    logs = ReviewLog.objects.filter(period=period)
    if attribution_only:
        logs = logs.filter(action__in=[ReviewLog.Action.CORRECT, ReviewLog.Action.CREDIT])
    last_log = logs.order_by("-created_at").values_list("id", "created_at").first()
    state = repr((period.pk, str(period.created_at), imports, last_log and (last_log[0], str(last_log[1]))))
    return hashlib.sha256(state.encode()).hexdigest()[:32]


RANKINGS_CACHE_SECONDS = 30 * 24 * 3600


def _rankings_key(period: BillingPeriod, top: int) -> str:
    # Rankings sum amounts per PI and project over every review state: a review decision keeps them.
    return f"openchargeback:rankings:v2:{period.pk}:{top}:{period_fingerprint(period, attribution_only=True)}"


def period_rankings(period: BillingPeriod, *, top: int = 10, refresh: bool = False) -> PeriodRankings:
    """PIs and projects of the period ranked by billed (every review state), and its services.

    Grouping a million charges takes a second or two, so the result is cached under the period's
    fingerprint of amounts and attribution: a period whose imports or attributions changed gets a
    new key and the next read computes it again (imports and corrections warm it through
    billing.tasks.period_rankings_warm); review decisions keep it."""
    import time

    from django.core.cache import cache

    from ..models import Project

    key = _rankings_key(period, top)
    if not refresh:
        cached = cache.get(key)
        if cached is not None:
            return cached
    started = time.perf_counter()
    groups = (
        charges_in_period(Charge.objects.all(), period, use_index=False)
        .values_list("pi_id", "project_id")
        .annotate(n=Count("id"), listed=Sum("list_cost"), billed=Sum("billed_cost"))
        .order_by()
    )
    per_pi: dict[int, RankedTotal] = {}
    per_project: dict[int, RankedTotal] = {}
    result = PeriodRankings()
    for pi_id, project_id, n, listed, billed in groups:
        listed, billed = listed or ZERO, billed or ZERO
        if pi_id is None:
            result.unattributed_charges += n
            result.unattributed_billed += billed
        else:
            entry = per_pi.setdefault(pi_id, RankedTotal(key="", label=""))
            entry.charges += n
            entry.list_total += listed
            entry.billed_total += billed
        if project_id is not None:
            entry = per_project.setdefault(project_id, RankedTotal(key="", label=""))
            entry.charges += n
            entry.list_total += listed
            entry.billed_total += billed
    result.pis, result.projects = len(per_pi), len(per_project)

    def ranked(entries: dict[int, RankedTotal]) -> list[tuple[int, RankedTotal]]:
        return sorted(entries.items(), key=lambda item: (-item[1].billed_total, item[0]))[:top]

    top_pis = ranked(per_pi)
    names = PI.objects.in_bulk([pk for pk, _ in top_pis])
    for pk, entry in top_pis:
        entry.key, entry.label = names[pk].email, names[pk].name
        result.top_pis.append(entry)
    top_projects = ranked(per_project)
    projects = Project.objects.select_related("pi").in_bulk([pk for pk, _ in top_projects])
    for pk, entry in top_projects:
        entry.key, entry.label = projects[pk].project_id, projects[pk].pi.email
        result.top_projects.append(entry)
    result.services = list(
        Charge.objects.filter(period=period)
        .values_list("service_name", flat=True)
        .distinct()
        .order_by("service_name")
    )
    result.seconds = time.perf_counter() - started
    cache.set(key, result, RANKINGS_CACHE_SECONDS)
    return result


@dataclass
class SourceHistory:
    """Billed per source for a run of periods (oldest first), for the dashboard's chart."""

    periods: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)  # (slug, display name)
    billed: dict[str, list[Decimal]] = field(default_factory=dict)  # slug -> one amount per period

    def total(self, index: int) -> Decimal:
        return sum((series[index] for series in self.billed.values()), ZERO)


def billed_by_source_history(until: BillingPeriod, count: int = 12) -> SourceHistory:
    """Billed per source of the `count` periods up to `until`, from completed imports' totals."""
    periods = list(
        BillingPeriod.objects.filter(period__lte=until.period)
        .order_by("-period")
        .values_list("id", "period")[:count]
    )[::-1]
    history = SourceHistory(periods=[p for _, p in periods])
    position = {pk: i for i, (pk, _) in enumerate(periods)}
    rows = (
        Import.objects.filter(status=Import.Status.COMPLETED, period_id__in=position)
        .values_list("period_id", "source__slug", "source__display_name")
        .annotate(billed=Sum("billed_total"))
        .order_by("source__slug")
    )
    for period_id, slug, name, billed in rows:
        if slug not in history.billed:
            history.sources.append((slug, name))
            history.billed[slug] = [ZERO] * len(periods)
        history.billed[slug][position[period_id]] += billed or ZERO
    return history


def period_rankings_cached(period: BillingPeriod, *, top: int = 10) -> PeriodRankings | None:
    """The period's rankings if they are in the cache and current; never computes them."""
    from django.core.cache import cache

    return cache.get(_rankings_key(period, top))
