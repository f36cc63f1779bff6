"""Reads of the statements app: what the statements of a period should say (drafts computed
from the charges under the cent rule), how they compare with what was issued, progress of
rendering and delivery, the admin's statement runs, and why a period's statements do not allow
finalizing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from billing.models import BillingPeriod
from chargeback.money import ZERO, format_money

from .drafts import PeriodDrafts, StatementDraft, drafts_compare, statement_drafts
from .models import Delivery, Statement, StatementLine, StatementRun

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
    """The period's drafts against its statements in force (drafts.drafts_compare)."""
    drafts = statement_drafts(period, pi_email=pi_email)
    current = {(s.pi_id, s.project_code): s for s in current_statements(period, pi_email=pi_email)}
    comparison = drafts_compare(drafts.drafts, current)
    return StatementChanges(
        drafts=drafts,
        new=comparison.new,
        changed=comparison.changed,
        unchanged=comparison.unchanged,
        withdrawn=comparison.withdrawn,
    )


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
    """Sums over issued statements: their lines are rounded to the cent (the cent rule), so these
    are what PIs are billed, not the exact charge totals of billing.selectors.PeriodTotals."""

    statements: int = 0
    pis: int = 0
    list_total: Decimal = ZERO
    discount_total: Decimal = ZERO
    billed_total: Decimal = ZERO
    held_back_amount: Decimal = ZERO
    unsent: int = 0
    without_pdf: int = 0


def _statement_sums() -> dict[str, Any]:
    return {
        "n": Count("id"),
        "pis": Count("pi", distinct=True),
        "list_sum": Sum("list_total"),
        "discount_sum": Sum("discount_total"),
        "billed_sum": Sum("billed_total"),
        "held": Sum("held_back_amount"),
        "unsent": Count("id", filter=Q(state=Statement.State.ISSUED)),
        "without_pdf": Count("id", filter=Q(pdf="")),
    }


def _statement_totals_from(row: Mapping[str, Any]) -> StatementTotals:
    return StatementTotals(
        statements=row["n"],
        pis=row["pis"],
        list_total=row["list_sum"] or ZERO,
        discount_total=row["discount_sum"] or ZERO,
        billed_total=row["billed_sum"] or ZERO,
        held_back_amount=row["held"] or ZERO,
        unsent=row["unsent"],
        without_pdf=row["without_pdf"],
    )


def statement_totals(statements: QuerySet[Statement]) -> StatementTotals:
    """Counts and exact sums over statements (rounded amounts, so Σ is the cent rule's total)."""
    return _statement_totals_from(statements.aggregate(**_statement_sums()))


def statement_totals_by_period(statements: QuerySet[Statement]) -> dict[str, StatementTotals]:
    """`statement_totals` of the statements of each period (by YYYY-MM), in one query."""
    return {
        row["period__period"]: _statement_totals_from(row)
        for row in statements.values("period__period").annotate(**_statement_sums()).order_by()
    }


def period_statement_totals(period: BillingPeriod) -> StatementTotals:
    """Totals of the period's statements in force: what its PIs are billed, under the cent rule."""
    return statement_totals(current_statements(period))


def statement_versions(statement: Statement) -> QuerySet[Statement]:
    """Every version of the statement's number, newest first."""
    return Statement.objects.filter(period_id=statement.period_id, sequence=statement.sequence).order_by(
        "-version"
    )


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
    total = sum((s["total"] for s in states), ZERO)
    # The exact sum of the current statements' charges: the cent rule makes the statements differ
    # from it by rounding only (explained on the page when they do).
    exact = (
        StatementLine.objects.filter(statement__period=period)
        .exclude(statement__state=Statement.State.SUPERSEDED)
        .aggregate(s=Sum("billed_exact"))["s"]
        or ZERO
    )
    return {
        "states": states,
        "count": sum(s["count"] for s in states),
        "total": total,
        "exact": exact,
        "rounding": total - exact,
        "url": url,
    }


# --- the admin's statement runs -------------------------------------------------------------


def statement_run_get(run_id: str | int) -> StatementRun | None:
    """The run with this id (None for anything else, a malformed id included)."""
    if not str(run_id).isdigit():
        return None
    return StatementRun.objects.select_related("period").filter(pk=int(run_id)).first()


def statement_run_is_stale(run: StatementRun, *, now: dt.datetime | None = None) -> bool:
    """Queued or running without progress for OPENCHARGEBACK_STATEMENT_RUN_STALE_SECONDS: the
    worker carrying it out (or the one expected to pick it up) most likely stopped."""
    if run.is_finished:
        return False
    last = run.progressed_at or run.created_at
    limit = dt.timedelta(seconds=settings.OPENCHARGEBACK_STATEMENT_RUN_STALE_SECONDS)
    return last < (now or timezone.now()) - limit


def _run_state_text(run: StatementRun, stale: bool) -> str:
    if run.state == StatementRun.State.FAILED:
        return f"{'Refused' if run.result.get('refused') else 'Failed'}: {run.error}"
    if run.state == StatementRun.State.DONE:
        return "Done."
    if stale:
        since = timezone.localtime(run.progressed_at or run.created_at).strftime("%Y-%m-%d %H:%M")
        return (
            f"Stale: no progress since {since}. Its worker has probably stopped: check that a worker "
            "runs, then start the run again (what is done already is not done twice)."
        )
    return "Queued…" if run.state == StatementRun.State.QUEUED else "Running…"


def statement_run_status(run: StatementRun) -> dict[str, Any]:
    """A run as its page and progress bar show it: state, units done of total, the result lists."""
    stale = statement_run_is_stale(run)
    pdfs_done = min(run.pdfs_rendered + run.pdfs_failed, run.pdfs_total)
    emails_done = min(run.emails_sent + run.emails_failed, run.emails_total)
    status: dict[str, Any] = {
        "run": run.pk,
        "kind": run.kind,
        "kind_label": run.get_kind_display(),
        "period": run.period.period,
        "state": run.state,
        "stale": stale,
        "state_text": _run_state_text(run, stale),
        "error": run.error,
        "refused": bool(run.result.get("refused")),
        "summary": run.summary,
        "requested_by": run.requested_by_name,
        "done": pdfs_done + emails_done,
        "total": run.pdfs_total + run.emails_total,
        "finished": run.is_finished,
        "pdfs": {"rendered": run.pdfs_rendered, "total": run.pdfs_total, "failed": run.pdfs_failed},
        "emails": {"sent": run.emails_sent, "total": run.emails_total, "failed": run.emails_failed},
        "issued": run.result.get("issued", []),
    }
    if run.state == StatementRun.State.DONE:
        for name in ("sent", "failed", "render_failed"):
            status[name] = run.result.get(name, [])
    return status


# Runs listed on a period's page; older ones are in the admin's list of statement runs.
PERIOD_RUNS_SHOWN = 10


def period_statement_runs(period: BillingPeriod) -> list[dict[str, Any]]:
    """The period's latest statement runs, newest first (the period page's statements panel)."""
    runs = (
        StatementRun.objects.filter(period=period)
        .select_related("period")
        .defer("statement_ids", "delivery_ids", "result")
        .order_by("-created_at", "-id")[:PERIOD_RUNS_SHOWN]
    )
    found = []
    for run in runs:
        stale = statement_run_is_stale(run)
        try:
            url = reverse("admin:statements_statement_run_page", args=[run.pk])
        except NoReverseMatch:
            url = ""
        found.append(
            {
                "pk": run.pk,
                "kind": run.get_kind_display(),
                "state": "stale" if stale else run.state,
                "state_label": "Stale" if stale else run.get_state_display(),
                "requested_by": run.requested_by_name,
                "created_at": run.created_at,
                "summary": run.error if run.state == StatementRun.State.FAILED else run.summary,
                "url": url,
            }
        )
    return found
