"""Template filters of the admin pages: money in the installation's currency."""

from __future__ import annotations

from decimal import Decimal

from django import template

from chargeback.money import format_money

register = template.Library()


@register.filter
def money(value: Decimal | None, currency: str = "USD") -> str:
    """{{ amount|money:currency }} → "$1,234.50" (half-up to the minor unit)."""
    if value is None or value == "":
        return "—"
    return format_money(Decimal(value), currency or "USD")


@register.filter
def flag_labels(summary: str | None) -> list[str]:
    """A charge's flag summary ("missing_fund_org, rule:test") as labels for people."""
    from billing.models import FlagReason

    labels = dict(FlagReason.choices)
    result = []
    for item in (summary or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("rule:"):
            result.append(f"Rule: {item[5:]}")
        elif item.startswith("period_mismatch:"):
            result.append(f"{labels['period_mismatch']} (row says {item.partition(':')[2]})")
        else:
            result.append(str(labels.get(item, item)))
    return result


@register.filter
def money_exact(value: Decimal | None, currency: str = "USD") -> str:
    """An exact sum beside rounded ones: "$1,234.5012" (up to four places more than the currency
    shows, trailing zeros dropped, never fewer than its minor unit)."""
    from chargeback.money import CURRENCY_MINOR_UNITS, currency_symbol

    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    places = CURRENCY_MINOR_UNITS.get((currency or "USD").upper(), 2)
    text = f"{abs(amount):,.{places + 4}f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(places, "0")
    sign = "-" if amount < 0 else ""
    return f"{sign}{currency_symbol(currency or 'USD')}{whole}{'.' + fraction if fraction else ''}"
