"""Template filters of the portal."""

from __future__ import annotations

from decimal import Decimal

from django import template

from chargeback.money import format_money
from chargeback.percent import discount_percent_text

register = template.Library()


@register.filter
def money(value: Decimal | str | None, currency: str = "USD") -> str:
    """'$1,234.50' in the installation's currency (half-up to the minor unit); exact decimal
    strings (amounts kept in JSON) are accepted too."""
    if isinstance(value, str):
        value = Decimal(value)
    return format_money(value, currency or "USD")


@register.filter
def percent_of(discount: Decimal | None, list_total: Decimal | None) -> str:
    """The discount as a percentage of the list price ('15 %'), or ''."""
    return discount_percent_text(list_total, discount)


@register.filter
def period_label(period: str) -> str:
    """'2025-01' → 'January 2025'."""
    import datetime as dt

    try:
        year, month = (int(p) for p in str(period).split("-"))
        return dt.date(year, month, 1).strftime("%B %Y")
    except ValueError:
        return str(period)
