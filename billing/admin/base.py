"""Shared by the billing admin (and the apps above): money in the installation's currency, config-managed pages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.safestring import SafeString

from chargeback.admin_helpers import cell_html
from chargeback.errors import Refused
from chargeback.money import format_money

from .. import selectors

_currency: ContextVar[str | None] = ContextVar("openchargeback_currency", default=None)


def currency() -> str:
    """The currency of the page being rendered (read once per request, see `currency_scope`)."""
    return _currency.get() or selectors.billing_settings_get().currency_code


@contextmanager
def currency_scope() -> Iterator[None]:
    token = _currency.set(selectors.billing_settings_get().currency_code)
    try:
        yield
    finally:
        _currency.reset(token)


def money(value: Decimal | None) -> str:
    return format_money(value, currency()) if value is not None else "—"


def money_cell(value: Decimal | None) -> SafeString:
    css = "ocb-money ocb-negative" if value is not None and value < 0 else "ocb-money"
    return cell_html('<span class="{}">{}</span>', css, money(value))


class CurrencyAdminMixin:
    """Renders list and form pages inside a currency scope, so money columns cost no query each."""

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with currency_scope():
            return _rendered(super().changelist_view(request, *args, **kwargs))  # type: ignore[misc]

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with currency_scope():
            return _rendered(super().changeform_view(request, *args, **kwargs))  # type: ignore[misc]


def _rendered(response: HttpResponse) -> HttpResponse:
    """A template response rendered now (inside the scope), any other response as it is."""
    if hasattr(response, "render"):
        response.render()
    return response


class ServiceRefusalMixin:
    """A service's refusal of a form's save (a rule the form cannot check, a race with another
    editor) is shown as an error message on the page the form came from."""

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return super().changeform_view(request, *args, **kwargs)  # type: ignore[misc]
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())


class ConfigManagedMixin:
    """Pages of settings that a config.yaml read with -c manages say so (and which keys)."""

    config_keys: tuple[str, ...] = ()

    def _config_notice(self, request: HttpRequest) -> None:
        notice = selectors.config_managed_notice(self.config_keys)
        if notice:
            messages.info(request, notice)

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "GET":
            self._config_notice(request)
        return super().changeform_view(request, *args, **kwargs)  # type: ignore[misc]

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "GET":
            self._config_notice(request)
        return super().changelist_view(request, *args, **kwargs)  # type: ignore[misc]


def _fieldset_names(fieldsets: Any) -> list[str]:
    """Every field named in fieldsets (pages that show everything read-only)."""
    return [name for _, options in fieldsets for name in options["fields"] if isinstance(name, str)]


def _badge(value: str, label: str) -> SafeString:
    return cell_html('<span class="ocb-badge ocb-badge-{}">{}</span>', value, label)
