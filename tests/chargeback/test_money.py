"""Money: exact storage with 10 decimals on the active database, exact sums, and the cent rule."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import ExpressionWrapper, F, Sum

from billing.models import Charge
from chargeback.money import (
    MONEY_QUANTUM,
    SQLITE_MONEY_LIMIT,
    MoneyField,
    currency_symbol,
    format_money,
    minor_unit,
    money_json,
    parse_money,
    quantize_money,
    round_currency,
    to_cents,
)
from tests.factories import ChargeFactory

D = Decimal
AMOUNTS = [
    "0",
    "0.0000000001",
    "-0.0000000001",
    "1.1",
    "0.1234567891",
    "-42.4200000001",
    "123456789.1234567891",
    "-123456789.1234567891",
    "922337203.6854775807",  # the most SQLite can hold exactly at 10 places
    "-922337203.6854775807",
]


# --- storage ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("amount", AMOUNTS)
def test_money_round_trips_exactly(amount):
    charge = ChargeFactory(billed_cost=D(amount), list_cost=D(amount))
    stored = Charge.objects.get(pk=charge.pk)
    assert stored.billed_cost == D(amount)
    assert stored.billed_cost.as_tuple().exponent == -10  # always 10 places
    assert str(stored.billed_cost) == str(D(amount).quantize(MONEY_QUANTUM))
    # Lookups compare exactly, too.
    assert Charge.objects.filter(billed_cost=D(amount)).get() == charge
    if amount != "0":
        neighbour = D(amount) - D("0.0000000001").copy_sign(D(amount))  # one unit closer to zero
        assert not Charge.objects.filter(billed_cost=neighbour).exists()


@pytest.mark.django_db
def test_values_beyond_ten_places_are_rounded_half_even():
    cases = {"0.00000000005": "0", "0.00000000015": "0.0000000002", "-1.00000000025": "-1.0000000002"}
    charges = {a: ChargeFactory(billed_cost=D(a)) for a in cases}
    for amount, expected in cases.items():
        assert Charge.objects.get(pk=charges[amount].pk).billed_cost == D(expected)


@pytest.mark.django_db
def test_sums_are_exact():
    values = [D("0.1")] * 10 + [D("123456789.1234567891"), D("0.0000000001"), D("-0.0000000003")]
    for value in values:
        ChargeFactory(billed_cost=value, list_cost=value * 2)
    totals = Charge.objects.aggregate(billed=Sum("billed_cost"), listed=Sum("list_cost"))
    assert totals["billed"] == D("123456790.1234567889")
    assert totals["listed"] == D("246913580.2469135778")
    assert totals["billed"] == sum(values, D(0))
    # Many small amounts that floats cannot add: 1e8 + 3,000 × 0.0000000001.
    Charge.objects.all().delete()
    big = ChargeFactory(billed_cost=D("100000000"))
    tiny = {
        "period": big.period,
        "source": big.source,
        "import_run": big.import_run,
        "billed_cost": D("0.0000000001"),
    }
    Charge.objects.bulk_create([Charge(**tiny) for _ in range(3000)])
    assert Charge.objects.aggregate(s=Sum("billed_cost"))["s"] == D("100000000.0000003000")


@pytest.mark.django_db
def test_arithmetic_between_money_columns():
    ChargeFactory(list_cost=D("100.0000000001"), billed_cost=D("85.0000000003"))
    ChargeFactory(list_cost=D("3665.00"), billed_cost=D("5.00"))
    discount = ExpressionWrapper(F("list_cost") - F("billed_cost"), output_field=MoneyField())
    rows = sorted(Charge.objects.annotate(discount=discount).values_list("discount", flat=True))
    assert rows == [D("14.9999999998"), D("3660.0000000000")]
    assert Charge.objects.aggregate(d=Sum(discount))["d"] == D("3674.9999999998")


@pytest.mark.django_db
def test_ordering_and_range_lookups():
    for amount in ("-1.5", "0.0000000001", "1000000", "0"):
        ChargeFactory(billed_cost=D(amount))
    ordered = list(Charge.objects.order_by("billed_cost").values_list("billed_cost", flat=True))
    assert ordered == [D("-1.5"), D("0"), D("0.0000000001"), D("1000000")]
    assert Charge.objects.filter(billed_cost__gt=0).count() == 2
    assert Charge.objects.filter(billed_cost__lt=D("0.0000000001")).count() == 2


@pytest.mark.django_db
def test_sqlite_refuses_amounts_it_cannot_store_exactly():
    if connection.vendor != "sqlite":
        # numeric(28, 10) holds it.
        charge = ChargeFactory(billed_cost=D("922337203.6854775808"))
        assert Charge.objects.get(pk=charge.pk).billed_cost == D("922337203.6854775808")
        return
    with pytest.raises(ValidationError, match="exceeds what SQLite can store exactly"):
        ChargeFactory(billed_cost=SQLITE_MONEY_LIMIT + D("0.0000000001"))


def test_field_definition():
    field = MoneyField(default=0)
    assert (field.max_digits, field.decimal_places) == (28, 10)
    _name, path, _args, kwargs = field.deconstruct()
    assert path == "chargeback.money.MoneyField" and kwargs == {"default": 0}
    assert field.get_internal_type() == "MoneyField"
    assert field.db_type(connection) == ("bigint" if connection.vendor == "sqlite" else "numeric(28, 10)")


# --- the cent rule ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("5.625", "USD", "5.63"),
        ("5.635", "USD", "5.64"),
        ("2.675", "USD", "2.68"),
        ("5.624999999", "USD", "5.62"),
        ("-5.625", "USD", "-5.63"),
        ("0.005", "EUR", "0.01"),
        ("0.0049999999", "EUR", "0.00"),
        ("1234.5", "JPY", "1235"),
        ("1234.4999", "jpy", "1234"),
        ("1.2345", "BHD", "1.235"),
        ("2307.7500000000", "USD", "2307.75"),
    ],
)
def test_round_currency_half_up(value, currency, expected):
    rounded = round_currency(D(value), currency)
    assert rounded == D(expected)
    assert str(rounded) == expected


def test_quantize_money_is_half_even():
    assert quantize_money(D("0.00000000005")) == D("0")
    assert quantize_money(D("0.00000000015")) == D("0.0000000002")
    assert quantize_money(D("0.00000000025")) == D("0.0000000002")
    assert str(quantize_money(D("7"))) == "7.0000000000"


def test_minor_units_and_cents():
    assert (minor_unit("USD"), minor_unit("JPY"), minor_unit("KWD")) == (D("0.01"), D("1"), D("0.001"))
    assert to_cents(D("1234.5")) == 123450
    assert to_cents(D("5.625")) == 563
    assert to_cents(D("-0.005")) == -1
    assert to_cents(D("1234.5"), "JPY") == 1235
    assert to_cents(D("1.2345"), "BHD") == 1235
    assert isinstance(to_cents(D("1")), int)


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("1234.5", "USD", "$1,234.50"),
        ("-12", "USD", "-$12.00"),
        ("1234567.891", "usd", "$1,234,567.89"),
        ("5.625", "USD", "$5.63"),
        ("-0.004", "USD", "$0.00"),
        ("0", "USD", "$0.00"),
        ("1234.5", "EUR", "€1,234.50"),
        ("99.999", "GBP", "£100.00"),
        ("1234.5", "CHF", "CHF 1,234.50"),
        ("1234.5", "JPY", "¥1,235"),
        ("-1234.5", "CAD", "-CA$1,234.50"),
        ("1.2345", "BHD", "BHD 1.235"),
        ("10", "XYZ", "XYZ 10.00"),
    ],
)
def test_format_money(value, currency, expected):
    assert format_money(D(value), currency) == expected


def test_format_money_none_and_symbols():
    assert format_money(None) == ""
    assert currency_symbol("usd") == "$"
    assert currency_symbol("abc") == "ABC "


def test_money_json():
    assert money_json(D("1234.5000000000")) == {"amount": "1234.5000000000", "cents": 123450}
    assert money_json(D("0.1234567891")) == {"amount": "0.1234567891", "cents": 12}
    assert money_json(D("-5.625")) == {"amount": "-5.625", "cents": -563}
    assert money_json(D("0E-10")) == {"amount": "0", "cents": 0}
    assert money_json(D("1234.5"), "JPY") == {"amount": "1234.5", "cents": 1235}
    assert money_json(None) is None


def test_parse_money():
    assert parse_money(" 1.50 ") == D("1.50")
    assert parse_money("-0.0000000001") == D("-0.0000000001")
    assert parse_money("1E-3") == D("0.001")
    for bad in ("abc", "", "1,50", "NaN", "Infinity", "-inf"):
        with pytest.raises(ValueError, match="not a"):
            parse_money(bad)
