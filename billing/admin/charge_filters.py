"""The charge list's filters: period (indexed), source, state, flag reason, and typed PI/project/service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from .. import selectors, views
from ..models import (
    PI,
    BillingPeriod,
    Charge,
    FlagReason,
    FlagRule,
    Project,
    Source,
)

# Filters whose column leads a (period, ...) index: with one of them the period filter keeps its
# index, otherwise it walks the primary key (see selectors.charges_in_period).
INDEXED_CHARGE_FILTERS = ("state", "source", "service", "pi")


class PeriodFilter(admin.SimpleListFilter):
    title = "period"
    parameter_name = "period"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (p.period, p.period if p.status == BillingPeriod.Status.OPEN else f"{p.period} ({p.status})")
            for p in BillingPeriod.objects.order_by("-period")[:36]
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        period = views.period_named(request, value)
        if period is None:
            return queryset.none()
        if queryset.model is not Charge:
            return queryset.filter(period=period)
        indexed = any(request.GET.get(name) for name in INDEXED_CHARGE_FILTERS)
        return selectors.charges_in_period(queryset, period, use_index=indexed)


class SourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(s.slug, s.display_name or s.slug) for s in Source.objects.order_by("slug")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        source_id = Source.objects.filter(slug=self.value()).values_list("id", flat=True).first()
        return queryset.filter(source_id=source_id) if source_id else queryset.none()


class ReviewStateFilter(admin.SimpleListFilter):
    title = "review state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return Charge.ReviewState.choices

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(review_state=self.value()) if self.value() else queryset


class FlagReasonFilter(admin.SimpleListFilter):
    title = "flag reason"
    parameter_name = "reason"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        reasons = [(value, label) for value, label in FlagReason.choices if value != FlagReason.RULE]
        rules = [(f"rule:{r.name}", f"Rule: {r.name}") for r in FlagRule.objects.order_by("name")]
        return reasons + rules

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return selectors.charges_with_flag(queryset, value) if value else queryset


class InputFilter(admin.SimpleListFilter):
    """A filter typed into a box (with suggestions), for columns with too many values to list."""

    template = "admin/billing/input_filter.html"
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("", "")]  # rendered as an input box; a non-empty list makes the filter visible

    def suggestions(self, request: HttpRequest) -> list[str]:
        return []

    def choices(self, changelist: Any) -> Iterator[Any]:  # type: ignore[override]
        other = {k: v for k, v in changelist.get_filters_params().items() if k != self.parameter_name}
        yield {
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            "placeholder": self.placeholder,
            "other_params": [(k, v[-1] if isinstance(v, list) else v) for k, v in other.items()],
            "clear_url": changelist.get_query_string(remove=[self.parameter_name]),
            "suggestions": self._suggestions,
        }

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        self._suggestions = self.suggestions(request)


def _chosen_period(request: HttpRequest) -> BillingPeriod | None:
    value = request.GET.get("period")
    return views.period_named(request, value) if value else None


def _cached_rankings(request: HttpRequest) -> selectors.PeriodRankings | None:
    period = _chosen_period(request)
    return views.rankings_if_cached(period, request) if period else None


class _PayerFilter(InputFilter):
    """A PI or project typed by its key, or "none" for charges without one; suggested from the
    chosen period's cached rankings, else the first keys in order. The parameter is named after the
    charge's foreign key it filters."""

    model: type[PI] | type[Project]
    key_field: str  # the typed key: PI.email, Project.project_id
    ranking: str  # the PeriodRankings list of the top keys
    lowercase = False  # emails are stored lower-case

    def suggestions(self, request: HttpRequest) -> list[str]:
        rankings = _cached_rankings(request)
        if rankings:
            return [r.key for r in getattr(rankings, self.ranking)]
        keys = self.model.objects.order_by(self.key_field).values_list(self.key_field, flat=True)
        return list(keys[:300])

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip()
        if self.lowercase:
            value = value.lower()
        if not value:
            return queryset
        if value.lower() == "none":
            return queryset.filter(**{f"{self.parameter_name}__isnull": True})
        row_id = self.model.objects.filter(**{self.key_field: value}).values_list("id", flat=True).first()
        return queryset.filter(**{f"{self.parameter_name}_id": row_id}) if row_id else queryset.none()


class PIFilter(_PayerFilter):
    title = "PI"
    parameter_name = "pi"
    placeholder = "email, or “none”"
    model = PI
    key_field = "email"
    ranking = "top_pis"
    lowercase = True


class ProjectFilter(_PayerFilter):
    title = "project"
    parameter_name = "project"
    placeholder = "project id, or “none”"
    model = Project
    key_field = "project_id"
    ranking = "top_projects"


class ServiceFilter(InputFilter):
    title = "service"
    parameter_name = "service"
    placeholder = "service name"

    def suggestions(self, request: HttpRequest) -> list[str]:
        rankings = _cached_rankings(request)
        return rankings.services[:300] if rankings else []

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip()
        return queryset.filter(service_name=value) if value else queryset
