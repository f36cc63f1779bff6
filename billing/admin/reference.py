"""Reference data: sources, PIs, projects, account mappings."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .. import services, spending
from ..forms import AccountMappingForm, SourceForm
from ..models import PI, AccountMapping, Project, Source
from .base import ConfigManagedMixin, ServiceRefusalMixin


@admin.register(Source)
class SourceAdmin(ServiceRefusalMixin, ConfigManagedMixin, admin.ModelAdmin):
    config_keys = ("imports.known_sources",)
    form = SourceForm
    list_display = ("slug", "display_name", "filename_pattern", "fund_org", "account", "is_active")
    search_fields = ("slug", "display_name")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("slug",) if obj else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Source, form: Any, change: bool) -> None:
        data = form.cleaned_data
        fields = {
            name: data.get(name, "") for name in ("display_name", "filename_pattern", "fund_org", "account")
        }
        if change:
            saved = services.source_update(slug=obj.slug, **fields)
        else:
            saved = services.source_create(slug=data["slug"], **fields)
        obj.pk = saved.pk
        obj.refresh_from_db()
        # Saved either way: the journal only needs these when it is exported.
        missing = [
            name
            for name, value in (("credit fund/org", saved.fund_org), ("account", saved.account))
            if not value
        ]
        if missing:
            messages.warning(
                request,
                f"Source {saved.slug} has no {' and no '.join(missing)}: the journal needs them to credit its "
                "revenue (without a credit fund/org the journal is refused as unbalanced; without an account, "
                "its credit falls back to the journal's default account).",
            )


@admin.register(PI)
class PIAdmin(admin.ModelAdmin):
    list_display = ("email", "name", "department", "project_count", "spending_link")
    search_fields = ("email", "name", "department")
    fields = ("email", "name", "department", "user", "created_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        from django.db.models import Count

        return super().get_queryset(request).annotate(n_projects=Count("projects"))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("email", "user", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # PIs appear on first sight in an import, or through a mapping/correction

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="projects", ordering="n_projects")
    def project_count(self, obj: Any) -> int:
        return obj.n_projects

    @admin.display(description="spending")
    def spending_link(self, obj: PI) -> SafeString:
        return format_html('<a href="{}">{}</a>', spending.pi_spending_url(obj.email), "24 periods")

    def save_model(self, request: HttpRequest, obj: PI, form: Any, change: bool) -> None:
        services.pi_update(
            email=obj.email, name=form.cleaned_data["name"], department=form.cleaned_data["department"]
        )
        obj.refresh_from_db()


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = (
        "project_id",
        "name",
        "pi_col",
        "fund_org",
        "cost_center",
        "reference_1",
        "is_active",
        "spending_link",
    )
    list_filter = ("is_active",)
    list_select_related = ("pi",)
    search_fields = ("project_id", "name", "pi__email", "fund_org", "reference_1", "reference_2")
    # The fields the service lets an edit change (save_model passes them all), between read-only ones.
    fields = ("project_id", "pi", *services.PROJECT_EDITABLE, "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("project_id", "pi", "created_at")

    @admin.display(description="PI", ordering="pi__email")
    def pi_col(self, obj: Project) -> SafeString:
        return format_html('<a href="{}">{}</a>', spending.pi_spending_url(obj.pi.email), obj.pi.email)

    @admin.display(description="spending")
    def spending_link(self, obj: Project) -> SafeString:
        return format_html('<a href="{}">{}</a>', spending.project_spending_url(obj.project_id), "24 periods")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created by imports, mappings and corrections, under their PI

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Project, form: Any, change: bool) -> None:
        services.project_update(
            project_id=obj.project_id, **{name: form.cleaned_data[name] for name in services.PROJECT_EDITABLE}
        )
        obj.refresh_from_db()


@admin.register(AccountMapping)
class AccountMappingAdmin(ServiceRefusalMixin, admin.ModelAdmin):
    form = AccountMappingForm
    list_display = ("sub_account_id", "source", "project", "pi_col", "fund_org", "note")
    list_select_related = ("source", "project__pi")
    search_fields = ("sub_account_id", "project__project_id", "project__pi__email", "note")

    @admin.display(description="PI")
    def pi_col(self, obj: AccountMapping) -> str:
        return obj.project.pi.email

    def save_model(self, request: HttpRequest, obj: AccountMapping, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = services.account_mapping_set(
            sub_account_id=data["sub_account_id"],
            project_id=data["project_code"],
            pi_email=data["pi_email"],
            fund_org=data.get("fund_org", ""),
            source=data["source"].slug if data.get("source") else None,
            note=data.get("note", ""),
        )
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: AccountMapping) -> None:
        services.account_mapping_delete(mapping_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for pk in queryset.values_list("pk", flat=True):
            services.account_mapping_delete(mapping_id=pk)


# Rates, subsidies, usage files and re-ratings (billing/rating) register their own screens.
from ..collection import admin as collection_admin  # noqa: E402, F401
from ..rating import admin as rating_admin  # noqa: E402, F401
