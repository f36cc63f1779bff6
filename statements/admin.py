"""Admin: statements per period (totals, state, versions, download, send / resend, send all
unsent) and the deliveries log. Screens call services and tasks; they never write models."""

from __future__ import annotations

from typing import Any

from auditlog.signals import accessed
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotFound,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from accounts import roles
from billing.admin.base import currency
from billing.models import BillingPeriod
from chargeback.downloads import download_name
from chargeback.errors import Refused
from chargeback.money import format_money
from chargeback.percent import discount_percent_text

from . import selectors, services, views
from .models import Delivery, Statement, StatementLine
from .services import dispatch
from .spending_admin import pi_link, project_link


class VersionFilter(admin.SimpleListFilter):
    title = "version"
    parameter_name = "versions"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("all", "All versions, superseded included")]

    def choices(self, changelist: Any) -> Any:
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Current",
        }
        yield {
            "selected": self.value() == "all",
            "query_string": changelist.get_query_string({self.parameter_name: "all"}),
            "display": "All versions",
        }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Statement]) -> QuerySet[Statement]:
        if self.value() == "all":
            return queryset
        return queryset.exclude(state=Statement.State.SUPERSEDED)


class StatementLineInline(admin.TabularInline):
    model = StatementLine
    extra = 0
    can_delete = False
    fields = (
        "source_name",
        "service_name",
        "kind",
        "charge_count",
        "list_money",
        "discount_money",
        "amount_money",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="list")
    def list_money(self, line: StatementLine) -> str:
        return format_money(line.list_amount, line.statement.currency)

    @admin.display(description="discount")
    def discount_money(self, line: StatementLine) -> str:
        return format_money(line.discount_amount, line.statement.currency)

    @admin.display(description="amount")
    def amount_money(self, line: StatementLine) -> str:
        return format_money(line.amount, line.statement.currency)


def _dispatch(request: HttpRequest, statement_ids: list[int], delivery_ids: list[int]) -> None:
    report = dispatch.run_and_wait(statement_ids, delivery_ids, wait=False)
    if not report.waited:
        messages.info(
            request,
            f"Queued {len(statement_ids)} PDF(s) and {len(delivery_ids)} email(s) for the workers; "
            "the deliveries list shows their progress.",
        )
        return
    if delivery_ids:
        messages.success(request, f"Sent {len(report.sent)} email(s).")
        for delivery in report.failed:
            messages.error(request, f"Email to {delivery.recipient} failed: {delivery.error}")
    elif statement_ids:
        messages.success(request, f"Rendered {len(statement_ids)} PDF(s).")


def _queue_and_send(
    request: HttpRequest, pairs: list[tuple[str, str | None]], resend_failed: bool = False
) -> None:
    """Queue deliveries for (period, PI email or None = every PI) and send them."""
    delivery_ids: list[int] = []
    for period, pi_email in pairs:
        try:
            queue = services.deliveries_queue(
                period=period, pi_email=pi_email, resend_failed=resend_failed, actor=request.user
            )
        except Refused as exc:
            messages.error(request, str(exc))
            continue
        delivery_ids += [d.pk for d in queue.to_send]
        if queue.already_sent and not queue.to_send:
            messages.info(
                request, f"{period}: {len(queue.already_sent)} PI(s) already have their current statements."
            )
        for delivery in queue.failed_before:
            messages.warning(
                request,
                f"{delivery.recipient}: failed earlier ({delivery.error}); use “Resend” in Deliveries.",
            )
    if delivery_ids:
        _dispatch(request, [], delivery_ids)


@admin.register(Statement)
class StatementAdmin(admin.ModelAdmin):
    # Nine columns that fit at 1280 px: the period and version are in the statement's label, the
    # fund/org under the project, the PI's name over the email.
    list_display = (
        "label",
        "pi_col",
        "project_col",
        "list_money",
        "discount_money",
        "due_money",
        "held_back",
        "state",
        "download",
    )
    list_filter = (VersionFilter, "period", "state")
    search_fields = ("number", "pi_email", "pi_name", "project_code", "fund_org")
    list_select_related = ("period",)
    ordering = ("-period__period", "sequence", "-version")
    inlines = [StatementLineInline]
    actions = ("send_selected", "render_missing")
    fieldsets = (
        (None, {"fields": ("label", "period", "state", "versions", "download", "note")}),
        ("Billed to", {"fields": ("pi_email", "pi_name", "pi_department")}),
        (
            "Project",
            {
                "fields": (
                    "project_code",
                    "project_name",
                    "fund_org",
                    "cost_center",
                    "reference_1",
                    "reference_2",
                )
            },
        ),
        (
            "Totals",
            {
                "fields": (
                    "currency",
                    "list_money",
                    "discount_money",
                    "due_money",
                    "charge_count",
                    "held_back",
                    "rejected_count",
                )
            },
        ),
        (
            "History",
            {
                "fields": (
                    "issued_at",
                    "actor_name",
                    "sent_at",
                    "superseded_at",
                    "delivery_log",
                    "rendered_at",
                    "pdf_sha256",
                    "render_error",
                )
            },
        ),
    )
    # Every field is read-only: an issued version is immutable.
    readonly_fields = tuple(flatten_fieldsets(fieldsets))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an issued version is immutable; regenerate instead

    def has_send_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("statements.send_statements")

    # --- columns --------------------------------------------------------------------------

    @admin.display(description="statement", ordering="number")
    def label(self, statement: Statement) -> str:
        return statement.label

    @admin.display(description="PI", ordering="pi_email")
    def pi_col(self, statement: Statement) -> str:
        link = pi_link(statement.pi_email)
        if statement.pi_name:
            return format_html('{}<span class="ocb-sub">{}</span>', statement.pi_name, link)
        return link

    @admin.display(description="project · fund/org", ordering="project_code")
    def project_col(self, statement: Statement) -> str:
        project = project_link(statement.project_code)
        if statement.fund_org:
            return format_html('{}<span class="ocb-sub">{}</span>', project, statement.fund_org)
        return project

    @admin.display(description="list price")
    def list_money(self, statement: Statement) -> str:
        return format_money(statement.list_total, statement.currency)

    @admin.display(description="discount")
    def discount_money(self, statement: Statement) -> str:
        percent = discount_percent_text(statement.list_total, statement.discount_total)
        return f"{format_money(statement.discount_total, statement.currency)}" + (
            f" ({percent})" if percent else ""
        )

    @admin.display(description="amount due", ordering="billed_total")
    def due_money(self, statement: Statement) -> str:
        return format_money(statement.billed_total, statement.currency)

    @admin.display(description="held back")
    def held_back(self, statement: Statement) -> str:
        if not statement.held_back_count:
            return "—"
        return f"{format_money(statement.held_back_amount, statement.currency)} ({statement.held_back_count})"

    @admin.display(description="PDF")
    def download(self, statement: Statement) -> str:
        url = reverse("admin:statements_statement_pdf", args=[statement.pk])
        text = "download" if statement.pdf else "render & download"
        return format_html('<a href="{}">{}</a>', url, text)

    @admin.display(description="versions")
    def versions(self, statement: Statement) -> str:
        return format_html_join(
            " · ",
            '<a href="{}">v{}</a> ({})',
            (
                (reverse("admin:statements_statement_change", args=[v.pk]), v.version, v.get_state_display())
                for v in selectors.statement_versions(statement)
            ),
        )

    @admin.display(description="deliveries")
    def delivery_log(self, statement: Statement) -> str:
        rows = [
            (
                reverse("admin:statements_delivery_change", args=[d.pk]),
                d.recipient,
                d.get_state_display(),
                d.attempts,
            )
            for d in statement.deliveries.order_by("-id")
        ]
        if not rows:
            return "—"
        return format_html_join(", ", '<a href="{}">{}: {}</a> ({} attempt(s))', rows)

    # --- totals and the "send all unsent" form on the list --------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context is not None and "cl" in context:
            queryset = context["cl"].queryset
            totals = selectors.statement_totals(queryset)
            currency_code = currency()
            context["statement_totals"] = {
                "statements": totals.statements,
                "pis": totals.pis,
                "list": format_money(totals.list_total, currency_code),
                "discount": format_money(totals.discount_total, currency_code),
                "due": format_money(totals.billed_total, currency_code),
                "held_back": format_money(totals.held_back_amount, currency_code),
                "unsent": totals.unsent,
                "without_pdf": totals.without_pdf,
            }
            context["send_periods"] = list(
                BillingPeriod.objects.filter(statements__state=Statement.State.ISSUED)
                .values_list("period", flat=True)
                .distinct()
                .order_by("-period")
            )
            context["can_send"] = self.has_send_permission(request)
            context["can_run"] = views.can_run_statements(request.user)
            # The runs act on the period the list is filtered to, else the latest not finalized.
            run_periods = list(
                BillingPeriod.objects.exclude(status=BillingPeriod.Status.FINALIZED)
                .order_by("-period")
                .values_list("pk", "period")[:24]
            )
            chosen = request.GET.get("period__id__exact", "")
            context["run_periods"] = run_periods
            context["run_period"] = next(
                (p for pk, p in run_periods if str(pk) == chosen), run_periods[0][1] if run_periods else ""
            )
        return response

    def get_urls(self) -> list[Any]:
        return [
            path("<int:pk>/pdf/", self.admin_site.admin_view(self.pdf_view), name="statements_statement_pdf"),
            path(
                "send-unsent/",
                self.admin_site.admin_view(require_POST(self.send_unsent_view)),
                name="statements_statement_send_unsent",
            ),
            path("preview/", self._runs(views.statements_preview_view), name="statements_statement_preview"),
            path(
                "preview/<str:period>/<str:name>",
                self._runs(views.statements_preview_pdf),
                name="statements_statement_preview_pdf",
            ),
            path(
                "run/<str:kind>/",
                self._runs(require_POST(views.statements_run_start)),
                name="statements_statement_run",
            ),
            path(
                "runs/<str:run_id>/",
                self._runs(views.statements_run_page),
                name="statements_statement_run_page",
            ),
            path(
                "runs/<str:run_id>/status/",
                self._runs(views.statements_run_status),
                name="statements_statement_run_status",
            ),
            *super().get_urls(),
        ]

    def _runs(self, view: Any) -> Any:
        """A statement-run view of this admin (it gets the model admin for its page context)."""

        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            return view(request, self, *args, **kwargs)

        return self.admin_site.admin_view(wrapped)

    def pdf_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """The statement's PDF. A missing one is rendered (queued, with workers) only for a role that
        may change statements: rendering is a write; anybody else is told it is missing."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        statement = get_object_or_404(Statement, pk=pk)
        availability = dispatch.statement_pdf_ensure(
            statement=statement, may_render=roles.can_change_statements(request.user)
        )
        if not availability.ready:
            return HttpResponseNotFound(availability.reason, content_type="text/plain; charset=utf-8")
        accessed.send(sender=Statement, instance=statement)
        return FileResponse(
            statement.pdf.open("rb"),
            as_attachment=request.GET.get("inline") is None,
            filename=download_name(statement.pdf_filename, "statement.pdf"),
            content_type="application/pdf",
        )

    def send_unsent_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_send_permission(request):
            raise PermissionDenied
        period = request.POST.get("period", "")
        _queue_and_send(request, [(period, None)])
        url = reverse("admin:statements_statement_changelist")
        found = BillingPeriod.objects.filter(period=period).values_list("pk", flat=True).first()
        return HttpResponseRedirect(f"{url}?period__id__exact={found}" if found else url)

    # --- actions --------------------------------------------------------------------------

    @admin.action(
        description="Send to their PIs (one email per PI with all current statements)", permissions=["send"]
    )
    def send_selected(self, request: HttpRequest, queryset: QuerySet[Statement]) -> None:
        pairs = sorted(set(queryset.values_list("period__period", "pi_email")))
        _queue_and_send(request, [(period, email) for period, email in pairs])

    @admin.action(description="Render missing PDFs", permissions=["send"])
    def render_missing(self, request: HttpRequest, queryset: QuerySet[Statement]) -> None:
        ids = list(queryset.filter(pdf="").values_list("pk", flat=True))
        if not ids:
            messages.info(request, "Every selected statement has its PDF.")
            return
        _dispatch(request, ids, [])


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "recipient",
        "period",
        "state",
        "attempts",
        "statement_labels",
        "sent_at",
        "short_error",
        "created_at",
    )
    list_filter = ("state", "period")
    search_fields = ("recipient", "message_id", "statements__number")
    list_select_related = ("period",)
    actions = ("resend",)
    readonly_fields = (
        "recipient",
        "period",
        "state",
        "attempts",
        "statement_labels",
        "subject",
        "message_id",
        "error",
        "resend_of",
        "created_at",
        "queued_at",
        "claimed_at",
        "sent_at",
        "failed_at",
        "actor_name",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_send_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("statements.send_statements")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        return super().get_queryset(request).prefetch_related("statements")

    @admin.display(description="statements")
    def statement_labels(self, delivery: Delivery) -> str:
        return ", ".join(s.label for s in sorted(delivery.statements.all(), key=lambda s: s.sequence))

    @admin.display(description="error")
    def short_error(self, delivery: Delivery) -> str:
        return delivery.error[:120]

    @admin.action(description="Resend (failed: queue again; sent: send a copy)", permissions=["send"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        ids = []
        for delivery in queryset:
            try:
                ids.append(services.delivery_resend(delivery_id=delivery.pk, actor=request.user).pk)
            except Refused as exc:
                messages.error(request, str(exc))
        if ids:
            _dispatch(request, [], ids)


# The read-only admin of statement runs; the admin of charge queries (the reviewers' queue) and
# the dashboard's count of open ones.
from . import runs_admin  # noqa: E402, F401
from .queries import admin as queries_admin  # noqa: E402

if queries_admin.dashboard_queries not in admin.site.dashboard_extras:  # type: ignore[attr-defined]
    admin.site.dashboard_extras.append(queries_admin.dashboard_queries)  # type: ignore[attr-defined]
