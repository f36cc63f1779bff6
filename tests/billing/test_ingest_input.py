"""Hostile values through `openchargeback ingest`: exit code 1 and a message naming the line,
column and value, never a traceback, and nothing written. Amounts too large for any type or for
the database, lenient number syntax, duplicate columns, NUL bytes, oversized headers."""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection

from billing.models import BillingPeriod, Charge, Import
from tests.billing.test_ingest import HEADER, _csv_text, _line
from tests.cli import run

pytestmark = pytest.mark.django_db


@pytest.fixture
def aws(db):
    from billing import services

    return services.source_create(slug="aws")


def _ingest(path: Path):
    result = run("ingest", path, "-s", "aws", "-p", "2025-01")
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err
    return result


def _refused(path: Path, *expected: str) -> str:
    result = _ingest(path)
    assert result.code == 1, result.out + result.err
    for text in expected:
        assert text in result.err, result.err
    assert Charge.objects.count() == 0 and BillingPeriod.objects.count() == 0
    return result.err


def _file(tmp_path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    path = tmp_path / "aws_2025-01.csv"
    path.write_bytes(_csv_text([header, *rows]))
    return path


# --- item 6: tracebacks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    ["1e400", "1234567890123456789012345678901234567890", "-1E99999999999999999999999"],
)
def test_amounts_too_large_for_any_type_are_row_errors(aws, tmp_path, amount):
    path = _file(tmp_path, [_line(), _line(BilledCost=amount)])
    _refused(path, f"line 3, column BilledCost, value {amount!r}: amount out of range")


def test_a_19_digit_amount_beside_another_bad_value(aws, tmp_path):
    """The 19-digit amount sent the batch through the slow path, where rounding was unguarded."""
    path = _file(tmp_path, [_line(), _line(BilledCost="1234567890123456789"), _line(ListCost="abc")])
    _refused(
        path,
        "2 bad rows",
        "line 3, column BilledCost, value '1234567890123456789': amount out of range",
        "line 4, column ListCost, value 'abc': not a number",
    )


def test_the_largest_amount_the_database_stores(aws, tmp_path):
    limit = Decimal("922337203.6854775807") if connection.vendor == "sqlite" else Decimal(10) ** 18
    fits = format((limit - 1).quantize(Decimal(1)), "f")
    too_large = format(limit.quantize(Decimal(1)) + 1, "f")
    path = _file(tmp_path, [_line(BilledCost=too_large, ListCost=too_large)])
    _refused(path, f"line 2, column BilledCost, value '{too_large}': amount out of range (at most ±{limit:,}")
    # Rows that fit but add up to more in one charge.
    half = format((limit * Decimal("0.6")).quantize(Decimal(1)), "f")
    path = _file(tmp_path, [_line(BilledCost=half, ListCost=half), _line(BilledCost=half, ListCost=half)])
    _refused(path, "the rows of one charge add up to more than this database stores")
    path = _file(tmp_path, [_line(BilledCost=fits, ListCost=fits)])
    assert _ingest(path).code == 0
    assert Charge.objects.get().billed_cost == Decimal(fits)


def test_a_header_name_over_128_kib(aws, tmp_path):
    path = tmp_path / "aws_2025-01.csv"
    header = [*HEADER[:3], "x" * (130 * 1024), *HEADER[3:]]
    path.write_bytes(_csv_text([header, [*_line()[:3], "", *_line()[3:]]]))
    err = _refused(path, "line 1, column 4: the header cannot be read (field larger than field limit")
    assert "missing required column" not in err


def test_a_header_line_over_1_mib(aws, tmp_path):
    path = tmp_path / "aws_2025-01.csv.gz"
    with gzip.open(path, "wb") as out:
        out.write(",".join(["BillingPeriodStart", "BilledCost", "ResourceId"] + ["col"] * 400_000).encode())
        out.write(b"\n2025-01-01,1,r\n")
    err = _refused(path, "line 1 (the header) is longer than 1024 KiB")
    assert "missing required column" not in err


# --- item 7: lenient numbers, duplicate columns, NUL bytes ---------------------------------------


@pytest.mark.parametrize("amount", ["1_000", "١٢٣", "Infinity", "0x1F"])
def test_only_plain_decimal_numbers_are_money(aws, tmp_path, amount):
    path = _file(tmp_path, [_line(), _line(BilledCost=amount)])
    _refused(path, f"line 3, column BilledCost, value {amount!r}: not a number")


@pytest.mark.parametrize("second", ["BilledCost", "billedcost", " BilledCost "])
def test_a_duplicate_column_is_refused_naming_it(aws, tmp_path, second):
    header = [*HEADER, second]
    path = _file(tmp_path, [[*_line(), "999"]], header=header)
    _refused(path, f"column {second.strip()} appears twice in the header (columns 6 and 12)")


def test_a_preview_alias_beside_its_focus_name_is_not_a_duplicate(aws, tmp_path):
    header = [*HEADER, "Region", "RegionId"]
    path = _file(tmp_path, [[*_line(), "old", "us-east-1"]], header=header)
    assert _ingest(path).code == 0
    assert Charge.objects.get().region == "us-east-1"


@pytest.mark.parametrize("column", ["ResourceName", "Tags", "ServiceName"])
def test_a_nul_byte_in_a_text_cell_is_refused(aws, tmp_path, column):
    value = "vm\x00one" if column != "Tags" else '{"pi_email": "a\x00@x.example"}'
    path = _file(tmp_path, [_line(), _line(**{column: value})])
    shown = value.replace("\x00", "\u2400")  # PostgreSQL cannot store the NUL even in the report
    _refused(path, f"line 3, column {column}, value {shown!r}: contains a NUL byte")
    record = Import.objects.get()
    assert record.status == Import.Status.FAILED and record.errors[0]["value"] == shown
