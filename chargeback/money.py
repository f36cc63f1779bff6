"""Money: exact Decimal storage on every database, and the cent rule.

SQLite's NUMERIC affinity keeps only 15 significant digits and SUM() goes through
floats, so on SQLite a MoneyField is stored as a 64-bit integer count of 10^-10 units
(exact, sortable, and summed exactly by SQLite's integer SUM). On PostgreSQL it is a
plain numeric(28, 10). Either way Python sees a Decimal with 10 decimal places.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

MONEY_PLACES = 10
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
_SCALE = 10**MONEY_PLACES
# The largest amount a single SQLite integer can hold at this scale (about 922 million).
SQLITE_MONEY_LIMIT = Decimal(2**63 - 1).scaleb(-MONEY_PLACES)
CENT = Decimal("0.01")
ZERO = Decimal(0)

CURRENCY_SYMBOLS = {
    "USD": "$",
    "CAD": "CA$",
    "AUD": "A$",
    "NZD": "NZ$",
    "EUR": "€",
    "GBP": "£",
    "CHF": "CHF ",
    "JPY": "¥",
    "CNY": "CN¥",
    "INR": "₹",
    "SEK": "kr ",
    "NOK": "kr ",
    "DKK": "kr ",
    "ZAR": "R ",
    "BRL": "R$",
    "MXN": "MX$",
    "SGD": "S$",
    "HKD": "HK$",
    "KRW": "₩",
}
# ISO 4217 minor units that differ from 2.
CURRENCY_MINOR_UNITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3}


def quantize_money(value: Decimal) -> Decimal:
    """Round to the stored precision (10 places); half-even keeps sums unbiased."""
    return value.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


def minor_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-CURRENCY_MINOR_UNITS.get(currency.upper(), 2))


def round_currency(value: Decimal, currency: str = "USD") -> Decimal:
    """The cent rule: round once, half-up, to the currency's minor unit."""
    return value.quantize(minor_unit(currency), rounding=ROUND_HALF_UP)


def to_cents(value: Decimal, currency: str = "USD") -> int:
    """Amount in integer minor units, rounded half-up (for JSON and integer arithmetic)."""
    places = CURRENCY_MINOR_UNITS.get(currency.upper(), 2)
    return int(round_currency(value, currency).scaleb(places))


def currency_symbol(currency: str) -> str:
    return CURRENCY_SYMBOLS.get(currency.upper(), currency.upper() + " ")


def format_money(value: Decimal | None, currency: str = "USD") -> str:
    """'$1,234.50', '-$12.00'; rounded half-up to the minor unit."""
    if value is None:
        return ""
    rounded = round_currency(value, currency)
    places = CURRENCY_MINOR_UNITS.get(currency.upper(), 2)
    sign = "-" if rounded < 0 else ""
    return f"{sign}{currency_symbol(currency)}{abs(rounded):,.{places}f}"


def money_json(value: Decimal | None, currency: str = "USD") -> dict[str, Any] | None:
    """Money in JSON output: the exact amount as a string and the rounded minor units."""
    if value is None:
        return None
    return {
        "amount": format(value.normalize() if value == 0 else value, "f"),
        "cents": to_cents(value, currency),
    }


def parse_money(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError) as exc:
        raise ValueError(f"not a number: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    return value


class MoneyField(models.DecimalField):
    """A Decimal with 10 places, exact on SQLite (scaled integer) and PostgreSQL (numeric)."""

    description = "Money amount (Decimal, 10 decimal places)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 28)
        kwargs.setdefault("decimal_places", MONEY_PLACES)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        for key, default in (("max_digits", 28), ("decimal_places", MONEY_PLACES)):
            if kwargs.get(key) == default:
                kwargs.pop(key)
        return name, path, args, kwargs

    def get_internal_type(self) -> str:
        # Not "DecimalField": the SQLite backend would push our integers through float.
        return "MoneyField"

    def db_type(self, connection: Any) -> str:
        if connection.vendor == "sqlite":
            return "bigint"
        return f"numeric({self.max_digits}, {self.decimal_places})"

    def rel_db_type(self, connection: Any) -> str:
        return self.db_type(connection)

    def cast_db_type(self, connection: Any) -> str:
        return self.db_type(connection)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if hasattr(value, "as_sql"):
            return value
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        value = self.to_python(value)
        if connection.vendor == "sqlite":
            exact = value.scaleb(MONEY_PLACES)
            if exact != exact.to_integral_value():
                exact = quantize_money(value).scaleb(MONEY_PLACES)
            if abs(exact) > 2**63 - 1:
                raise ValidationError(
                    f"amount {value} exceeds what SQLite can store exactly "
                    f"(±{SQLITE_MONEY_LIMIT:,.2f}); use PostgreSQL for amounts this large"
                )
            return int(exact)
        return quantize_money(value)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Decimal | None:
        if value is None:
            return None
        if connection.vendor == "sqlite":
            if isinstance(value, float):
                # SUM over an empty set or mixed input; never expected for stored integers.
                value = int(value)
            return Decimal(int(value)).scaleb(-MONEY_PLACES).quantize(MONEY_QUANTUM)
        return Decimal(value).quantize(MONEY_QUANTUM)
