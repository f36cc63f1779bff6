"""Imports: the list, upload, progress and download."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from chargeback.admin_helpers import LargeTableAdminMixin

from .. import selectors, views
from ..models import (
    Import,
)
from .base import CurrencyAdminMixin, _badge, _fieldset_names, currency_scope, money_cell


@admin.register(Import)
class ImportAdmin(CurrencyAdminMixin, LargeTableAdminMixin, admin.ModelAdmin):
    list_display = (
        "import_col",
        "status_col",
        "rows_col",
        "charges_col",
        "flagged_col",
        "billed_col",
        "who_col",
        "download_col",
    )
    list_display_links = ("import_col",)
    list_filter = ("status", "source", ("period", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("source", "period")
    search_fields = ("original_name", "sha256")
    ordering = ("-id",)
    change_form_template = "admin/billing/import/change_form.html"
    change_list_template = "admin/billing/import/change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "file_col",
                    "source",
                    "period",
                    "status_col",
                    "replace",
                    "supersedes_col",
                    "parts_col",
                    "actor_name",
                )
            },
        ),
        (
            "Result",
            {
                "fields": (
                    "rows_read",
                    "charges_created",
                    "charges_flagged",
                    "decisions_carried",
                    "list_col",
                    "billed_col",
                    "warnings_col",
                    "error_message",
                )
            },
        ),
        ("File", {"fields": ("size_col", "sha256", "created_at", "started_at", "finished_at")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return _fieldset_names(self.fieldsets)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:billing_import_upload"))

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("upload/", wrap(self.upload_view), name="billing_import_upload"),
            path("guess/", wrap(self.guess_view), name="billing_import_guess"),
            path("<path:object_id>/status/", wrap(self.status_view), name="billing_import_status"),
            path("<path:object_id>/download/", wrap(self.download_view), name="billing_import_download"),
            *super().get_urls(),
        ]

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        with currency_scope():
            return views.import_upload(request, self)

    def guess_view(self, request: HttpRequest) -> HttpResponse:
        return views.import_guess(request, self)

    def status_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        with currency_scope():
            return views.import_status(request, self, object_id)

    def download_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        return views.import_download(request, self, object_id)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        from ..collection.selectors import collection_problems

        context = {"collection_problems": collection_problems(), **(extra_context or {})}
        return super().changelist_view(request, context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        record = Import.objects.filter(pk=object_id).first()
        context = {"import_errors": record.errors if record else [], **(extra_context or {})}
        return super().change_view(request, object_id, form_url, context)

    @admin.display(description="file", ordering="original_name")
    def file_col(self, obj: Import) -> SafeString | str:
        if not obj.file:
            return obj.original_name
        url = reverse("admin:billing_import_download", args=[obj.pk])
        return format_html('<a href="{}" title="download the stored file">{}</a>', url, obj.original_name)

    @admin.display(description="status", ordering="status")
    def status_col(self, obj: Import) -> SafeString:
        return _badge(obj.status, obj.get_status_display())

    @admin.display(description="import", ordering="id")
    def import_col(self, obj: Import) -> SafeString:
        period = obj.period.period if obj.period else "no period"
        return format_html(
            '{}<span class="ocb-sub">#{} · {} · {}</span>', obj.original_name, obj.pk, obj.source.slug, period
        )

    @admin.display(description="rows", ordering="rows_read")
    def rows_col(self, obj: Import) -> str:
        return f"{obj.rows_read:,}"

    @admin.display(description="charges", ordering="charges_created")
    def charges_col(self, obj: Import) -> str:
        return f"{obj.charges_created:,}"

    @admin.display(description="flagged", ordering="charges_flagged")
    def flagged_col(self, obj: Import) -> str:
        return f"{obj.charges_flagged:,}"

    @admin.display(description="by · when", ordering="created_at")
    def who_col(self, obj: Import) -> SafeString:
        return format_html(
            '{}<span class="ocb-sub">{}</span>',
            obj.actor_name or "—",
            timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M"),
        )

    @admin.display(description="file")
    def download_col(self, obj: Import) -> SafeString | str:
        if not obj.file:
            return "—"
        url = reverse("admin:billing_import_download", args=[obj.pk])
        return format_html('<a href="{}" title="the stored copy, as uploaded">download</a>', url)

    @admin.display(description="billed")
    def billed_col(self, obj: Import) -> SafeString:
        return money_cell(obj.billed_total)

    @admin.display(description="list")
    def list_col(self, obj: Import) -> SafeString:
        return money_cell(obj.list_total)

    @admin.display(description="size")
    def size_col(self, obj: Import) -> str:
        return f"{obj.size_bytes:,} bytes"

    @admin.display(description="supersedes")
    def supersedes_col(self, obj: Import) -> SafeString | str:
        if not obj.supersedes_id:
            return "—"
        url = reverse("admin:billing_import_change", args=[obj.supersedes_id])
        return format_html('<a href="{}">#{}</a>', url, obj.supersedes_id)

    @admin.display(description="same file, other periods")
    def parts_col(self, obj: Import) -> SafeString | str:
        """A file whose rows span several billing periods is one import per period."""
        links = [
            format_html(
                '<a href="{}">#{} ({})</a>',
                reverse("admin:billing_import_change", args=[o.pk]),
                o.pk,
                o.period,
            )
            for o in selectors.imports_of_same_file(obj)
            if o.pk != obj.pk
        ]
        return format_html_join(", ", "{}", ((link,) for link in links)) if links else "—"

    @admin.display(description="warnings")
    def warnings_col(self, obj: Import) -> str:
        return "; ".join(obj.warnings or []) or "—"
