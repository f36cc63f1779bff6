"""What the admin accepts from a URL: never a 500 for a hostile query string.

Django's admin lets a URL filter a list by any lookup on the model's own fields
(`?resource_id__regex=...`, `?tags__contains=...`, `?created_at__year=99999999999999999999`): a
regex the database runs with a backtracking engine (SQLite's REGEXP is Python's `re`), lookups a
backend does not support, values that overflow a date or an integer. Every ModelAdmin registered on
the OpenChargeback site (ours and third-party ones) gets `HardenedAdminMixin`:

- a URL may filter only by what the page offers: its list filters (their own parameters, and
  exact/isnull/range lookups on the filtered fields), its date hierarchy, and raw-id popups;
  anything else is refused with 400;
- a value the database cannot take (an integer beyond 64 bits, a year past 9999) makes the list
  answer as for any invalid filter (Django's "?e=1" page), never a server error.

`typed_id` reads an id a person typed into a search box (`#123`, `123`): ASCII digits only
(`"²".isdigit()` is true in Python), and small enough for a bigint column.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.admin import SimpleListFilter
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.db import DataError, NotSupportedError
from django.http import HttpRequest

from .admin_helpers import with_mixin_first

# Lookups a field list filter of Django's admin puts in a URL.
FILTER_SUFFIXES = ("exact", "isnull", "gte", "lt", "lte", "gt", "in", "isempty", "id__exact", "pk__exact")
DATE_HIERARCHY_SUFFIXES = ("year", "month", "day")
_TYPED_ID = re.compile(r"#?([0-9]{1,18})")


def typed_id(term: str) -> int | None:
    """`#123` or `123` as an id; None for anything else (non-ASCII digits, more than 18 digits)."""
    match = _TYPED_ID.fullmatch((term or "").strip())
    return int(match.group(1)) if match else None


def _filter_paths(model_admin: Any, request: HttpRequest | None) -> tuple[set[str], set[str]]:
    """(parameter names of simple filters, field paths of field filters) of a list page."""
    names: set[str] = set()
    paths: set[str] = set()
    list_filter = model_admin.get_list_filter(request) if request is not None else model_admin.list_filter
    for item in list_filter:
        if isinstance(item, type) and issubclass(item, SimpleListFilter):
            names.add(str(item.parameter_name))
        elif isinstance(item, list | tuple):
            paths.add(str(item[0]))
        elif isinstance(item, str):
            paths.add(item)
    return names, paths


class HardenedChangeList(ChangeList):
    """A list whose filters carry values the database cannot take answers like an invalid filter."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> Any:
        try:
            return super().get_queryset(request, exclude_parameters)
        except (OverflowError, DataError, NotSupportedError) as exc:
            raise IncorrectLookupParameters(exc) from exc

    def get_results(self, request: HttpRequest) -> None:
        try:
            super().get_results(request)
        except (OverflowError, DataError, NotSupportedError) as exc:
            raise IncorrectLookupParameters(exc) from exc


class HardenedAdminMixin:
    """Mixed into every ModelAdmin of the site (see the module docstring)."""

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if not super().lookup_allowed(lookup, value, request):  # type: ignore[misc]
            return False
        model = self.model  # type: ignore[attr-defined]
        for fk_lookup in model._meta.related_fkey_lookups:  # raw-id popups (limit_choices_to)
            from django.contrib.admin import widgets

            fk_lookup = fk_lookup() if callable(fk_lookup) else fk_lookup
            if (lookup, value) in widgets.url_params_from_lookup_dict(fk_lookup).items():
                return True
        names, paths = _filter_paths(self, request)
        if lookup in names or lookup in paths:
            return True
        for path in paths:
            if lookup.startswith(path + "__") and lookup[len(path) + 2 :] in FILTER_SUFFIXES:
                return True
        hierarchy = getattr(self, "date_hierarchy", None)
        return bool(hierarchy) and lookup in {f"{hierarchy}__{part}" for part in DATE_HIERARCHY_SUFFIXES}

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        changelist = super().get_changelist(request, **kwargs)  # type: ignore[misc]
        if issubclass(changelist, HardenedChangeList):
            return changelist
        return type(f"Hardened{changelist.__name__}", (HardenedChangeList, changelist), {})


def hardened(admin_class: type) -> type:
    """The ModelAdmin class with HardenedAdminMixin first in its bases (itself if it has it)."""
    return with_mixin_first(admin_class, HardenedAdminMixin)
