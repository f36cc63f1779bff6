"""Admin: journal settings, custom journal formats (validated on save), and journal exports —
choose a period and a format, preview the first rows and the totals (or why the journal is
refused), export and download; every export is kept and can be downloaded again. Screens call
services and selectors; they never write models."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from billing.admin.base import ConfigManagedMixin
from billing.models import BillingPeriod
from chargeback.downloads import download_name
from chargeback.errors import Refused
from chargeback.money import format_money

from . import selectors, services
from .entries import PLACEHOLDERS
from .format_checks import format_problems
from .formats import (
    GL_HEADER_TEMPLATE,
    GL_ROW_TEMPLATE,
    HEADER_VARIABLES,
    ROW_ALIASES,
)
from .models import JournalExport, JournalFormat, JournalSettings
from .sample import row_variables

PREVIEW_ROWS = 20


# --- settings ---------------------------------------------------------------------------------


@admin.register(JournalSettings)
class JournalSettingsAdmin(ConfigManagedMixin, admin.ModelAdmin):
    config_keys = ("journal", "tag_mapping")
    fieldsets = (
        (
            "Ledger fields",
            {
                "fields": ("fund_org_regex",),
                "description": "How a fund/org becomes the Fund, Orgn, Account, Program, Activity and "
                "Location columns of the gl format.",
            },
        ),
        (
            "Account codes",
            {
                "fields": ("default_account", "account_tag", "account_regex"),
                "description": "A debit's account code: the project's GL account, else the account tag on "
                "its charges, else the fund/org's account group, else the source's account, else the "
                "default. A credit's: the source's account, else its fund/org's account group, else the "
                "default. A layout with an account column (gl) refuses an entry without one; summary "
                "and detail have none.",
            },
        ),
        (
            "Descriptions",
            {
                "fields": (
                    "debit_description",
                    "credit_description",
                    "description_max_length",
                    "reference_template",
                )
            },
        ),
        ("Entries", {"fields": ("include_zero_entries",)}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        """There is one settings object: go straight to it."""
        obj = selectors.journal_settings_get()
        return HttpResponseRedirect(reverse("admin:journals_journalsettings_change", args=[obj.pk]))

    def save_model(self, request: HttpRequest, obj: JournalSettings, form: Any, change: bool) -> None:
        services.journal_settings_update(**{name: form.cleaned_data[name] for name in form.changed_data})
        obj.refresh_from_db()


# --- formats ----------------------------------------------------------------------------------


class JournalFormatForm(forms.ModelForm):
    class Meta:
        model = JournalFormat
        fields = ["name", "description", "rows", "delimiter", "header_template", "row_template", "is_active"]
        widgets = {
            "header_template": forms.Textarea(attrs={"rows": 4, "cols": 110, "class": "ocb-mono"}),
            "row_template": forms.Textarea(attrs={"rows": 8, "cols": 110, "class": "ocb-mono"}),
        }

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]  # (not in django-stubs) the instance has the form's values here
        # The sample-journal check (the model has none: the rule lives with the formats).
        for field_name, problems in format_problems(self.instance).items():
            for message in problems:
                self.add_error(field_name if field_name in self.fields else None, message)


def _variables_help() -> str:
    rows = [
        (f"{{{{ {alias}.… }}}} ({kind})", ", ".join(row_variables(kind)))
        for kind, alias in ROW_ALIASES.items()
    ]
    return format_html(
        "<p>Values arrive ready for CSV (quoted where needed, formulas neutralised): write "
        "<code>{{{{ entry.fund }}}},{{{{ entry.orgn }}}}</code>, without quotes of your own. Every row must "
        "have as many cells as the last header line. Header: {}. Row (also as <code>{{{{ row.… }}}}</code>, "
        "with <code>{{{{ number }}}}</code> and <code>{{{{ period }}}}</code>):</p><ul>{}</ul>"
        "<p>Descriptions come from the journal settings ({}).</p>",
        ", ".join(HEADER_VARIABLES),
        format_html_join("", "<li><code>{}</code>: {}</li>", rows),
        " ".join("{" + p + "}" for p in PLACEHOLDERS),
    )


@admin.register(JournalFormat)
class JournalFormatAdmin(admin.ModelAdmin):
    form = JournalFormatForm
    list_display = ("name", "description", "rows", "delimiter_label", "is_active", "updated_at")
    list_filter = ("is_active", "rows")
    search_fields = ("name", "description")

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return (
            (None, {"fields": ("name", "description", "rows", "delimiter", "is_active")}),
            ("Templates", {"fields": ("header_template", "row_template"), "description": _variables_help()}),
        )

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """A new format starts as the built-in gl layout."""
        return {
            "header_template": GL_HEADER_TEMPLATE,
            "row_template": GL_ROW_TEMPLATE,
            **super().get_changeform_initial_data(request),
        }

    @admin.display(description="delimiter", ordering="delimiter")
    def delimiter_label(self, obj: JournalFormat) -> str:
        return obj.get_delimiter_display()

    def save_model(self, request: HttpRequest, obj: JournalFormat, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = services.journal_format_save(
            format_id=obj.pk if change else None,
            name=data["name"],
            description=data.get("description", ""),
            rows=data["rows"],
            delimiter=data["delimiter"],
            header_template=data.get("header_template", ""),
            row_template=data["row_template"],
            is_active=data.get("is_active", True),
        )
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: JournalFormat) -> None:
        services.journal_format_delete(name=obj.name)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[JournalFormat]) -> None:
        for name in list(queryset.values_list("name", flat=True)):
            services.journal_format_delete(name=name)


# --- exports ----------------------------------------------------------------------------------


def _money(value: Any, currency: str) -> str:
    return format_money(value, currency)


@admin.register(JournalExport)
class JournalExportAdmin(admin.ModelAdmin):
    list_display = (
        "number",
        "period",
        "format_name",
        "row_count",
        "debit_money",
        "credit_money",
        "statement_count",
        "created_at",
        "actor_name",
        "download",
    )
    list_filter = ("period", "format_name")
    list_select_related = ("period",)
    readonly_fields = (
        "number",
        "period",
        "format_name",
        "journal_format",
        "download",
        "row_count",
        "entry_count",
        "debit_money",
        "credit_money",
        "currency",
        "statement_count",
        "statement_list",
        "sha256",
        "rows_sha256",
        "size_bytes",
        "created_at",
        "actor_name",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # exports are made on the export page

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # kept for audit

    def has_export_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("journals.add_journalexport"))

    # --- columns ----------------------------------------------------------------------------

    @admin.display(description="export", ordering="id")
    def number(self, obj: JournalExport) -> str:
        return f"#{obj.pk}"

    @admin.display(description="debits")
    def debit_money(self, obj: JournalExport) -> str:
        return _money(obj.debit_total, obj.currency)

    @admin.display(description="credits")
    def credit_money(self, obj: JournalExport) -> str:
        return _money(obj.credit_total, obj.currency)

    @admin.display(description="file")
    def download(self, obj: JournalExport) -> str:
        url = reverse("admin:journals_journalexport_download", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.filename or "download")

    @admin.display(description="statements")
    def statement_list(self, obj: JournalExport) -> str:
        return ", ".join(obj.statements or []) or "—"

    # --- pages ------------------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        return [
            path(
                "export/", self.admin_site.admin_view(self.export_view), name="journals_journalexport_export"
            ),
            path(
                "export/run/",
                self.admin_site.admin_view(require_POST(self.export_run_view)),
                name="journals_journalexport_run",
            ),
            path(
                "<int:pk>/download/",
                self.admin_site.admin_view(self.download_view),
                name="journals_journalexport_download",
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {"can_export": self.has_export_permission(request), **(extra_context or {})}
        return super().changelist_view(request, context)

    def _export_url(self, period: str, format_name: str) -> str:
        query = urlencode({"period": period, "format": format_name})
        return f"{reverse('admin:journals_journalexport_export')}?{query}"

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Choose period and format; preview the first rows and the totals, or the refusal."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        periods = list(BillingPeriod.objects.order_by("-period").values_list("period", "status"))
        formats = selectors.journal_formats_available()
        default_period = next((p for p, status in periods if status != BillingPeriod.Status.OPEN), "")
        period = request.GET.get("period") or default_period or (periods[0][0] if periods else "")
        format_name = request.GET.get("format") or "gl"
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Export a journal",
            "periods": periods,
            "formats": formats,
            "period": period,
            "format_name": format_name,
            "can_export": self.has_export_permission(request),
            "preview_rows": PREVIEW_ROWS,
        }
        if period:
            try:
                period_obj = BillingPeriod.objects.filter(period=period).first()
                if period_obj is None:
                    raise Refused(f"no billing period {period}")
                preview = selectors.journal_preview(period_obj, format_name, limit=PREVIEW_ROWS)
            except Refused as exc:
                context["error"] = str(exc)
            else:
                journal = preview.journal
                currency = journal.currency
                context.update(
                    {
                        "preview": preview,
                        "problems": journal.problems,
                        "totals": {
                            "statements": len(journal.statements),
                            "statement_total": _money(journal.statement_total, currency),
                            "debits": len(journal.debits),
                            "credits": len(journal.credits),
                            "debit_total": _money(journal.debit_total, currency),
                            "credit_total": _money(journal.credit_total, currency),
                            "lines": len(journal.lines),
                            "balanced": journal.debit_total == journal.credit_total,
                        },
                        "exports": [
                            {
                                "export": e,
                                "debit": _money(e.debit_total, e.currency),
                                "credit": _money(e.credit_total, e.currency),
                            }
                            for e in selectors.journal_exports(period_obj)[:10]
                        ],
                    }
                )
        return TemplateResponse(request, "admin/journals/journalexport/export.html", context)

    def export_run_view(self, request: HttpRequest) -> HttpResponse:
        """Export (kept as a JournalExport) and download it."""
        if not self.has_export_permission(request):
            raise PermissionDenied
        period = request.POST.get("period", "")
        format_name = request.POST.get("format", "gl")
        try:
            export = services.journal_export(period=period, format=format_name, actor=request.user)
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(self._export_url(period, format_name))
        messages.success(
            request,
            f"Exported journal #{export.pk} ({export.format_name}, {export.period.period}): "
            f"{export.row_count} rows, debits {_money(export.debit_total, export.currency)}, "
            f"credits {_money(export.credit_total, export.currency)}.",
        )
        return HttpResponseRedirect(reverse("admin:journals_journalexport_download", args=[export.pk]))

    def download_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        export = get_object_or_404(JournalExport.objects.select_related("period"), pk=pk)
        services.journal_export_downloaded(export=export, actor=request.user)
        content_type = "text/tab-separated-values" if export.filename.endswith(".tsv") else "text/csv"
        return FileResponse(
            export.file.open("rb"),
            as_attachment=True,
            filename=download_name(export.filename, "journal.csv"),
            content_type=f"{content_type}; charset=utf-8",
        )
