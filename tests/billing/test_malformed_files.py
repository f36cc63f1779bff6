"""Malformed FOCUS files, fuzz style: every kind goes through `openchargeback ingest` and through
the admin's upload, and each must be refused cleanly: exit code 1 (or a refusal on the upload
page), a message naming line, column and value where there is one, no traceback and no internal
error, and the database's charges, periods, PIs and projects exactly as they were."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Sum
from django.test import Client
from django.urls import reverse

from billing import services
from billing.models import PI, BillingPeriod, Charge, Project
from tests.billing.test_ingest import HEADER, _csv_text, _line, focus_row, write_focus
from tests.cli import run

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Bad:
    content: bytes | Callable[[], bytes]
    message: str  # in the refusal's message (CLI stderr, upload result)
    line: int | None = None  # the first row error, when there is one
    column: str | None = None
    value: str | None = None
    name: str = "aws_2025-01.csv"
    settings: dict[str, Any] = field(default_factory=dict)

    def data(self) -> bytes:
        return self.content() if callable(self.content) else self.content


def _rows(*rows: list[str], header: list[str] = HEADER) -> bytes:
    return _csv_text([header, *rows])


def _amount(value: str) -> Bad:
    return Bad(_rows(_line(), _line(BilledCost=value)), "1 bad row", 3, "BilledCost", value)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data)


def _many_short_rows() -> bytes:
    lines = [",".join(HEADER)] + [f"2025-01-01,{n}" for n in range(15_000)]
    return _gzip(("\n".join(lines) + "\n").encode())


def _inflating() -> bytes:
    return _gzip(_rows(*[_line(ResourceId=f"r-{n}") for n in range(3000)]))


def _long_header_line() -> bytes:
    names = ["BillingPeriodStart", "BilledCost", "ResourceId"] + ["col"] * 300_000
    return (",".join(names) + "\n2025-01-01,1,r\n").encode()


MALFORMED: dict[str, Bad] = {
    # --- the file as a whole ---------------------------------------------------------------------
    "empty file": Bad(b"", "is empty: no header line, no data"),
    "only whitespace": Bad(b"\n\n   \n", "is empty: no header line, no data"),
    "header only": Bad(_rows(), "has a header but no data rows"),
    "spreadsheet name": Bad(b"PK\x03\x04 not really", "unsupported file type", name="aws_2025-01.xlsx"),
    "zip bytes named csv": Bad(b"PK\x03\x04\x14\x00\x06\x00\xe9\x8f\xff\xfe", "not UTF-8 text"),
    "UTF-16 text": Bad(
        (",".join(HEADER) + "\n" + ",".join(_line()) + "\n").encode("utf-16"), "not UTF-8 text"
    ),
    "binary garbage": Bad(bytes(range(255, -1, -1)) * 4, "not UTF-8 text"),
    "control characters for a header": Bad(
        bytes(range(1, 32)) + b"\n1\n", "FOCUS CSV files must be comma-separated"
    ),
    "gzip of garbage": Bad(_gzip(bytes(range(128, 256)) * 8), "not UTF-8 text", name="aws_2025-01.csv.gz"),
    "broken gzip header": Bad(
        b"\x1f\x8b\x08\x00garbage-not-deflate", "cannot read", name="aws_2025-01.csv.gz"
    ),
    "truncated gzip": Bad(
        lambda: _gzip(_rows(*[_line(ResourceId=f"r-{n}") for n in range(2000)]))[:3000],
        "could not be read to its end",
        name="aws_2025-01.csv.gz",
    ),
    "broken parquet": Bad(
        b"PAR1 this is not parquet PAR1",
        "cannot read aws_2025-01.parquet as Parquet",
        name="aws_2025-01.parquet",
    ),
    "gzip bomb": Bad(
        _inflating,
        "bytes of text once decompressed",
        name="aws_2025-01.csv.gz",
        settings={"OPENCHARGEBACK_INGEST_MAX_BYTES": 100_000},
    ),
    "too many rows": Bad(
        lambda: _rows(*[_line(ResourceId=f"r-{n}") for n in range(30)]),
        "more than 20 rows",
        settings={"OPENCHARGEBACK_INGEST_MAX_ROWS": 20},
    ),
    "15,000 short rows": Bad(
        _many_short_rows,
        "file abandoned after 10,000 malformed rows",
        2,
        "",
        "2025-01-01,0",
        name="aws_2025-01.csv.gz",
    ),
    # --- the header ----------------------------------------------------------------------------
    "missing BilledCost": Bad(
        _csv_text([[h for h in HEADER if h != "BilledCost"], _line()[:5] + _line()[6:]]),
        "missing required column BilledCost",
    ),
    "no resource column": Bad(
        _csv_text([["BillingPeriodStart", "BilledCost"], ["2025-01-01", "1"]]),
        "no column identifies the resource",
    ),
    "empty header names": Bad(
        b",,,,\n1,2,3,4,5\n", "missing required columns BillingPeriodStart, BilledCost"
    ),
    "semicolons": Bad(
        (";".join(HEADER) + "\n" + ";".join(_line(Tags="{}")) + "\n").encode(), "separated by semicolons"
    ),
    "tabs": Bad(
        ("\t".join(HEADER) + "\n" + "\t".join(_line(Tags="{}")) + "\n").encode(), "separated by tabs"
    ),
    "latin-1 header": Bad(
        "BillingPeriodStart,BilledCost,ResourceId,Bemerkung\xe4\n2025-01-01,1,r\n".encode("latin-1"),
        "is not UTF-8 text (line 1",
    ),
    "duplicate column": Bad(
        _rows([*_line(), "9"], header=[*HEADER, "BilledCost"]), "column BilledCost appears twice"
    ),
    "duplicate column in another case": Bad(
        _rows([*_line(), "x"], header=[*HEADER, "resourceid"]), "column resourceid appears twice"
    ),
    "header name over 128 KiB": Bad(
        _rows([*_line(), ""], header=[*HEADER, "x" * (130 * 1024)]),
        "line 1, column 12: the header cannot be read",
    ),
    "header line over 1 MiB": Bad(_long_header_line, "line 1 (the header) is longer than 1024 KiB"),
    # --- rows: shape ---------------------------------------------------------------------------
    "too many fields": Bad(_rows(_line(), [*_line(Tags="{}"), "extra"]), "1 bad row", 3, "", None),
    "too few fields": Bad(_rows(_line(), ["2025-01-01", "1"]), "1 bad row", 3, "", "2025-01-01,1"),
    "latin-1 row": Bad(
        _rows(_line()) + _csv_text([_line(ResourceName="Müller-vm")]).decode().encode("latin-1"),
        "is not UTF-8 text: line 3",
    ),
    "NUL in a resource name": Bad(
        _rows(_line(), _line(ResourceName="vm\x00one")),
        "contains a NUL byte",
        3,
        "ResourceName",
        "vm\u2400one",
    ),
    "NUL in the tags": Bad(
        _rows(_line(Tags='{"pi_email": "a\x00@x.example"}')), "contains a NUL byte", 2, "Tags", None
    ),
    # --- rows: amounts ---------------------------------------------------------------------------
    "word for an amount": _amount("twelve"),
    "two dots": _amount("12.3.4"),
    "decimal comma": _amount("12,50"),
    "currency symbol": _amount("$12.50"),
    "underscore digits": _amount("1_000"),
    "Arabic-Indic digits": _amount("١٢٣"),
    "superscript digit": _amount("²"),
    "NaN (a NULL literal)": Bad(
        _rows(_line(), _line(BilledCost="NaN")), "BilledCost is empty", 3, "BilledCost"
    ),
    "Infinity": _amount("-Infinity"),
    "hexadecimal": _amount("0x1F"),
    "double sign": _amount("--5"),
    "trailing sign": _amount("5-"),
    "bare exponent": _amount("1e"),
    "lone dot": _amount("."),
    "exponent overflow": Bad(
        _rows(_line(), _line(BilledCost="1e400")), "amount out of range", 3, "BilledCost", "1e400"
    ),
    "40 digits": Bad(
        _rows(_line(), _line(BilledCost="9" * 40)), "amount out of range", 3, "BilledCost", "9" * 40
    ),
    "200,000 digits": Bad(
        _rows(_line(), _line(BilledCost="7" * 200_000)), "amount out of range", 3, "BilledCost", None
    ),
    "19 digits beside a bad value": Bad(
        _rows(_line(), _line(BilledCost="1234567890123456789"), _line(ListCost="abc")),
        "2 bad rows",
        3,
        "BilledCost",
        "1234567890123456789",
    ),
    "empty billed cost": Bad(_rows(_line(), _line(BilledCost="")), "1 bad row", 3, "BilledCost", None),
    "blank billed cost": Bad(_rows(_line(), _line(BilledCost="   ")), "1 bad row", 3, "BilledCost", None),
    # --- rows: dates ------------------------------------------------------------------------------
    "US date": Bad(
        _rows(_line(), _line(BillingPeriodStart="01/15/2025")),
        "1 bad row",
        3,
        "BillingPeriodStart",
        "01/15/2025",
    ),
    "month 13": Bad(
        _rows(_line(BillingPeriodStart="2025-13-01")), "1 bad row", 2, "BillingPeriodStart", "2025-13-01"
    ),
    "February 30": Bad(
        _rows(_line(ChargePeriodStart="2025-02-30T00:00:00Z")),
        "no such date or time",
        2,
        "ChargePeriodStart",
        "2025-02-30T00:00:00Z",
    ),
    "year zero": Bad(
        _rows(_line(ChargePeriodEnd="0000-01-01")), "no such date or time", 2, "ChargePeriodEnd", "0000-01-01"
    ),
    "empty period start": Bad(
        _rows(_line(BillingPeriodStart="")), "1 bad row", 2, "BillingPeriodStart", None
    ),
    # --- rows: tags -------------------------------------------------------------------------------
    "unterminated tags": Bad(
        _rows(_line(Tags='{"pi_email": "ada@uni.example"')),
        "Tags is not valid JSON",
        2,
        "Tags",
        '{"pi_email": "ada@uni.example"',
    ),
    "tags not an object": Bad(_rows(_line(Tags="[1, 2]")), "Tags is not a JSON object", 2, "Tags", "[1, 2]"),
    "tags with single quotes": Bad(
        _rows(_line(Tags="{'pi_email': 'a@x.example'}")), "Tags is not valid JSON", 2, "Tags", None
    ),
    "tags with a trailing comma": Bad(
        _rows(_line(Tags='{"pi_email": "a@x.example",}')), "Tags is not valid JSON", 2, "Tags", None
    ),
    "tags nested too deep": Bad(
        _rows(_line(Tags="[" * 100_000 + "]" * 100_000)), "Tags is not valid JSON", 2, "Tags", None
    ),
}


def _snapshot() -> tuple:
    return (
        Charge.objects.count(),
        Charge.objects.aggregate(total=Sum("billed_cost"))["total"],
        sorted(BillingPeriod.objects.values_list("period", "status")),
        sorted(PI.objects.values_list("email", flat=True)),
        sorted(Project.objects.values_list("project_id", "pi__email")),
    )


@pytest.fixture
def installation(tmp_path):
    """A source and one good month already imported: a refusal must leave all of it as it was."""
    for slug in ("aws", "azure"):
        services.source_create(slug=slug)
    (tmp_path / "good").mkdir()
    good = write_focus(
        tmp_path / "good" / "aws_2024-12.csv", [focus_row(BillingPeriodStart="2024-12-01", BilledCost="5.25")]
    )
    services.import_file(path=good, source="aws")
    before = _snapshot()
    assert before[0] == 1 and before[1] == Decimal("5.25")
    return before


@pytest.fixture
def uploader() -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.edu", "x" * 20)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def test_at_least_forty_kinds():
    assert len(MALFORMED) >= 40


def _row_error_text(case: Bad) -> str:
    parts = [f"line {case.line}"]
    if case.column:
        parts.append(f"column {case.column}")
    if case.value is not None:
        parts.append(f"value {case.value!r}" if len(case.value) <= 80 else "value ")
    return ", ".join(parts)


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_file_is_refused_cleanly(kind, installation, uploader, tmp_path, settings):
    case = MALFORMED[kind]
    for name, value in case.settings.items():
        setattr(settings, name, value)
    data = case.data()
    path = tmp_path / case.name
    path.write_bytes(data)

    # The command line: exit code 1, the message, the row error's line/column/value, no traceback.
    result = run("ingest", path, "-s", "aws")
    assert result.code == 1, (kind, result.out, result.err)
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err
    assert case.message in result.err, (kind, result.err[:2000])
    if case.line is not None:
        assert _row_error_text(case) in result.err, (kind, result.err[:2000])
    assert _snapshot() == installation, kind

    # The admin's upload: a refusal in the results, the same row error, no server error.
    response = uploader.post(
        reverse("admin:billing_import_upload"),
        {"file": SimpleUploadedFile(case.name, data), "source": "aws", "period": ""},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 200, (kind, response.status_code)
    (outcome,) = response.json()["results"]
    assert not outcome["ok"] and outcome["status"] in ("failed", "rejected"), (kind, outcome)
    assert "internal error" not in outcome["error"]
    if outcome["status"] == "failed":
        assert case.message in outcome["error"] or case.message in json.dumps(outcome["errors"]), (
            kind,
            outcome,
        )
    if case.line is not None:
        first = outcome["errors"][0]
        assert first["line"] == case.line, (kind, first)
        if case.column is not None:
            assert first["column"] == case.column, (kind, first)
        if case.value is not None and len(case.value) <= 200:
            assert first["value"] == case.value, (kind, first)
    assert _snapshot() == installation, kind


def test_the_upload_page_without_javascript_shows_the_refusal(installation, uploader):
    data = MALFORMED["decimal comma"].data()
    response = uploader.post(
        reverse("admin:billing_import_upload"), {"file": SimpleUploadedFile("aws_2025-01.csv", data)}
    )
    html = response.content.decode()
    assert response.status_code == 200 and "line 3" in html and "12,50" in html
    assert _snapshot() == installation
