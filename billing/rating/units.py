"""The units rates are quoted in, and the month arithmetic rating needs."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

# Quantities are kept with this many decimal places (Charge.quantity's precision), prices with
# PRICE_PLACES, so that quantity × price is exact at money's 10 places.
QUANTITY_PLACES = 6
PRICE_PLACES = 4


@dataclass(frozen=True)
class Unit:
    code: str
    singular: str
    plural: str
    bytes: int = 0  # storage units: bytes per unit; 0 for time units
    seconds: int = 0  # compute units: seconds per unit


UNITS: dict[str, Unit] = {
    unit.code: unit
    for unit in (
        Unit("core-hour", "core-hour", "core-hours", seconds=3600),
        Unit("gpu-hour", "GPU-hour", "GPU-hours", seconds=3600),
        Unit("gb-month", "GB-month", "GB-months", bytes=10**9),
        Unit("tb-month", "TB-month", "TB-months", bytes=10**12),
        Unit("tib-month", "TiB-month", "TiB-months", bytes=2**40),
    )
}
COMPUTE_UNITS = ("core-hour", "gpu-hour")
STORAGE_UNITS = ("gb-month", "tb-month", "tib-month")
UNIT_CHOICES = [
    ("core-hour", "core-hour"),
    ("gpu-hour", "GPU-hour"),
    ("gb-month", "GB-month (10⁹ bytes)"),
    ("tb-month", "TB-month (10¹² bytes)"),
    ("tib-month", "TiB-month (2⁴⁰ bytes)"),
]


def unit_label(code: str, quantity: Decimal | None = None) -> str:
    """'core-hours', or 'core-hour' for a quantity of exactly one; the code itself when unknown."""
    unit = UNITS.get(code)
    if unit is None:
        return code
    return unit.singular if quantity is not None and quantity == 1 else unit.plural


def decimal_of(value: Fraction | int, places: int = QUANTITY_PLACES) -> Decimal:
    """An exact fraction rounded once, half-even, to `places` decimals (integer arithmetic only)."""
    value = Fraction(value)
    scaled = value * 10**places
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    twice = 2 * rest
    if twice > scaled.denominator or (twice == scaled.denominator and whole % 2):
        whole += 1
    return Decimal(whole).scaleb(-places)


# --- months -----------------------------------------------------------------------------------


def month_index(period: str) -> int:
    """'2025-03' -> a month number that orders and subtracts (year * 12 + month - 1)."""
    year, month = (int(part) for part in period.split("-"))
    return year * 12 + month - 1


def month_of(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def fiscal_year_start(period: str, first_month: int) -> str:
    """The first month of the fiscal year that holds `period` (the year starts in `first_month`)."""
    year, month = (int(part) for part in period.split("-"))
    return f"{year if month >= first_month else year - 1:04d}-{first_month:02d}"


def format_price(value: Decimal, currency: str) -> str:
    """A unit price as quoted, to PRICE_PLACES decimals: '$0.0200'."""
    from chargeback.money import currency_symbol

    sign = "-" if value < 0 else ""
    return f"{sign}{currency_symbol(currency)}{abs(value):,.{PRICE_PLACES}f}"


def format_quantity(value: Decimal) -> str:
    """'1,234.5', '48,210', '0.000278': grouped, without trailing zeros."""
    text = f"{value:,.{QUANTITY_PLACES}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
