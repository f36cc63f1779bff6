"""SQL expressions over money: the supported ones give the same exact amounts on SQLite and
PostgreSQL, the others raise MoneyExpressionError on both (never an amount 10^10 too large)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import DataError, connection, transaction
from django.db.models import (
    Avg,
    Case,
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    StdDev,
    Subquery,
    Sum,
    Value,
    Variance,
    When,
    Window,
)
from django.db.models.functions import Abs, Cast, Coalesce, Greatest, Round

from billing.models import Charge, Import
from chargeback.money import (
    SQLITE_MONEY_LIMIT,
    MoneyExpressionError,
    MoneyField,
    MoneyOutOfRange,
    MoneyTotal,
    money_from_db,
    money_from_units,
    money_to_units,
    money_value,
)
from chargeback.operations.backup import collect_stats
from tests.factories import ChargeFactory

D = Decimal
pytestmark = pytest.mark.django_db


def money(expression):
    return ExpressionWrapper(expression, output_field=MoneyField())


@pytest.fixture
def charges():
    """Amounts whose digits would show any scaling error: list 100.0000000001 / billed 85.0000000003."""
    first = ChargeFactory(list_cost=D("100.0000000001"), billed_cost=D("85.0000000003"))
    second = ChargeFactory(list_cost=D("3665.00"), billed_cost=D("5.00"))
    return first, second


# --- supported: exact and equal on both databases ------------------------------------------------------


def test_sum_min_max_are_exact(charges):
    totals = Charge.objects.aggregate(s=Sum("billed_cost"), lo=Min("billed_cost"), hi=Max("list_cost"))
    assert totals == {"s": D("90.0000000003"), "lo": D("5.0000000000"), "hi": D("3665.0000000000")}
    assert all(v.as_tuple().exponent == -10 for v in totals.values())


def test_sum_with_a_default_and_a_filter(charges):
    empty = Charge.objects.filter(billed_cost__gt=10**6)
    assert empty.aggregate(s=Sum("billed_cost", default=D("1.25")))["s"] == D("1.25")
    big = Charge.objects.aggregate(s=Sum("billed_cost", filter=Q(billed_cost__gt=10)))
    assert big["s"] == D("85.0000000003")
    cheap = Charge.objects.aggregate(
        s=Sum("list_cost", filter=Q(billed_cost__lt=F("list_cost") - money_value("90")))
    )
    assert cheap["s"] == D("3665")


def test_money_minus_money_declared_as_money(charges):
    discount = money(F("list_cost") - F("billed_cost"))
    rows = sorted(Charge.objects.annotate(d=discount).values_list("d", flat=True))
    assert rows == [D("14.9999999998"), D("3660.0000000000")]
    assert Charge.objects.aggregate(d=Sum(discount))["d"] == D("3674.9999999998")
    assert Charge.objects.annotate(d=discount).filter(d__gt=D("100")).count() == 1
    assert Charge.objects.annotate(d=discount).filter(d__gt=F("billed_cost")).count() == 1


def test_money_plus_a_constant_amount(charges):
    first, _ = charges
    plus = money(F("billed_cost") + money_value("1.00"))
    assert Charge.objects.annotate(p=plus).get(pk=first.pk).p == D("86.0000000003")
    minus = money(F("billed_cost") - money_value(D("0.0000000003")) + F("list_cost"))
    assert Charge.objects.annotate(m=minus).get(pk=first.pk).m == D("185.0000000001")
    assert Charge.objects.filter(billed_cost__lt=F("list_cost") - money_value("90")).get() == charges[1]


def test_comparisons_with_amounts_and_money_expressions(charges):
    first, second = charges
    assert Charge.objects.filter(billed_cost__gt=D("85")).get() == first
    assert Charge.objects.filter(billed_cost__gte=D("85.0000000003")).get() == first
    assert not Charge.objects.filter(billed_cost__gt=D("85.0000000003")).exists()
    assert Charge.objects.filter(billed_cost__range=(D("4.9999999999"), D("5.0000000001"))).get() == second
    assert Charge.objects.filter(billed_cost__in=[D("5"), D("1")]).get() == second
    assert Charge.objects.filter(list_cost__gt=F("billed_cost")).count() == 2
    assert Charge.objects.filter(billed_cost=money_value("5")).get() == second
    # money - money on the right of a comparison with money: units against units, exact.
    assert Charge.objects.filter(billed_cost__lt=F("list_cost") - F("billed_cost")).get() == second


def test_money_functions_and_case(charges):
    first, _ = charges
    row = (
        Charge.objects.annotate(
            a=Abs(money(F("billed_cost") - F("list_cost"))),
            c=Coalesce("billed_cost", money_value("0")),
            g=Greatest("billed_cost", "list_cost"),
            k=Case(When(billed_cost__gt=10, then=F("list_cost")), default=F("billed_cost")),
            z=Cast("billed_cost", MoneyField()),
        )
        .values("a", "c", "g", "k", "z")
        .get(pk=first.pk)
    )
    assert row == {
        "a": D("14.9999999998"),
        "c": D("85.0000000003"),
        "g": D("100.0000000001"),
        "k": D("100.0000000001"),
        "z": D("85.0000000003"),
    }
    assert Charge.objects.aggregate(n=Count("billed_cost"))["n"] == 2


def test_a_money_subquery(charges):
    first, _ = charges
    billed = (
        Charge.objects.filter(import_run=OuterRef("pk")).values("import_run").annotate(s=Sum("billed_cost"))
    )
    imports = Import.objects.annotate(b=Subquery(billed.values("s"), output_field=MoneyField()))
    assert imports.get(pk=first.import_run_id).b == D("85.0000000003")


def test_updates_from_money_expressions(charges):
    first, _ = charges
    Charge.objects.filter(pk=first.pk).update(
        billed_cost=money(F("billed_cost") + money_value("0.0000000007"))
    )
    Charge.objects.filter(pk=first.pk).update(list_cost=F("billed_cost"))
    first.refresh_from_db()
    assert (first.billed_cost, first.list_cost) == (D("85.0000000010"), D("85.0000000010"))
    first.billed_cost = D("1.5")
    Charge.objects.bulk_update([first], ["billed_cost"])
    assert Charge.objects.get(pk=first.pk).billed_cost == D("1.5")


# --- refused on both databases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "aggregate",
    [
        Avg("billed_cost"),
        StdDev("billed_cost"),
        Variance("billed_cost"),
        Sum(F("list_cost") - F("billed_cost")),  # no output_field: would be decoded as a plain decimal
        Sum("quantity", output_field=MoneyField()),  # not money
    ],
    ids=["avg", "stddev", "variance", "sum-of-undeclared-arithmetic", "quantity-declared-money"],
)
def test_aggregates_that_are_refused(charges, aggregate):
    with pytest.raises(MoneyExpressionError):
        Charge.objects.aggregate(x=aggregate)


@pytest.mark.parametrize(
    "expression",
    [
        F("list_cost") - F("billed_cost"),  # no output_field
        F("billed_cost") + D("1.00"),  # a bare Decimal: not in the column's encoding on SQLite
        money(F("billed_cost") + D("1.00")),  # declaring the result money does not fix the operand
        money(F("billed_cost") + F("quantity")),  # a plain decimal column
        money(F("billed_cost") * 2),
        money(F("billed_cost") / 2),
        F("billed_cost") * D("0.5"),
        Round("billed_cost", 2),
        Cast("billed_cost", DecimalField(max_digits=28, decimal_places=10)),
        Cast("billed_cost", IntegerField()),
        Coalesce("billed_cost", Value(D("0")), output_field=MoneyField()),
        ExpressionWrapper(F("quantity"), output_field=MoneyField()),
        ExpressionWrapper(F("billed_cost"), output_field=DecimalField()),
    ],
    ids=[
        "minus-undeclared",
        "plus-bare-decimal",
        "declared-plus-bare-decimal",
        "plus-quantity",
        "times",
        "divided",
        "times-decimal",
        "round",
        "cast-decimal",
        "cast-integer",
        "coalesce-bare-decimal",
        "quantity-declared-money",
        "money-declared-decimal",
    ],
)
def test_annotations_that_are_refused(charges, expression):
    with pytest.raises(MoneyExpressionError):
        list(Charge.objects.annotate(x=expression).values_list("x", flat=True))


@pytest.mark.parametrize(
    "lookup",
    [
        {"billed_cost__gt": F("list_cost") + D("1")},
        {"billed_cost__gt": F("quantity")},
        {"billed_cost__lt": Value(D("10"))},
        {"billed_cost__gt": F("list_cost") * D("0.5")},
        {"quantity__lt": F("billed_cost")},
    ],
    ids=[
        "money-plus-bare-decimal",
        "quantity",
        "plain-decimal-value",
        "money-times",
        "quantity-against-money",
    ],
)
def test_filters_that_are_refused(charges, lookup):
    with pytest.raises(MoneyExpressionError):
        Charge.objects.filter(**lookup).count()


def test_filter_on_undeclared_arithmetic_is_refused(charges):
    with pytest.raises(MoneyExpressionError):
        Charge.objects.alias(d=F("list_cost") - F("billed_cost")).filter(d__gt=D("100")).count()


@pytest.mark.parametrize(
    "values",
    [
        {"billed_cost": F("billed_cost") + D("1")},
        {"billed_cost": Value(D("1"))},
        {"billed_cost": money(F("billed_cost") * 2)},
        {"billed_cost": F("quantity")},
        {"quantity": F("billed_cost")},
    ],
    ids=["plus-bare-decimal", "plain-decimal-value", "times", "from-quantity", "quantity-from-money"],
)
def test_updates_that_are_refused(charges, values):
    first, _ = charges
    with transaction.atomic(), pytest.raises(MoneyExpressionError):
        Charge.objects.filter(pk=first.pk).update(**values)
    assert Charge.objects.get(pk=first.pk).billed_cost == D("85.0000000003")


def test_the_error_says_what_to_write(charges):
    with pytest.raises(MoneyExpressionError, match=r"output_field=MoneyField\(\).*money_value"):
        Charge.objects.aggregate(x=Avg("billed_cost"))


# --- exact totals over whole tables ----------------------------------------------------------------------


def test_money_total_is_exact_near_and_beyond_the_sqlite_limit():
    near = SQLITE_MONEY_LIMIT - D("0.0000000007")  # 2^63 - 8 units
    rows = [near, near, near, D("-0.0000000001"), -near]
    first = ChargeFactory(billed_cost=rows[0])
    tiny = {"period": first.period, "source": first.source, "import_run": first.import_run}
    Charge.objects.bulk_create([Charge(**tiny, billed_cost=v) for v in rows[1:]])
    expected = sum(rows, D(0))
    assert expected > SQLITE_MONEY_LIMIT  # a plain SUM of these overflows SQLite's integer
    assert Charge.objects.aggregate(t=MoneyTotal("billed_cost"))["t"] == expected
    grouped = Charge.objects.values("period").annotate(t=MoneyTotal("billed_cost")).order_by()
    assert [row["t"] for row in grouped] == [expected]
    assert Charge.objects.none().aggregate(t=MoneyTotal("billed_cost"))["t"] is None
    negative = Charge.objects.filter(billed_cost__lt=0).aggregate(t=MoneyTotal("billed_cost"))["t"]
    assert negative == -near - D("0.0000000001")
    if connection.vendor == "sqlite":
        with pytest.raises(Exception, match="integer overflow"):  # loud, never wrapped or floated
            Charge.objects.aggregate(s=Sum("billed_cost"))
    else:
        assert Charge.objects.aggregate(s=Sum("billed_cost"))["s"] == expected


def test_money_total_cannot_be_compared_in_sql(charges):
    with pytest.raises(MoneyExpressionError):
        Charge.objects.values("period").annotate(t=MoneyTotal("billed_cost")).filter(t__gt=0).count()


# --- the shared encoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "units"),
    [
        ("0", 0),
        ("0.0000000001", 1),
        ("-1.5", -15_000_000_000),
        ("0.00000000005", 0),  # half-even beyond 10 places
        ("0.00000000015", 2),
        (str(SQLITE_MONEY_LIMIT), 2**63 - 1),
        (str(-SQLITE_MONEY_LIMIT), -(2**63) + 1),
    ],
)
def test_money_units_round_trip(amount, units):
    assert money_to_units(D(amount)) == units
    assert money_from_units(units) == D(amount).quantize(D("1E-10"))
    assert money_from_units(units).as_tuple().exponent == -10


@pytest.mark.parametrize(
    "amount", [SQLITE_MONEY_LIMIT + D("0.0000000001"), D("1E20"), D("-1E20") - D("1E-11")]
)
def test_money_units_refuse_what_sqlite_cannot_hold(amount):
    with pytest.raises(MoneyOutOfRange, match="exceeds what SQLite can store exactly"):
        money_to_units(amount)


def test_a_float_from_the_database_is_refused_not_truncated():
    for value in (12.5, 1e19, 3.0):
        for sqlite in (True, False):
            with pytest.raises(DataError, match="float"):
                money_from_db(value, sqlite=sqlite)
    assert money_from_db(None, sqlite=True) is None
    assert money_from_db(15, sqlite=True) == D("0.0000000015")
    assert money_from_db(D("1.5"), sqlite=False) == D("1.5000000000")


def test_a_float_stored_in_a_sqlite_column_is_refused(charges):
    if connection.vendor != "sqlite":
        pytest.skip("numeric(28, 10) cannot hold a float")
    first, _ = charges
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_charge SET billed_cost = 12.5 WHERE id = %s", [first.pk])
    with pytest.raises(DataError, match="float"):
        Charge.objects.get(pk=first.pk)


def test_sqlite_arithmetic_overflow_is_loud():
    """Near the limit, SQLite turns an overflowing integer sum into a float: refused, not truncated."""
    near = SQLITE_MONEY_LIMIT - D("1")
    ChargeFactory(list_cost=near, billed_cost=near)
    query = Charge.objects.annotate(x=money(F("list_cost") + F("billed_cost"))).values_list("x", flat=True)
    if connection.vendor == "sqlite":
        with pytest.raises(DataError, match="float"):
            list(query)
    else:
        assert list(query) == [near * 2]


def test_window_functions_over_money_are_refused(charges):
    # Django's SQLite backend computes a windowed decimal aggregate as a float; not attempted.
    running = Window(Sum("billed_cost"), partition_by=[F("period")], order_by=F("billed_cost").asc())
    for window in (running, Window(Avg("billed_cost"))):
        with transaction.atomic(), pytest.raises(MoneyExpressionError):
            list(Charge.objects.annotate(r=window).values_list("r", flat=True))


def test_backup_statistics_sum_beyond_the_sqlite_limit_exactly():
    near = SQLITE_MONEY_LIMIT - D("0.0000000007")
    first = ChargeFactory(billed_cost=near, list_cost=near)
    same = {"period": first.period, "source": first.source, "import_run": first.import_run}
    Charge.objects.bulk_create(
        [
            Charge(**same, billed_cost=near, list_cost=D("0.0000000001"), review_state=first.review_state)
            for _ in "ab"
        ]
    )
    stats = collect_stats()
    assert stats["money"]["billing.charge.billed_cost"] == str(near * 3)
    assert stats["money"]["billing.charge.list_cost"] == str(near + D("0.0000000002"))
    period = stats["periods"][first.period.period]
    assert period["billed_total"] == str(near * 3) and period["charges"] == 3
    assert period["billed_by_source"] == {first.source.slug: str(near * 3)}
