"""Limits of one import: bad rows are logged in bounded memory (the first 50 by line and a count),
a file is abandoned after OPENCHARGEBACK_INGEST_MAX_BAD_ROWS malformed rows without reading the
rest, and a file is refused past OPENCHARGEBACK_INGEST_MAX_BYTES of decompressed text or
OPENCHARGEBACK_INGEST_MAX_ROWS rows. Each refusal leaves only its failed Import."""

from __future__ import annotations

import gzip

import pytest

from billing.ingest import pipeline
from billing.ingest.errors import IngestError, RowError
from billing.models import BillingPeriod
from tests.billing.test_ingest import (
    HEADER,
    _csv_text,
    _line,
    assert_nothing_written,
    focus_row,
    ingest,
    the_failed_import,
    write_focus,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def aws(db):
    from billing import services

    return services.source_create(slug="aws")


def _gzip_of_lines(path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as out:
        out.write(",".join(HEADER) + "\n")
        out.writelines(lines)


def test_a_file_of_malformed_rows_is_abandoned_without_reading_the_rest(aws, tmp_path):
    path = tmp_path / "aws_2025-01.csv.gz"
    _gzip_of_lines(path, [f"2025-01-01,{n}\n" for n in range(200_000)])

    with pytest.raises(IngestError) as caught:
        ingest(path)

    assert caught.value.message == (
        "aws_2025-01.csv.gz: file abandoned after 10,000 malformed rows; nothing was imported"
    )
    errors = caught.value.errors
    assert len(errors) == 50
    assert errors[0] == RowError(2, "", "2025-01-01,0", "expected 11 fields, found 2")
    assert [e.line for e in errors] == list(range(2, 52))
    assert caught.value.total_errors == 10_000  # counted up to the limit, then reading stopped
    assert caught.value.describe().endswith("  ... and 9950 more")
    the_failed_import(caught.value)
    assert_nothing_written()
    assert BillingPeriod.objects.count() == 0


def test_the_limit_of_bad_rows_is_a_setting(aws, tmp_path, settings):
    settings.OPENCHARGEBACK_INGEST_MAX_BAD_ROWS = 20
    lines = [HEADER, _line()] + [_line(BilledCost=f"x{n}") for n in range(30)]
    path = tmp_path / "aws_2025-01.csv"
    path.write_bytes(_csv_text(lines))
    with pytest.raises(IngestError, match="file abandoned after 30 malformed rows"):
        ingest(path)
    assert_nothing_written()


def test_bad_rows_of_every_batch_are_counted_and_the_first_by_line_listed(aws, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "TRANSFORM_ROWS", 7)  # many small batches
    lines = [HEADER]
    for n in range(200):
        lines.append(_line(BilledCost=f"x{n}") if n % 2 else _line(ResourceId=f"r-{n}"))
    lines.append(["2025-01-01", "1"])  # skipped by the CSV reader (wrong number of fields)
    path = tmp_path / "aws_2025-01.csv"
    path.write_bytes(_csv_text(lines))
    with pytest.raises(
        IngestError, match=r"^aws_2025-01\.csv: 101 bad rows; nothing was imported$"
    ) as caught:
        ingest(path)
    assert [e.line for e in caught.value.errors] == list(range(3, 103, 2))
    assert caught.value.total_errors == 101


def test_lines_after_a_skipped_row_are_the_files_lines(aws, tmp_path):
    """A row the CSV reader skipped (wrong number of fields) does not shift later lines."""
    lines = [HEADER, _line(), ["2025-01-01", "1"], _line(), _line(BilledCost="12,5")]
    path = tmp_path / "aws_2025-01.csv"
    path.write_bytes(_csv_text(lines))
    with pytest.raises(IngestError) as caught:
        ingest(path)
    assert caught.value.errors == [
        RowError(3, "", "2025-01-01,1", "expected 11 fields, found 2"),
        RowError(5, "BilledCost", "12,5", "not a number"),
    ]


def test_a_small_gzip_that_inflates_past_the_limit_is_refused(aws, tmp_path, settings):
    settings.OPENCHARGEBACK_INGEST_MAX_BYTES = 200_000
    path = write_focus(
        tmp_path / "aws_2025-01.csv.gz", [focus_row(ResourceId=f"r-{n}") for n in range(2_000)]
    )
    assert path.stat().st_size < 200_000 / 5
    with pytest.raises(IngestError) as caught:
        ingest(path)
    assert caught.value.message == (
        "aws_2025-01.csv.gz: more than 200,000 bytes of text once decompressed; one import takes at most "
        "that much (OPENCHARGEBACK_INGEST_MAX_BYTES)"
    )
    the_failed_import(caught.value)
    assert_nothing_written()


def test_too_many_rows_are_refused(aws, tmp_path, settings):
    settings.OPENCHARGEBACK_INGEST_MAX_ROWS = 100
    path = write_focus(tmp_path / "aws_2025-01.csv", [focus_row(ResourceId=f"r-{n}") for n in range(101)])
    with pytest.raises(IngestError, match=r"more than 100 rows; one import takes at most that many"):
        ingest(path)
    assert_nothing_written()
    settings.OPENCHARGEBACK_INGEST_MAX_ROWS = 101
    assert ingest(path).rows == 101


def test_the_log_keeps_only_the_lowest_lines():
    from billing.ingest.errors import RowErrorLog

    log = RowErrorLog(keep=5)
    for line in [9, 3, 7, 100, 1, 5, 2, 8, 4, 6] * 1000:
        log.add(RowError(line, "BilledCost", "x", "not a number"))
    assert log.count == 10_000 and len(log._heap) == 5
    assert [e.line for e in log.errors] == [1, 1, 1, 1, 1]
    fresh = RowErrorLog(keep=3)
    for line in range(10, 0, -1):
        fresh.add(RowError(line, "", "", "bad"))
    assert [e.line for e in fresh.errors] == [1, 2, 3]
