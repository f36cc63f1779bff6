"""Admin of the statement runs (preview, issue, send unsent, resend failed): read-only, as the
services record them. Billing admins see them here and on the period page; a run's progress
page (statements.views) is linked for those who may start runs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from accounts import roles
from chargeback.admin_helpers import ReadOnlyAdminMixin

from . import selectors
from .models import StatementRun


@admin.register(StatementRun)
class StatementRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "kind", "period", "requested_by_name", "state_badge", "progress", "outcome")
    list_display_links = ("created_at",)
    list_filter = ("kind", "state", "period")
    search_fields = ("requested_by_name", "summary", "error")
    list_select_related = ("period",)
    ordering = ("-created_at", "-id")
    date_hierarchy = "created_at"
    readonly_fields = (
        "kind",
        "period",
        "requested_by_name",
        "state_badge",
        "progress",
        "summary",
        "error",
        "issued",
        "emails",
        "pdfs_not_rendered",
        "created_at",
        "started_at",
        "dispatched_at",
        "progressed_at",
        "finished_at",
        "progress_link",
    )
    fieldsets = (
        (None, {"fields": ("kind", "period", "requested_by_name", "state_badge", "progress_link")}),
        ("Outcome", {"fields": ("progress", "summary", "error", "issued", "emails", "pdfs_not_rendered")}),
        ("Times", {"fields": ("created_at", "started_at", "dispatched_at", "progressed_at", "finished_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[StatementRun]:
        # The ids of the work can run to thousands; the counts say as much.
        return super().get_queryset(request).defer("statement_ids", "delivery_ids")

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = tuple(super().get_list_display(request))
        # The progress page belongs to those who may start runs.
        return (*shown, "progress_link") if roles.can_manage_periods(request.user) else shown

    @admin.display(description="state", ordering="state")
    def state_badge(self, run: StatementRun) -> str:
        if selectors.statement_run_is_stale(run):
            return format_html('<span class="ocb-badge ocb-badge-stale">{}</span>', "Stale")
        return format_html(
            '<span class="ocb-badge ocb-badge-{}">{}</span>', run.state, run.get_state_display()
        )

    @admin.display(description="progress")
    def progress(self, run: StatementRun) -> str:
        if run.kind == StatementRun.Kind.PREVIEW:
            return "—"
        text = f"PDFs {run.pdfs_rendered}/{run.pdfs_total} · emails {run.emails_sent}/{run.emails_total}"
        failed = run.pdfs_failed + run.emails_failed
        return text + (f" · {failed} failed" if failed else "")

    @admin.display(description="outcome")
    def outcome(self, run: StatementRun) -> str:
        text = run.error if run.state == StatementRun.State.FAILED else run.summary
        return text if len(text) <= 120 else text[:117] + "…"

    @admin.display(description="issued")
    def issued(self, run: StatementRun) -> str:
        rows = run.result.get("issued", [])
        if not rows:
            return "—"
        cells = (
            format_html(
                '<a href="{}">{}</a> ({})',
                reverse("admin:statements_statement_change", args=[r["statement_id"]]),
                r["label"],
                r["status"],
            )
            if r.get("statement_id")
            else format_html("{} ({})", r["label"], r["status"])
            for r in rows
        )
        return format_html_join(", ", "{}", ((cell,) for cell in cells))

    @admin.display(description="emails")
    def emails(self, run: StatementRun) -> str:
        sent, failed = run.result.get("sent", []), run.result.get("failed", [])
        if not sent and not failed:
            return "—"
        parts = [f"sent to {', '.join(sent)}"] if sent else []
        parts += [f"failed to {f['recipient']}: {f['error']}" for f in failed]
        return "; ".join(parts)

    @admin.display(description="PDFs not rendered")
    def pdfs_not_rendered(self, run: StatementRun) -> str:
        failed = run.result.get("render_failed", [])
        return "; ".join(f"{f['statement']}: {f['error']}" for f in failed) or "—"

    @admin.display(description="progress page")
    def progress_link(self, run: StatementRun) -> str:
        return format_html(
            '<a href="{}">open</a>', reverse("admin:statements_statement_run_page", args=[run.pk])
        )
