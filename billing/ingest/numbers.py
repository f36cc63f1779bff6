"""Amounts from text, exactly and strictly, a whole column at a time.

Only plain decimal numbers are money: an optional sign, ASCII digits with at most one dot, and
an optional exponent (`12`, `-0.5`, `.25`, `1.338E-7`), with spaces or tabs around them
tolerated. Python's Decimal would also take `1_000`, Arabic-Indic digits `١٢٣`, `NaN` and
`Infinity`; none of those is an amount in a billing export, so they are refused.

pyarrow's cast to decimal128(38, 10) takes exactly the plain numbers, so a clean column is cast
at once and nothing else runs. A column the cast refuses is checked by an RE2 pattern (no Python
per row); its valid values are cast, and the few the cast cannot take (more than 10 decimal
places, an exponent beyond the type) are parsed in Python with a context wide enough for any of
them: rounded half-even to 10 places, or refused as out of range.
Every amount must then fit where it is stored: numeric(28, 10) on PostgreSQL, and on SQLite a
64-bit count of 10^-10 units (about ±922 million).
"""

from __future__ import annotations

import decimal
from collections.abc import Callable
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chargeback.money import MONEY_PLACES, MONEY_QUANTUM

MONEY_TYPE = pa.decimal128(38, MONEY_PLACES)
PLAIN_NUMBER = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
# numeric(28, 10): 18 digits before the point.
DATABASE_LIMIT = Decimal(10) ** (28 - MONEY_PLACES)
# Enough digits to round any amount below the limit to 10 places exactly.
_CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999)

# Reports rows of a column where a mask is true: (mask, message).
Report = Callable[[np.ndarray, str], None]


def parse_amounts(column: pa.Array, *, limit: Decimal, report: Report | None) -> tuple[pa.Array, int]:
    """The column as decimal128(38, 10), null where empty or refused; and how many amounts were
    rounded to 10 places. `report(mask, message)` is told of refused rows (None: refuse silently)."""
    try:
        # Arrow's cast takes exactly the plain numbers (nothing around them): the common case.
        return _in_range(pc.cast(column, MONEY_TYPE), limit, report), 0
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = pc.utf8_trim(column, " \t")
    plain = pc.fill_null(pc.match_substring_regex(text, PLAIN_NUMBER), True)
    not_number = np.asarray(pc.invert(plain).to_numpy(zero_copy_only=False), dtype=bool)
    if not_number.any():
        if report is not None:
            report(not_number, "not a number")
        text = pc.if_else(pa.array(not_number), pa.scalar(None, pa.string()), text)
    rounded = 0
    try:
        values = pc.cast(text, MONEY_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values, rounded, too_large = _parse_in_python(text)
        if too_large.any() and report is not None:
            report(too_large, f"amount out of range (at most ±{limit:,} can be stored)")
    return _in_range(values, limit, report), rounded


def _in_range(values: pa.Array, limit: Decimal, report: Report | None) -> pa.Array:
    """The values, null (and reported) where the database cannot store them."""
    extremes = pc.min_max(values).as_py()
    if all(v is None or -limit < v < limit for v in extremes.values()):
        return values  # the usual case: one pass finds nothing to report
    outside = pc.fill_null(
        pc.or_(
            pc.greater_equal(values, pa.scalar(limit, MONEY_TYPE)),
            pc.less_equal(values, pa.scalar(-limit, MONEY_TYPE)),
        ),
        False,
    )
    outside_flags = np.asarray(outside.to_numpy(zero_copy_only=False), dtype=bool)
    if outside_flags.any():
        if report is not None:
            report(outside_flags, f"amount out of range (at most ±{limit:,} can be stored)")
        values = pc.if_else(outside, pa.scalar(None, MONEY_TYPE), values)
    return values


def _parse_in_python(text: pa.Array) -> tuple[pa.Array, int, np.ndarray]:
    """Plain numbers the vectorised cast refused: those needing rounding, or too large for the
    type. Only the values the cast cannot take go through Python."""
    simple = pc.fill_null(
        pc.match_substring_regex(text, r"^[+-]?[0-9]{0,18}(?:\.[0-9]{0,10})?$"), True
    )  # no exponent, at most 18 + 10 digits: always castable
    hard = np.nonzero(~np.asarray(simple.to_numpy(zero_copy_only=False), dtype=bool))[0]
    values = pc.cast(pc.if_else(simple, text, pa.scalar(None, pa.string())), MONEY_TYPE)
    too_large = np.zeros(len(text), dtype=bool)
    rounded = 0
    parsed: list[Decimal | None] = []
    for offset, raw in zip(hard.tolist(), text.take(pa.array(hard, pa.int64())).to_pylist(), strict=True):
        try:
            value: Decimal | None = Decimal(raw.strip())  # exact: no rounding before the one below
        except decimal.InvalidOperation:
            # An exponent too long for Decimal: far below the last place (zero), or far too large.
            value = None
            if "-" in raw.lower().partition("e")[2]:
                rounded += 1
                parsed.append(Decimal(0))
                continue
        if value is None or value.adjusted() >= 28:
            too_large[offset] = True
            parsed.append(None)
            continue
        if value.adjusted() < -MONEY_PLACES - 2:
            exact = Decimal(0)  # far below the last place: rounds to zero
        else:
            exact = value.quantize(MONEY_QUANTUM, context=_CONTEXT)
        rounded += exact != value
        parsed.append(exact)
    if len(hard):
        mask = np.zeros(len(text), dtype=bool)
        mask[hard] = True
        values = pc.replace_with_mask(values, pa.array(mask), pa.array(parsed, MONEY_TYPE))
    return values, rounded, too_large
