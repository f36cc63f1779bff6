"""The per-batch transform (billing/ingest/transform.py): values handled once per distinct value
give every row what handling each row would give, and errors still name every row."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from billing.ingest import transform
from billing.ingest.errors import RowErrorLog


def test_text_cells_are_encoded_as_trimmed_text_in_order_of_first_sight_across_batches():
    """encode_text trims each distinct value once; the ids are those encode gives the trimmed column
    (nulls and blanks as the empty text, or as `empty`), batch after batch."""
    batches = [
        pa.array([" b", None, "a", "b", "", " a ", None], pa.string()),
        pa.array(["c", "a", None, "  ", "b "], pa.string()),
    ]
    by_rows, by_values = transform.Encoder(), transform.Encoder()
    for batch in batches:
        trimmed = pc.fill_null(pc.utf8_trim_whitespace(batch), "")
        assert by_values.encode_text(batch).to_pylist() == by_rows.encode(trimmed).to_pylist()
    assert by_values.values == by_rows.values == ["b", "", "a", "c"]

    usage = transform.Encoder()
    ids = usage.encode_text(pa.array([None, "Purchase", " ", "Usage"], pa.string()), empty="Usage")
    assert [usage.values[i] for i in ids.to_pylist()] == ["Usage", "Purchase", "Usage", "Usage"]


def test_timestamps_are_parsed_once_per_value_and_every_bad_row_is_reported():
    column = pa.array(
        [
            "2025-01-05T10:00:00Z",
            "2025-02-30",
            None,
            "2025-01-05T10:00:00Z",
            "01/05/2025",
            "2025-02-30",
            "2025-01-05 10:00",
            "0000-01-01",
        ],
        pa.string(),
    )
    errors = RowErrorLog()
    canonical = transform._parse_timestamps(column, "ChargePeriodStart", 2, errors, required=False)
    assert canonical.to_pylist() == [
        "2025-01-05T10:00:00",
        None,
        None,
        "2025-01-05T10:00:00",
        None,
        None,
        "2025-01-05T10:00:00",
        None,
    ]
    assert [(e.line, e.value, e.message) for e in errors.errors] == [
        (3, "2025-02-30", "no such date or time"),
        (6, "01/05/2025", "not a date or timestamp (YYYY-MM-DD[THH:MM:SS][Z])"),
        (7, "2025-02-30", "no such date or time"),
        (9, "0000-01-01", "no such date or time"),
    ]
    required = RowErrorLog()
    transform._parse_timestamps(column, "BillingPeriodStart", 2, required, required=True)
    assert (4, "") in [(e.line, e.value) for e in required.errors]
