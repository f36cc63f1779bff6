"""Money: exact Decimal storage on every database, and the cent rule.

SQLite's NUMERIC affinity keeps only 15 significant digits and SUM() goes through
floats, so on SQLite a MoneyField is stored as a 64-bit integer count of 10^-10 units
(exact, sortable, and summed exactly by SQLite's integer SUM). On PostgreSQL it is a
plain numeric(28, 10). Either way Python sees a Decimal with 10 decimal places.

Because the SQLite column holds units, not amounts, an SQL expression over money is only
right when every operand is in the same encoding and the result is read back as money.
What is computed in SQL is therefore a short list, checked on both databases alike, and
anything else raises `MoneyExpressionError` instead of returning an amount 10^10 too large
on SQLite (see `check_money_expression` and docs/architecture.md, "Money"):

- a money column (or annotation) selected, ordered by, grouped by;
- `Sum`, `Min`, `Max` of money, `Count` of anything; `Coalesce`, `Greatest`, `Least`, `Abs`
  and `Case`/`When` whose values are all money;
- money + money and money - money, declared with `output_field=MoneyField()` (wrap in
  `ExpressionWrapper`); a constant amount joins in as `money_value(Decimal("1.00"))`;
- a comparison of money with an amount, or with another money expression;
- `MoneyTotal(...)`: an exact sum that cannot overflow SQLite's 64-bit integer (reports).

Refused: `Avg`, `StdDev`, `Variance` (not exact on SQLite: sum and count, then divide in
Python with a chosen rounding), multiplication and division, a bare Decimal or a plain
decimal column mixed with money, functions such as `Round` or `Cast`, money compared with a
non-money expression, and money arithmetic without `output_field=MoneyField()`.

The check runs when a query compiles a money column, so it does not see raw SQL, nor an
aggregate over a sliced or distinct queryset that Django moves into an outer query of its own
(`qs[:5].aggregate(Avg("billed_cost"))` is still wrong on SQLite): keep to the list above there.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cached_property
from typing import Any

from django.core.exceptions import FieldError, ValidationError
from django.db import DataError, models
from django.db.models import Aggregate, Count, Max, Min, Sum
from django.db.models.expressions import (
    Case,
    Col,
    Combinable,
    CombinedExpression,
    Exists,
    ExpressionList,
    ExpressionWrapper,
    OrderBy,
    OrderByList,
    Ref,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.functions import Abs, Cast, Coalesce, Greatest, Least
from django.db.models.lookups import Lookup
from django.db.models.sql.where import WhereNode

MONEY_PLACES = 10
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
_SCALE = 10**MONEY_PLACES
SQLITE_UNITS_MAX = 2**63 - 1
# The largest amount a single SQLite integer can hold at this scale (about 922 million).
SQLITE_MONEY_LIMIT = Decimal(SQLITE_UNITS_MAX).scaleb(-MONEY_PLACES)
SQLITE_LIMIT_MESSAGE = f"exceeds what SQLite can store exactly (±{SQLITE_MONEY_LIMIT:,.2f}); use PostgreSQL for amounts this large"
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


# --- the database encoding, shared by MoneyField and the bulk ingest writer ------------------------


class MoneyOutOfRange(ValueError):
    """An amount beyond what the SQLite encoding (a 64-bit count of 10^-10 units) holds."""


def money_to_units(value: Decimal) -> int:
    """The SQLite encoding of an amount: an integer count of 10^-10 units.

    Digits beyond 10 places are rounded half-even (as `quantize_money`); an amount beyond
    ±SQLITE_MONEY_LIMIT raises `MoneyOutOfRange` rather than wrapping or going through float.
    """
    units = value.scaleb(MONEY_PLACES)
    if units != units.to_integral_value():
        if abs(value) > SQLITE_MONEY_LIMIT + 1:  # quantize would exceed the decimal context
            raise MoneyOutOfRange(f"amount {value} {SQLITE_LIMIT_MESSAGE}")
        units = quantize_money(value).scaleb(MONEY_PLACES)
    if abs(units) > SQLITE_UNITS_MAX:
        raise MoneyOutOfRange(f"amount {value} {SQLITE_LIMIT_MESSAGE}")
    return int(units)


def money_from_units(units: int) -> Decimal:
    """An amount from its SQLite encoding (always 10 places)."""
    return Decimal(units).scaleb(-MONEY_PLACES)


def money_from_db(value: Any, *, sqlite: bool) -> Decimal | None:
    """An amount as a database returned it (None stays None); see `decode_money`."""
    return None if value is None else decode_money(value, sqlite=sqlite)


def decode_money(value: int | str | Decimal, *, sqlite: bool) -> Decimal:
    """An amount as a database returned or was given it: units on SQLite, numeric on PostgreSQL.

    A float means the database computed in floating point (an integer overflow in SQLite
    arithmetic, a float column, AVG): the amount is already inexact, so it is refused rather
    than truncated or rounded into something that looks right.
    """
    if isinstance(value, float):
        raise DataError(
            f"a money value came back from the database as the float {value!r}: it was computed in "
            "floating point and is not exact (see chargeback.money for the expressions that are)"
        )
    if sqlite:
        return money_from_units(int(value))
    return Decimal(value).quantize(MONEY_QUANTUM)


# --- which SQL expressions over money are exact on both databases ---------------------------------


class MoneyExpressionError(FieldError):
    """An SQL expression over money that would not give the same exact amount on every database."""


def money_value(amount: Decimal | int | str) -> Value:
    """A constant amount for SQL arithmetic with money (encoded like a money column)."""
    return Value(
        parse_money(amount) if isinstance(amount, str) else Decimal(amount), output_field=MoneyField()
    )


class MoneyTotal(Sum):
    """An exact sum of money for reports over whole tables (backup statistics).

    SQLite's SUM() of integers raises "integer overflow" past 2^63 units (about 922 million);
    here SQLite sums the whole amounts and the remainders separately (neither can overflow
    before about 900 million rows) and Python adds the two. On PostgreSQL it is a plain SUM.
    On SQLite the result is text, so it can be read but not compared or computed with in SQL.
    """

    def __init__(self, expression: Any) -> None:
        super().__init__(expression, output_field=_MoneyTotalField())

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.get_source_expressions()[0])
        whole, rest = f"SUM({sql} / {_SCALE})", f"SUM({sql} %% {_SCALE})"  # "%%": a literal % in Django SQL
        return f"(CAST({whole} AS TEXT) || ':' || CAST({rest} AS TEXT))", (*params, *params)


def _is_money(expression: Any) -> bool:
    try:
        return isinstance(expression._output_field_or_none, MoneyField)
    except (AttributeError, FieldError):
        return False


def _in_units(expression: Any) -> bool:
    """Whether an expression yields an amount in the column encoding (units on SQLite).

    money ± money does, whatever output type Django infers for it (DecimalField); it still
    needs output_field=MoneyField() wherever its value leaves SQL, to be decoded as money.
    """
    if isinstance(expression, CombinedExpression) and expression.connector in (
        Combinable.ADD,
        Combinable.SUB,
    ):
        return _in_units(expression.lhs) and _in_units(expression.rhs)
    try:
        output = expression._output_field_or_none
    except (AttributeError, FieldError):
        return False
    return isinstance(output, MoneyField) and not isinstance(output, _MoneyTotalField)


def _is_null(expression: Any) -> bool:
    return isinstance(expression, Value) and expression.value is None


def _operands(expression: Any) -> list[Any]:
    """The operands whose values an expression computes with (not its filters or conditions)."""
    if isinstance(expression, Aggregate):
        sources = expression.get_source_expressions()[:-1]  # the last is the FILTER clause
    elif isinstance(expression, Case):
        sources = [*(when.result for when in expression.cases), expression.default]
    elif isinstance(expression, When):
        sources = [expression.result]
    elif isinstance(expression, Window):
        # Refused over money: on SQLite Django re-types the windowed aggregate as a float.
        sources = expression.get_source_expressions()[:1]
    else:
        sources = expression.get_source_expressions()
    return [e for e in sources if e is not None]


# Money in, the same money out: exact on units and on numeric alike.
_MONEY_FUNCTIONS = (Sum, Min, Max, Coalesce, Greatest, Least, Abs, Cast, Case, When)
# Containers that only order, group or count: no value is computed from the amount.
_NEUTRAL = (Count, OrderBy, OrderByList, ExpressionList, Exists)
_HOW = (
    "In SQL, money is computed only as Sum/Min/Max, or money ± money with output_field=MoneyField() "
    "(a constant as money_value(...)); see chargeback.money"
)


def _refuse(expression: Any, why: str) -> MoneyExpressionError:
    return MoneyExpressionError(f"{why}: {expression!r}. {_HOW}.")


def check_money_expression(expression: Any, *, boundary: bool = True) -> None:
    """Raise MoneyExpressionError unless the expression is exact on SQLite and PostgreSQL alike.

    `boundary`: the value leaves SQL here (selected, compared, summed, stored), so money
    arithmetic must be declared output_field=MoneyField() to be decoded as money.
    """
    if isinstance(expression, WhereNode):
        for child in expression.children:
            check_money_expression(child)
        return
    if isinstance(expression, Lookup):
        _check_lookup(expression)
        return
    if isinstance(expression, Subquery) and not isinstance(expression, Exists):
        selected = [*expression.query.select, *expression.query.annotation_select.values()]
        if len(selected) == 1 and _in_units(selected[0]) != _is_money(expression):
            raise _refuse(
                expression, "a subquery of money must be declared output_field=MoneyField(), and only one"
            )
        return  # the inner query is checked when it is compiled
    if not hasattr(expression, "get_source_expressions") or isinstance(expression, (Col, Ref, Value)):
        return
    operands = _operands(expression)
    in_units = [_in_units(e) for e in operands]
    is_money = _is_money(expression)
    if isinstance(expression, CombinedExpression):
        if any(in_units) or is_money:
            if expression.connector not in (Combinable.ADD, Combinable.SUB):
                raise _refuse(expression, f"money cannot be combined with {expression.connector!r} exactly")
            if not all(in_units):
                raise _refuse(expression, "money can only be added to or subtracted from money")
            if boundary and not is_money:
                raise _refuse(expression, "money arithmetic needs output_field=MoneyField()")
            for operand in operands:
                check_money_expression(operand, boundary=False)
            return
    elif isinstance(expression, ExpressionWrapper):
        if _in_units(expression.expression) != is_money:
            raise _refuse(
                expression, "ExpressionWrapper declares money for a value that is not, or the reverse"
            )
        check_money_expression(expression.expression, boundary=False)
        return
    elif isinstance(expression, _MONEY_FUNCTIONS):
        if (any(in_units) or is_money) and not (
            is_money and all(u or _is_null(e) for u, e in zip(in_units, operands, strict=True))
        ):
            raise _refuse(expression, f"{type(expression).__name__} over money needs money in and money out")
    elif isinstance(expression, _NEUTRAL):
        pass
    elif any(in_units):
        raise _refuse(expression, f"{type(expression).__name__} of money is not exact on every database")
    elif is_money and operands:
        raise _refuse(expression, f"{type(expression).__name__} does not compute an amount of money")
    for source in expression.get_source_expressions():
        if source is not None:
            check_money_expression(source)


def _check_lookup(lookup: Lookup) -> None:
    lhs, rhs = lookup.lhs, lookup.rhs
    rhs_is_expression = hasattr(rhs, "resolve_expression")
    check_money_expression(lhs, boundary=False)
    if rhs_is_expression:
        check_money_expression(rhs, boundary=False)
    if isinstance(getattr(lhs, "_output_field_or_none", None), _MoneyTotalField):
        raise _refuse(lookup, "a MoneyTotal is for reports and cannot be compared in SQL")
    lhs_units, rhs_units = _in_units(lhs), rhs_is_expression and _in_units(rhs)
    if lhs_units and not _is_money(lhs) and not rhs_units:
        # money ± money compared with a value: the value would be prepared as a plain decimal.
        raise _refuse(lookup, "compare money arithmetic declared output_field=MoneyField()")
    if rhs_is_expression and lhs_units != rhs_units:
        raise _refuse(lookup, "money can only be compared with an amount or another money expression")


def check_money_query(query: Any) -> None:
    """Check every expression of a query that money can flow through (see the module docstring)."""
    for annotation in query.annotations.values():
        check_money_expression(annotation)
    check_money_expression(query.where)
    # UPDATE ... SET: a money column checks its own values (MoneyField.get_placeholder).
    for field, _model, value in getattr(query, "values", None) or ():
        if not isinstance(field, MoneyField) and hasattr(value, "resolve_expression") and _in_units(value):
            raise _refuse(value, f"{field.name} is not money and cannot be set from money")


class MoneyCol(Col):
    """A money column; compiling one checks the money expressions of the query it is part of."""

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        if not getattr(compiler, "_money_checked", False):
            compiler._money_checked = True
            check_money_query(compiler.query)
        return super().as_sql(compiler, connection)


class MoneyField(models.DecimalField):
    """A Decimal with 10 places, exact on SQLite (scaled integer) and PostgreSQL (numeric).

    Expressions over it are checked (see the module docstring): the supported ones give the
    same exact amount on both databases, the others raise MoneyExpressionError on both.
    """

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

    def get_col(self, alias: str, output_field: Any = None) -> Col:
        if alias == self.model._meta.db_table and (output_field is None or output_field == self):
            return self.cached_col
        return MoneyCol(alias, self, output_field)

    @cached_property
    def cached_col(self) -> Col:
        return MoneyCol(self.model._meta.db_table, self)

    def get_placeholder(self, value: Any, compiler: Any, connection: Any) -> str:
        # Called for every value an INSERT or UPDATE stores into this column.
        if hasattr(value, "resolve_expression"):
            check_money_expression(value, boundary=False)
            if not _is_money(value) and not _is_null(value):
                raise _refuse(value, "a money column can only be set from a money expression")
        return "%s"

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if hasattr(value, "as_sql"):
            return value
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        value = self.to_python(value)
        if connection.vendor == "sqlite":
            try:
                return money_to_units(value)
            except MoneyOutOfRange as exc:
                raise ValidationError(str(exc)) from exc
        return quantize_money(value)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Decimal | None:
        if expression.__class__ is not MoneyCol and not getattr(expression, "_money_checked", False):
            # e.g. a wrapper declaring money over a non-money value, in a query without a money column
            check_money_expression(expression)
            expression._money_checked = True
        return money_from_db(value, sqlite=connection.vendor == "sqlite")


class _MoneyTotalField(MoneyField):
    """The result of MoneyTotal: on SQLite, text 'whole:remainder' decoded here."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Decimal | None:
        if value is None or connection.vendor != "sqlite":
            return money_from_db(value, sqlite=False)
        whole, rest = str(value).split(":")
        return Decimal(int(whole) * _SCALE + int(rest)).scaleb(-MONEY_PLACES)
