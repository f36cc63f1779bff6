"""Admin screens of rating: rates and subsidies (edited through the services, with an audit history),
usage files (read-only, with their stored file) and the re-rating log, and re-rating a period."""

from __future__ import annotations

from typing import Any

from auditlog.mixins import AuditlogHistoryAdminMixin
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from billing.admin.base import CurrencyAdminMixin, ServiceRefusalMixin, money, money_cell
from billing.views import stored_file_response
from chargeback.admin_helpers import ReadOnlyAdminMixin
from chargeback.errors import Refused

from . import selectors, services
from .forms import RateForm, RerateForm, SubsidyForm
from .models import Rate, Rerate, Subsidy, UsageFile
from .units import format_quantity


@admin.register(Rate)
class RateAdmin(AuditlogHistoryAdminMixin, ServiceRefusalMixin, admin.ModelAdmin):
    form = RateForm
    show_auditlog_history_link = True
    list_display = (
        "source",
        "unit",
        "tier_col",
        "price",
        "free_col",
        "effective_from",
        "in_effect_col",
        "note",
    )
    list_filter = ("source", "unit")
    list_select_related = ("source",)
    search_fields = ("source__slug", "tier", "note")
    readonly_fields = ("actor_name", "created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # What a rate prices is fixed once it exists; a change of tier or month is a new rate.
        keys = ("source", "unit", "tier", "effective_from") if obj is not None else ()
        return keys + self.readonly_fields

    @admin.display(description="tier")
    def tier_col(self, obj: Rate) -> str:
        return obj.tier or "(any)"

    @admin.display(description="free / project / month")
    def free_col(self, obj: Rate) -> str:
        return format_quantity(obj.free_quantity) if obj.free_quantity else "—"

    @admin.display(description="in effect now", boolean=True)
    def in_effect_col(self, obj: Rate) -> bool:
        month = timezone.localdate().strftime("%Y-%m")
        return obj.pk in {r.pk for r in selectors.rates_in_effect(at=month, source=obj.source)}

    def save_model(self, request: HttpRequest, obj: Rate, form: Any, change: bool) -> None:
        data = form.cleaned_data
        if change:
            saved = services.rate_update(
                rate_id=obj.pk,
                actor=request.user,
                **{name: data[name] for name in services.RATE_EDITABLE if name in form.changed_data},
            )
        else:
            saved, _ = services.rate_add(
                source=data["source"].slug,
                unit=data["unit"],
                price=data["price"],
                tier=data.get("tier", ""),
                effective_from=data["effective_from"],
                free_quantity=data.get("free_quantity") or 0,
                note=data.get("note", ""),
                actor=request.user,
            )
        obj.pk = saved.pk
        obj.refresh_from_db()
        messages.info(
            request,
            "Periods already rated keep their charges; re-rate an open period (Usage files › Re-rate a period) "
            "to apply this rate there.",
        )

    def delete_model(self, request: HttpRequest, obj: Rate) -> None:
        services.rate_delete(rate_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for pk in queryset.values_list("pk", flat=True):
            services.rate_delete(rate_id=pk)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(reverse("admin:billing_rate_change", args=[object_id]))


@admin.register(Subsidy)
class SubsidyAdmin(AuditlogHistoryAdminMixin, ServiceRefusalMixin, CurrencyAdminMixin, admin.ModelAdmin):
    form = SubsidyForm
    show_auditlog_history_link = True
    list_display = ("position", "name", "percent_col", "scope_col", "months_col", "cap_col")
    list_display_links = ("name",)
    list_filter = ("source",)
    search_fields = ("name", "note", "tier")
    readonly_fields = ("actor_name", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "percent", "position", "note")}),
        ("Applies to", {"fields": ("source", "tier", "projects_text", "pis_text")}),
        ("When and how much", {"fields": ("effective_from", "effective_until", "cap")}),
        ("History", {"fields": ("actor_name", "created_at", "updated_at")}),
    )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a subsidy ends with its last month (effective until); its name stays on statements

    @admin.display(description="percent")
    def percent_col(self, obj: Subsidy) -> str:
        return f"{obj.percent.normalize():f} %"

    @admin.display(description="applies to")
    def scope_col(self, obj: Subsidy) -> str:
        parts = [obj.source.slug if obj.source else "every source"]
        if obj.tier:
            parts.append(f"tier {obj.tier}")
        if obj.projects:
            parts.append(f"{len(obj.projects)} project{'s' if len(obj.projects) != 1 else ''}")
        if obj.pis:
            parts.append(f"{len(obj.pis)} PI{'s' if len(obj.pis) != 1 else ''}")
        return ", ".join(parts)

    @admin.display(description="months")
    def months_col(self, obj: Subsidy) -> str:
        return f"{obj.effective_from} – {obj.effective_until or 'open'}"

    @admin.display(description="cap / project / fiscal year")
    def cap_col(self, obj: Subsidy) -> str:
        return money(obj.cap) if obj.cap is not None else "—"

    def save_model(self, request: HttpRequest, obj: Subsidy, form: Any, change: bool) -> None:
        values = form.service_values()
        if change:
            saved = services.subsidy_update(subsidy_id=obj.pk, actor=request.user, **values)
        else:
            saved = services.subsidy_add(actor=request.user, **values)
        obj.pk = saved.pk
        obj.refresh_from_db()
        messages.info(
            request,
            "Periods already rated keep their charges; re-rate an open period to apply the change there. "
            "Imported (cloud) files get subsidies when they are imported.",
        )


@admin.register(UsageFile)
class UsageFileAdmin(CurrencyAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Usage files are added by `openchargeback usage slurm|storage`; here they are read and re-rated."""

    list_display = (
        "original_name",
        "kind",
        "source",
        "period",
        "import_col",
        "billed_col",
        "rated_at",
        "actor_name",
    )
    list_filter = ("kind", "source", ("period", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("source", "period", "import_run")
    search_fields = ("original_name", "sha256")
    change_list_template = "admin/billing/usagefile/change_list.html"
    fields = (
        "original_name",
        "kind",
        "source",
        "period",
        "import_col",
        "billed_col",
        "download_col",
        "summary",
        "sha256",
        "size_bytes",
        "created_at",
        "rated_at",
        "actor_name",
    )
    readonly_fields = fields

    @admin.display(description="import")
    def import_col(self, obj: UsageFile) -> SafeString:
        url = reverse("admin:billing_import_change", args=[obj.import_run_id])
        return format_html('<a href="{}">#{}</a> ({})', url, obj.import_run_id, obj.import_run.status)

    @admin.display(description="billed")
    def billed_col(self, obj: UsageFile) -> SafeString:
        return money_cell(obj.import_run.billed_total)

    @admin.display(description="file")
    def download_col(self, obj: UsageFile) -> SafeString:
        if not obj.file:
            return format_html("{}", "—")
        url = reverse("admin:billing_usagefile_download", args=[obj.pk])
        return format_html('<a href="{}">download</a>', url)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("rerate/", wrap(self.rerate_view), name="billing_usagefile_rerate"),
            path("<path:object_id>/download/", wrap(self.download_view), name="billing_usagefile_download"),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, object_id: str) -> FileResponse:
        """The stored usage file, streamed through the application (from disk or object storage)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        usage = get_object_or_404(UsageFile, pk=object_id)
        return stored_file_response(usage.file, usage.original_name)

    def rerate_view(self, request: HttpRequest) -> HttpResponse:
        """Rate an open period's usage files again with today's rates and subsidies (logged)."""
        if not request.user.has_perm("billing.add_rerate"):
            raise PermissionDenied
        form = RerateForm(request.POST if request.method == "POST" else None, initial=request.GET.dict())
        if request.method == "POST" and form.is_valid():
            period = form.cleaned_data["period"].period
            try:
                outcome = services.usage_rerate(
                    period=period, reason=form.cleaned_data["reason"], actor=request.user
                )
            except Refused as exc:
                messages.error(request, str(exc))
            else:
                messages.success(
                    request,
                    f"Re-rated {period}: {len(outcome.files)} usage file{'s' if len(outcome.files) != 1 else ''}, "
                    f"billed {money(outcome.billed_before)} → {money(outcome.billed_after)}.",
                )
                return HttpResponseRedirect(reverse("admin:billing_rerate_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Re-rate a period",
            "opts": self.model._meta,
            "form": form,
            "files": list(selectors.usage_files_current().filter(period__status="open")),
        }
        return TemplateResponse(request, "admin/billing/usagefile/rerate.html", context)


@admin.register(Rerate)
class RerateAdmin(CurrencyAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "period", "actor_name", "reason", "before_col", "after_col", "files_col")
    list_filter = (("period", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("period",)
    fields = ("period", "reason", "actor_name", "created_at", "before_col", "after_col", "details")
    readonly_fields = fields

    @admin.display(description="billed before")
    def before_col(self, obj: Rerate) -> SafeString:
        return money_cell(obj.billed_before)

    @admin.display(description="billed after")
    def after_col(self, obj: Rerate) -> SafeString:
        return money_cell(obj.billed_after)

    @admin.display(description="usage files")
    def files_col(self, obj: Rerate) -> int:
        return len(obj.details or [])
