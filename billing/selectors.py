"""Reads and aggregates of the billing domain. Totals that reach people are exact Decimals."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum

from chargeback.admin_hardening import typed_id
from chargeback.errors import Refused
from chargeback.money import ZERO

from .models import PERIOD_REGEX, PI, BillingPeriod, BillingSettings, Charge, ChargeFlag, Import, Source

BILLABLE_STATES = (Charge.ReviewState.OK, Charge.ReviewState.APPROVED)
_PERIOD_IN_NAME = re.compile(r"(?<![0-9])(20[0-9]{2})[-_]?(0[1-9]|1[0-2])(?![0-9])")


def billing_settings_get() -> BillingSettings:
    """The singleton; created with defaults on first use."""
    settings, _ = BillingSettings.objects.get_or_create(pk=1)
    return settings


def config_managed_notice(keys: Iterable[str]) -> str:
    """What to tell people on an admin page whose settings a config.yaml manages (read with -c):
    which of `keys` it sets, and that an edit lasts until the file changes. Empty when none."""
    settings = billing_settings_get()
    managed = [key for key in keys if key in (settings.config_managed or [])]
    if not settings.config_path or not managed:
        return ""
    when = settings.config_applied_at.strftime("%Y-%m-%d %H:%M") if settings.config_applied_at else ""
    return (
        f"Managed by {settings.config_path} (applied {when} UTC): {', '.join(managed)}. An edit here lasts "
        "until the file changes; then the file's values are applied again. Change them in the file."
    )


def validate_period(period: str) -> str:
    period = (period or "").strip()
    if not re.fullmatch(PERIOD_REGEX, period):
        raise Refused(f"invalid period {period!r}: expected YYYY-MM, e.g. 2025-01")
    return period


def period_get(period: str) -> BillingPeriod:
    period = validate_period(period)
    try:
        return BillingPeriod.objects.get(period=period)
    except BillingPeriod.DoesNotExist:
        raise Refused(f"period {period} does not exist") from None


# Words shown in capitals (or their usual spelling) in a source's display name: aws -> AWS.
SOURCE_NAME_WORDS = {
    "ai": "AI",
    "api": "API",
    "aws": "AWS",
    "gcp": "GCP",
    "gpu": "GPU",
    "hpc": "HPC",
    "ibm": "IBM",
    "it": "IT",
    "oci": "OCI",
    "openai": "OpenAI",
    "vm": "VM",
}
SOURCE_SLUG_REGEX = r"[a-z0-9][a-z0-9_-]*"


def source_slug(name: str) -> str:
    """The slug a source name stands for, case-insensitive: `AWS` is `aws`."""
    slug = (name or "").strip().lower()
    if not re.fullmatch(SOURCE_SLUG_REGEX, slug):
        raise Refused(f"invalid source name {slug!r}: use lower-case letters, digits, '-' and '_'")
    return slug


def source_display_name(slug: str) -> str:
    """A name for people: well-known words as they are written (aws -> AWS, openai -> OpenAI,
    it_storage -> IT Storage, azure-local -> Azure Local), other words title-cased."""
    words = [w for w in re.split(r"[-_\s]+", slug) if w]
    return " ".join(SOURCE_NAME_WORDS.get(w.lower(), w.capitalize()) for w in words) or slug


def period_status(period: str) -> str | None:
    """The period's status, or None when it does not exist yet."""
    return (
        BillingPeriod.objects.filter(period=validate_period(period)).values_list("status", flat=True).first()
    )


def source_get(slug: str) -> Source:
    slug = (slug or "").strip().lower()
    try:
        return Source.objects.get(slug=slug)
    except Source.DoesNotExist:
        known = ", ".join(Source.objects.values_list("slug", flat=True)) or "none yet"
        raise Refused(f"unknown source {slug!r} (known: {known}); add it with `sources add`") from None


def source_for_filename(name: str, sources: Iterable[Source] | None = None) -> Source | None:
    """The source a file name names: the longest matching filename pattern (counted without its
    wildcards) or slug prefix wins, so `it_storage_2025-01.csv` is it_storage even when storage's
    pattern is `*storage*`. A slug prefix must end the name or be followed by '_', '.' or '-' and a
    digit: `azure-local_2025-01.csv` is never azure."""
    lower = name.lower()
    candidates = list(sources if sources is not None else Source.objects.filter(is_active=True))
    scored: list[tuple[int, Source]] = []
    for source in candidates:
        pattern = source.filename_pattern.lower()
        if pattern and fnmatch.fnmatch(lower, pattern):
            scored.append((len(re.sub(r"[*?\[\]]", "", pattern)), source))
        if re.match(rf"{re.escape(source.slug.lower())}(?:[_.]|-(?=[0-9])|$)", lower):
            scored.append((len(source.slug), source))
    return max(scored, key=lambda item: item[0])[1] if scored else None


def source_name_from_filename(name: str) -> str:
    """The source a file name suggests when no source matches it: the part before its period
    (`it_storage_2025-01.csv` -> it_storage); empty when the name has no period or no such part."""
    match = _PERIOD_IN_NAME.search(name)
    prefix = name[: match.start()].strip("_.- ").lower() if match else ""
    return prefix if re.fullmatch(SOURCE_SLUG_REGEX, prefix) else ""


def period_from_filename(name: str) -> str | None:
    """YYYY-MM, YYYYMM or YYYY_MM found in a file name."""
    match = _PERIOD_IN_NAME.search(name)
    return f"{match.group(1)}-{match.group(2)}" if match else None


def exact_sum(queryset: QuerySet, field_name: str) -> Decimal:
    """An exact Decimal sum (MoneyField sums are exact on SQLite and PostgreSQL alike)."""
    return queryset.aggregate(total=Sum(field_name))["total"] or ZERO


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


def flagged_charges(period: BillingPeriod | None = None, reason: str | None = None) -> QuerySet[Charge]:
    charges = Charge.objects.filter(review_state=Charge.ReviewState.FLAGGED)
    if period is not None:
        charges = charges.filter(period=period)
    if reason:
        if reason.startswith("rule:"):
            charges = charges.filter(flags__reason="rule", flags__rule__name=reason[5:])
        else:
            charges = charges.filter(id__in=ChargeFlag.objects.filter(reason=reason).values("charge_id"))
    return charges.select_related("source", "period").order_by("id")


def current_imports(source: Source, period: BillingPeriod) -> QuerySet[Import]:
    return Import.objects.filter(source=source, period=period, status=Import.Status.COMPLETED)


def imports_of_same_file(record: Import) -> QuerySet[Import]:
    """The imports of one file: a file whose rows span several billing periods is one per period."""
    first = record.part_of_id or record.pk
    return Import.objects.filter(Q(pk=first) | Q(part_of_id=first)).select_related("period").order_by("id")


# --- reads for the CLI's lists ------------------------------------------------------------


@dataclass
class PeriodOverview:
    """One line of `periods list`: a period with its counts and exact totals."""

    period: BillingPeriod
    charges: int = 0
    flagged: int = 0
    flagged_billed: Decimal = ZERO
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO

    @property
    def discount(self) -> Decimal:
        return self.list_total - self.billed_total


def periods_overview() -> list[PeriodOverview]:
    """Every period, newest first, with charges, flagged and exact totals. List and billed come
    from the completed imports (exact sums of the charges each wrote; amounts never change after
    import) when their charge counts agree with the period's charges, else from the charges."""
    flagged_q = Q(review_state=Charge.ReviewState.FLAGGED)
    counts = {
        row["period_id"]: row
        for row in Charge.objects.values("period_id")
        .annotate(n=Count("id"), flagged=Count("id", filter=flagged_q))
        .order_by()
    }
    flagged_billed = {
        period_id: total or ZERO
        for period_id, total in Charge.objects.filter(flagged_q)
        .values("period_id")
        .annotate(billed=Sum("billed_cost"))
        .values_list("period_id", "billed")
        .order_by()
    }
    imported = {
        row["period_id"]: row
        for row in Import.objects.filter(status=Import.Status.COMPLETED, period__isnull=False)
        .values("period_id")
        .annotate(n=Sum("charges_created"), list_total=Sum("list_total"), billed=Sum("billed_total"))
        .order_by()
    }
    result = []
    for period in BillingPeriod.objects.order_by("-period"):
        row = PeriodOverview(period=period)
        count = counts.get(period.pk)
        if count:
            row.charges, row.flagged = count["n"], count["flagged"]
            row.flagged_billed = flagged_billed.get(period.pk, ZERO)
            totals = imported.get(period.pk)
            if totals is not None and totals["n"] == row.charges:
                row.list_total = totals["list_total"] or ZERO
                row.billed_total = totals["billed"] or ZERO
            else:
                charges = Charge.objects.filter(period=period)
                row.list_total = exact_sum(charges, "list_cost")
                row.billed_total = exact_sum(charges, "billed_cost")
        result.append(row)
    return result


@dataclass
class SourceLastImport:
    source: Source
    last: Import | None  # its most recent import that finished (completed, superseded or failed)


def sources_last_import() -> list[SourceLastImport]:
    """Every source with its last finished import, for `sources sync-status`."""
    finished = [Import.Status.COMPLETED, Import.Status.SUPERSEDED, Import.Status.FAILED]
    rows = []
    for source in Source.objects.order_by("slug"):
        last = (
            Import.objects.filter(source=source, status__in=finished)
            .select_related("period")
            .order_by("-id")
            .first()
        )
        rows.append(SourceLastImport(source=source, last=last))
    return rows


def sources_all() -> QuerySet[Source]:
    return Source.objects.order_by("slug")


def account_mappings_all() -> QuerySet:
    """Every sub-account mapping with its project, PI and source."""
    from .models import AccountMapping

    return AccountMapping.objects.select_related("project__pi", "source").order_by(
        "sub_account_id", "source__slug"
    )


def import_completed_with_sha256(sha256: str) -> Import | None:
    """The completed import of exactly these bytes, if any (what a re-import would be refused for)."""
    return Import.objects.filter(sha256=sha256, status=Import.Status.COMPLETED).order_by("-id").first()


# --- reads for the admin: large periods, dashboard, review queue ---------------------------
# (imports are local so this section stays self-contained at the end of the module)


def period_charge_id_range(period: BillingPeriod) -> tuple[int, int] | None:
    """Lowest and highest charge id of the period, from the first and last charge of each of its
    imports (two index lookups per import instead of a scan of the period)."""
    from django.db.models import Max, Min

    ends: list[int] = []
    for import_id in Import.objects.filter(period=period).values_list("id", flat=True):
        ids = Charge.objects.filter(import_run_id=import_id).values_list("id", flat=True)
        first = ids.order_by("id").first()
        if first is not None:
            ends += [first, ids.order_by("-id").first() or first]
    if ends:
        return min(ends), max(ends)
    bounds = Charge.objects.filter(period=period).aggregate(lo=Min("id"), hi=Max("id"))
    return (bounds["lo"], bounds["hi"]) if bounds["lo"] is not None else None


def charges_in_period(
    queryset: QuerySet[Charge], period: BillingPeriod, *, use_index: bool
) -> QuerySet[Charge]:
    """The charges of `queryset` in `period`, filtered so that a newest-first page stays fast.

    On SQLite a filter on the period alone makes the planner pick a (period, ...) index and sort
    every charge of the period to find the newest 100 (half a second at a million charges).
    Unless another indexed column is filtered too (`use_index`), the period is matched without
    its index (`+period_id`) inside the period's id range, so SQLite walks the primary key
    backwards and stops after one page. PostgreSQL plans this well from its statistics.
    """
    from django.db import connections
    from django.db.models import BigIntegerField, F, Func
    from django.db.models.lookups import Exact

    if use_index or connections[queryset.db].vendor != "sqlite":
        return queryset.filter(period=period)
    bounds = period_charge_id_range(period)
    if bounds is None:
        return queryset.none()
    unindexed = Func(F("period_id"), template="+%(expressions)s", output_field=BigIntegerField())
    return queryset.filter(Exact(unindexed, period.pk), id__gte=bounds[0], id__lte=bounds[1])


def charges_with_flag(queryset: QuerySet[Charge], key: str) -> QuerySet[Charge]:
    """Charges carrying a flag reason (`missing_fund_org`, ...) or a rule's flag (`rule:<id>`)."""
    if key.startswith("rule:"):
        rule_id = typed_id(key[5:])
        if rule_id is None:
            return queryset.none()
        flags = ChargeFlag.objects.filter(reason="rule", rule_id=rule_id)
    else:
        flags = ChargeFlag.objects.filter(reason=key)
    return queryset.filter(id__in=flags.values("charge_id"))


def period_default() -> BillingPeriod | None:
    """The period to show when none is chosen: the latest with a completed import, else the latest."""
    latest_imported = (
        BillingPeriod.objects.filter(imports__status=Import.Status.COMPLETED).order_by("-period").first()
    )
    return latest_imported or BillingPeriod.objects.order_by("-period").first()


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
    def discount_percent(self) -> Decimal | None:
        if not self.list_total:
            return None
        return (self.discount * 100 / self.list_total).quantize(Decimal("0.1"))


def period_totals(period: BillingPeriod) -> PeriodTotals:
    """List, billed and charges of the period from its completed imports (each import's totals
    are the exact sums of the charges it wrote, and amounts never change after import), checked
    against the period's charge count; flagged and rejected counts and money from the
    (period, review state) index. Falls back to summing the charges if the counts disagree.

    Cached under the period's fingerprint (see period_fingerprint), so a changed period is
    recomputed on its next read and an unchanged one costs two small queries."""
    from django.core.cache import cache

    key = f"openchargeback:totals:v1:{period.pk}:{period_fingerprint(period)}"
    totals = cache.get(key)
    if totals is None:
        totals = _period_totals(period)
        cache.set(key, totals, RANKINGS_CACHE_SECONDS)
    totals.period = period
    return totals


def _period_totals(period: BillingPeriod) -> PeriodTotals:
    totals = PeriodTotals(period=period)
    for row in (
        Import.objects.filter(period=period, status=Import.Status.COMPLETED)
        .values("source__slug", "source__display_name")
        .annotate(
            n=Count("id"),
            charge_sum=Sum("charges_created"),
            listed=Sum("list_total"),
            billed=Sum("billed_total"),
        )
        .order_by("source__slug")
    ):
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
    totals.charges = Charge.objects.filter(period=period).count()
    if totals.charges != sum(s.charges for s in totals.by_source):
        # Charges not written by an import (or an import's totals out of step): sum them instead.
        by_source = {
            row["source__slug"]: row
            for row in Charge.objects.filter(period=period)
            .values("source__slug", "source__display_name")
            .annotate(charges=Count("id"), listed=Sum("list_cost"), billed=Sum("billed_cost"))
            .order_by("source__slug")
        }
        totals.by_source = [
            SourceTotal(
                slug=slug,
                name=row["source__display_name"],
                charges=row["charges"],
                list_total=row["listed"] or ZERO,
                billed_total=row["billed"] or ZERO,
            )
            for slug, row in by_source.items()
        ]
    totals.list_total = sum((s.list_total for s in totals.by_source), ZERO)
    totals.billed_total = sum((s.billed_total for s in totals.by_source), ZERO)
    for state, n, billed in (
        Charge.objects.filter(
            period=period, review_state__in=[Charge.ReviewState.FLAGGED, Charge.ReviewState.REJECTED]
        )
        .values_list("review_state")
        .annotate(n=Count("id"), billed=Sum("billed_cost"))
        .order_by()
    ):
        if state == Charge.ReviewState.FLAGGED:
            totals.flagged, totals.flagged_billed = n, billed or ZERO
        else:
            totals.rejected, totals.rejected_billed = n, billed or ZERO
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
    charges may have changed: imports and corrections, not approvals, rejections or re-flagging,
    which change review states alone (the rankings do not depend on them)."""
    import hashlib

    from .models import ReviewLog

    imports = list(Import.objects.filter(period=period).order_by("id").values_list("id", "status"))
    logs = ReviewLog.objects.filter(period=period)
    if attribution_only:
        logs = logs.filter(action=ReviewLog.Action.CORRECT)
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

    from .models import Project

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


@dataclass
class ReasonGroup:
    """Flagged charges of a period sharing one flag reason (a charge with two reasons is in both)."""

    key: str  # a FlagReason value, or "rule:<id>"
    label: str
    count: int = 0
    billed: Decimal = ZERO


def review_queue_groups(period: BillingPeriod) -> list[ReasonGroup]:
    """The period's flagged charges grouped by flag reason, largest amount first."""
    from .models import FlagReason

    labels = dict(FlagReason.choices)
    groups = []
    for reason, rule_id, rule_name, n, billed in (
        ChargeFlag.objects.filter(charge__period=period, charge__review_state=Charge.ReviewState.FLAGGED)
        .values_list("reason", "rule_id", "rule__name")
        .annotate(n=Count("charge_id"), billed=Sum("charge__billed_cost"))
        .order_by()
    ):
        if reason == FlagReason.RULE:
            key = f"rule:{rule_id}" if rule_id else "rule"
            label = f"Rule: {rule_name}" if rule_name else "Flag rule (deleted)"
        else:
            key, label = reason, labels.get(reason, reason)
        groups.append(ReasonGroup(key=key, label=label, count=n, billed=billed or ZERO))
    return sorted(groups, key=lambda g: (-g.billed, g.label))


@dataclass
class SelectionSummary:
    """What a review action would touch: how many charges, how much money, in which states and periods."""

    count: int = 0
    billed: Decimal = ZERO
    by_state: dict[str, int] = field(default_factory=dict)
    periods: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)


def charges_selection_summary(queryset: QuerySet[Charge]) -> SelectionSummary:
    summary = SelectionSummary()
    periods = dict(BillingPeriod.objects.values_list("id", "status"))
    names = dict(BillingPeriod.objects.values_list("id", "period"))
    for period_id, state, n, billed in (
        queryset.order_by()
        .values_list("period_id", "review_state")
        .annotate(n=Count("id"), billed=Sum("billed_cost"))
        .order_by()
    ):
        summary.count += n
        summary.billed += billed or ZERO
        summary.by_state[state] = summary.by_state.get(state, 0) + n
        if names[period_id] not in summary.periods:
            summary.periods.append(names[period_id])
            if periods[period_id] == BillingPeriod.Status.FINALIZED:
                summary.finalized.append(names[period_id])
    summary.periods.sort()
    summary.finalized.sort()
    return summary


@dataclass
class RulePreview:
    """What a flag rule would flag among a period's charges, before it is saved."""

    period: BillingPeriod
    checked: int = 0
    matched: int = 0
    matched_billed: Decimal = ZERO
    newly_flagged: int = 0  # ok charges that re-evaluation would flag
    newly_flagged_billed: Decimal = ZERO
    decided: int = 0  # approved/rejected matches: re-evaluation leaves them alone
    samples: list[dict] = field(default_factory=list)


def flag_rule_preview(
    *,
    period: BillingPeriod,
    pattern: str,
    fields: list[str],
    mode: str,
    source_id: int | None = None,
    samples: int = 25,
) -> RulePreview:
    """Run a rule that is not saved yet over the period's charges (the same matching code the
    import and re-evaluation use). Refuses an invalid regular expression with the reason."""
    from chargeback.regex import RegexError, compile_linear

    from .ingest.flagging import CompiledRule
    from .models import FlagRule

    try:
        regex = compile_linear(pattern)
    except RegexError as exc:
        raise Refused(f"pattern {pattern!r}: {exc}") from None
    known = {name for name, _ in FlagRule.FIELD_CHOICES}
    fields = [f for f in fields if f in known]
    if not fields:
        raise Refused("choose at least one field for the rule")
    rule = CompiledRule(
        id=0,
        name="preview",
        regex=regex,
        fields=tuple(fields),
        must_match=mode == FlagRule.Mode.FLAG_UNLESS_MATCH,
        source_id=source_id,
    )
    charges = Charge.objects.filter(period=period)
    if source_id:
        charges = charges.filter(source_id=source_id)
    preview = RulePreview(period=period)
    decided = {Charge.ReviewState.APPROVED, Charge.ReviewState.REJECTED}
    rows = charges.values_list("id", "review_state", "billed_cost", "source_id", *fields).order_by("id")
    chunk: list[tuple] = []
    for row in rows.iterator(chunk_size=5000):
        chunk.append(row)
        if len(chunk) == 5000:
            _preview_chunk(rule, fields, chunk, preview, decided, samples)
            chunk = []
    _preview_chunk(rule, fields, chunk, preview, decided, samples)
    return preview


def _preview_chunk(
    rule: Any, fields: list[str], rows: list[tuple], preview: RulePreview, decided: set, samples: int
) -> None:
    """One chunk of charges through the rule (RE2, column-wise)."""
    if not rows:
        return
    columns = {name: [row[4 + i] for row in rows] for i, name in enumerate(fields)}
    for row, flag in zip(rows, rule.applies_many(columns, [row[3] for row in rows]), strict=True):
        preview.checked += 1
        if flag is None:
            continue
        preview.matched += 1
        preview.matched_billed += row[2]
        if row[1] in decided:
            preview.decided += 1
        elif row[1] == Charge.ReviewState.OK:
            preview.newly_flagged += 1
            preview.newly_flagged_billed += row[2]
        if len(preview.samples) < samples:
            preview.samples.append(
                {"id": row[0], "state": row[1], "billed": row[2], "detail": flag.detail.split(": ", 1)[-1]}
            )


def periods_with_totals(queryset: QuerySet[BillingPeriod]) -> QuerySet[BillingPeriod]:
    """Periods annotated for lists: charges, list and billed (from completed imports), flagged
    charges and PIs (from the period's indexes)."""
    from django.db.models import IntegerField, OuterRef, Subquery

    from chargeback.money import MoneyField

    completed = (
        Import.objects.filter(period=OuterRef("pk"), status=Import.Status.COMPLETED)
        .order_by()
        .values("period")
    )
    charges = Charge.objects.filter(period=OuterRef("pk")).order_by().values("period")
    return queryset.annotate(
        charge_count=Subquery(
            completed.annotate(s=Sum("charges_created")).values("s"), output_field=IntegerField()
        ),
        list_sum=Subquery(completed.annotate(s=Sum("list_total")).values("s"), output_field=MoneyField()),
        billed_sum=Subquery(completed.annotate(s=Sum("billed_total")).values("s"), output_field=MoneyField()),
        flagged_count=Subquery(
            charges.filter(review_state=Charge.ReviewState.FLAGGED).annotate(n=Count("id")).values("n"),
            output_field=IntegerField(),
        ),
        pi_count=Subquery(
            charges.filter(pi__isnull=False).annotate(n=Count("pi_id", distinct=True)).values("n"),
            output_field=IntegerField(),
        ),
    )


def period_rankings_cached(period: BillingPeriod, *, top: int = 10) -> PeriodRankings | None:
    """The period's rankings if they are in the cache and current; never computes them."""
    from django.core.cache import cache

    return cache.get(_rankings_key(period, top))
