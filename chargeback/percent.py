"""The one rule for a discount shown as a percentage, everywhere (statements, PDFs, emails, the
portal, the admin): the exact discount / list × 100, shown as a whole percent from 1 % up and with
one decimal below 1 %, rounded half-up ("15 %", "0.4 %"); nothing when the list total is zero."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def discount_percent(list_total: Decimal, discount: Decimal) -> Decimal | None:
    """Discount as an exact percentage of list (None when list is zero)."""
    if not list_total:
        return None
    return discount / list_total * 100


def format_percent(value: Decimal | None) -> str:
    """'15 %' (whole percent from 1 %, one decimal below, half-up); '' for None."""
    if value is None:
        return ""
    places = Decimal(1) if abs(value) >= 1 or value == 0 else Decimal("0.1")
    return f"{value.quantize(places, rounding=ROUND_HALF_UP)} %"


def discount_percent_text(list_total: Decimal | None, discount: Decimal | None) -> str:
    """The discount as people read it ('15 %'), or '' when there is no list total or discount."""
    if discount is None or not list_total:
        return ""
    return format_percent(discount_percent(list_total, discount))
