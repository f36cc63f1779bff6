"""Amounts are plain decimal numbers only, parsed exactly, and never a traceback: strict syntax,
rounding to 10 places, and what the database can store (billing/ingest/numbers.py)."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from billing.ingest.numbers import DATABASE_LIMIT, parse_amounts

D = Decimal
SQLITE_LIMIT = D("922337203.6854775807")


def _parse(
    texts: list[str | None], limit: Decimal = DATABASE_LIMIT
) -> tuple[list, dict[str, list[int]], int]:
    reports: dict[str, list[int]] = {}

    def report(mask: np.ndarray, message: str) -> None:
        reports.setdefault(message.split(" (")[0], []).extend(np.nonzero(mask)[0].tolist())

    values, rounded = parse_amounts(pa.array(texts, pa.string()), limit=limit, report=report)
    return values.to_pylist(), reports, rounded


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", D("12")),
        ("-0.5", D("-0.5")),
        (".25", D("0.25")),
        ("1.", D("1")),
        ("+3", D("3")),
        ("1.338E-7", D("1.338E-7")),
        (" 2\t", D("2")),
        ("0.1234567890", D("0.1234567890")),
        ("999999999999999999.9999999999", D("999999999999999999.9999999999")),
    ],
)
def test_plain_numbers_are_amounts(text, value):
    values, reports, rounded = _parse([text])
    assert values == [value] and reports == {} and rounded == 0


@pytest.mark.parametrize(
    "text",
    [
        "1_000",
        "١٢٣",
        "١.٥",
        "NaN",
        "Infinity",
        "-inf",
        "0x10",
        "1,5",
        "12.3.4",
        "--1",
        "1e",
        "e5",
        "1 000",
        "",
        "²",
    ],
)
def test_anything_else_is_not_a_number(text):
    values, reports, _ = _parse(["1", text])
    assert values == [D(1), None]
    assert reports == {"not a number": [1]}


def test_more_than_ten_places_round_half_even_and_are_counted():
    values, reports, rounded = _parse(
        ["0.12345678905", "0.12345678915", "1e-400", "-1E-99999999999999999999999", "2"]
    )
    assert values == [D("0.1234567890"), D("0.1234567892"), D(0), D(0), D(2)]
    assert reports == {} and rounded == 4


@pytest.mark.parametrize(
    "text",
    [
        "1e400",
        "1" * 40,
        "-" + "9" * 19,
        "1e18",
        "1E99999999999999999999999",
        "123456789012345678901234567.12345678901",  # 27 digits and 11 places: rounded, then too large
    ],
)
def test_too_large_for_the_database_is_out_of_range(text):
    values, reports, _ = _parse([text, "x", "3"])
    assert values == [None, None, D(3)]
    assert reports == {"amount out of range": [0], "not a number": [1]}


def test_sqlite_stores_less():
    values, reports, _ = _parse(["922337203.68", "922337204", "-1e9"], limit=SQLITE_LIMIT)
    assert values == [D("922337203.68"), None, None]
    assert reports == {"amount out of range": [1, 2]}


def test_the_message_names_the_limit():
    messages: list[str] = []
    parse_amounts(
        pa.array(["1e30"]), limit=SQLITE_LIMIT, report=lambda mask, message: messages.append(message)
    )
    assert messages == ["amount out of range (at most ±922,337,203.6854775807 can be stored)"]
