"""Admin screens of collection: collection points (edited through the service, with an audit
history, and collected now on request) and the files collected from them (read-only)."""

from __future__ import annotations

from typing import Any

from auditlog.mixins import AuditlogHistoryAdminMixin
from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from chargeback.admin_helpers import ReadOnlyAdminMixin
from chargeback.errors import Refused

from . import selectors, services, tasks
from .models import CollectedObject, CollectionPoint


class CollectionPointForm(forms.ModelForm):
    class Meta:
        model = CollectionPoint
        fields = list(services.POINT_FIELDS)
        widgets = {
            "location": forms.TextInput(
                attrs={"size": 60, "placeholder": "s3://bucket/prefix or /srv/exports"}
            ),
            "pattern": forms.TextInput(attrs={"size": 40}),
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors:
            try:  # the service's rules, shown on the form
                services._clean_point(dict(data))
            except Refused as exc:
                raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(CollectionPoint)
class CollectionPointAdmin(AuditlogHistoryAdminMixin, admin.ModelAdmin):
    form = CollectionPointForm
    show_auditlog_history_link = True
    list_display = ("name", "kind", "location", "source", "pattern", "enabled", "files_col", "last_run_col")
    list_filter = ("kind", "enabled", "source")
    list_select_related = ("source",)
    search_fields = ("name", "location", "note")
    readonly_fields = ("last_run_at", "last_error", "running_since", "actor_name", "created_at", "updated_at")
    actions = ["collect_now"]

    @admin.display(description="files")
    def files_col(self, obj: CollectionPoint) -> SafeString:
        counts = selectors.point_file_counts(obj)
        url = reverse("admin:billing_collectedobject_changelist") + f"?point__id__exact={obj.pk}"
        failed = counts[CollectedObject.Status.FAILED]
        return format_html(
            '<a href="{}">{} imported</a>{}',
            url,
            counts[CollectedObject.Status.IMPORTED],
            format_html(', <span class="ocb-flagged-link">{} failed</span>', failed) if failed else "",
        )

    @admin.display(description="last run", ordering="last_run_at")
    def last_run_col(self, obj: CollectionPoint) -> SafeString | str:
        if obj.last_run_at is None:
            return "never"
        when = timezone.localtime(obj.last_run_at).strftime("%Y-%m-%d %H:%M")
        if obj.last_error:
            return format_html('{}<span class="ocb-sub ocb-error">{}</span>', when, obj.last_error)
        return when

    def save_model(self, request: HttpRequest, obj: CollectionPoint, form: Any, change: bool) -> None:
        saved = services.collection_point_save(
            point_id=obj.pk if change else None,
            actor=request.user,
            **{name: form.cleaned_data.get(name) for name in services.POINT_FIELDS},
        )
        obj.pk = saved.pk
        obj.refresh_from_db()

    @admin.action(description="Collect now", permissions=["change"])
    def collect_now(self, request: HttpRequest, queryset: QuerySet[CollectionPoint]) -> HttpResponse | None:
        names = list(queryset.values_list("name", flat=True))
        result = tasks.collect_exports.delay(names)
        if result.ready():  # no broker: it ran in this request
            summary = result.get()
            counts = ", ".join(f"{n} {a}" for a, n in sorted(summary["counts"].items())) or "no files"
            level = messages.ERROR if summary["failed"] or summary["point_errors"] else messages.SUCCESS
            messages.add_message(request, level, f"Collected {', '.join(names)}: {counts}.")
            for problem in [*summary["failed"], *summary["point_errors"].values()]:
                messages.error(request, problem)
        else:
            messages.info(request, f"Collection of {', '.join(names)} is queued; see Collected files.")
        return HttpResponseRedirect(request.get_full_path())


@admin.register(CollectedObject)
class CollectedObjectAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every file the collection points have seen, by key, with the version last seen."""

    list_display = ("key", "point", "status_col", "period", "import_col", "version", "collected_at")
    list_filter = ("status", "point")
    list_select_related = ("point", "import_run", "failed_import")
    search_fields = ("key", "version", "error")
    ordering = ("-collected_at", "-id")
    fields = (
        "point",
        "key",
        "version",
        "size_bytes",
        "period",
        "status_col",
        "import_col",
        "failed_import_col",
        "error",
        "first_seen_at",
        "collected_at",
    )
    readonly_fields = fields

    @admin.display(description="status", ordering="status")
    def status_col(self, obj: CollectedObject) -> SafeString:
        return format_html(
            '<span class="ocb-badge ocb-badge-{}">{}</span>', obj.status, obj.get_status_display()
        )

    @admin.display(description="import in force")
    def import_col(self, obj: CollectedObject) -> SafeString | str:
        return _import_link(obj.import_run_id)

    @admin.display(description="failed import")
    def failed_import_col(self, obj: CollectedObject) -> SafeString | str:
        return _import_link(obj.failed_import_id)


def _import_link(import_id: int | None) -> SafeString | str:
    if not import_id:
        return "—"
    return format_html(
        '<a href="{}">#{}</a>', reverse("admin:billing_import_change", args=[import_id]), import_id
    )
