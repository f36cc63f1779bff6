"""Bulk writing of charges: PostgreSQL COPY, or batched executemany on SQLite.

The ORM's bulk_create spends most of its time adapting values field by field; an import
writes up to a million charges, so rows are built as tuples of database-ready values here.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal

from django.db import connection

from billing.models import Charge

CHARGE_COLUMNS = [
    "period_id",
    "source_id",
    "import_run_id",
    "pi_id",
    "project_id",
    "pi_email",
    "project_code",
    "fund_org",
    "cost_center",
    "reference_1",
    "reference_2",
    "attribution_source",
    "resource_id",
    "resource_name",
    "service_name",
    "service_category",
    "charge_category",
    "sub_account_id",
    "region",
    "sku_id",
    "quantity",
    "unit",
    "list_cost",
    "contracted_cost",
    "billed_cost",
    "effective_cost",
    "line_count",
    "charge_period_start",
    "charge_period_end",
    "tags",
    "review_state",
    "flag_summary",
    "fingerprint",
]
MONEY_INDEXES = [CHARGE_COLUMNS.index(c) for c in ("list_cost", "contracted_cost", "billed_cost", "effective_cost")]
TIME_INDEXES = [CHARGE_COLUMNS.index(c) for c in ("charge_period_start", "charge_period_end")]
TAGS_INDEX = CHARGE_COLUMNS.index("tags")
QUANTITY_INDEX = CHARGE_COLUMNS.index("quantity")
SQLITE_BATCH = 2000


def _sqlite_row(row: Sequence) -> tuple:
    values = list(row)
    for i in MONEY_INDEXES:
        values[i] = int(values[i].scaleb(10))
    for i in TIME_INDEXES:
        if values[i]:
            values[i] = values[i].replace("T", " ")
    if values[QUANTITY_INDEX] is not None:
        values[QUANTITY_INDEX] = str(values[QUANTITY_INDEX])
    values[TAGS_INDEX] = json.dumps(values[TAGS_INDEX])
    return tuple(values)


def _copy_text(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, Decimal):
        return format(value, "f")
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_charges(rows: Iterable[Sequence]) -> int:
    """Insert charge rows (tuples in CHARGE_COLUMNS order, Python values); returns the count."""
    table = Charge._meta.db_table
    count = 0
    if connection.vendor == "postgresql":
        columns = ", ".join(CHARGE_COLUMNS)
        with connection.cursor() as cursor:
            raw = cursor.cursor  # the psycopg cursor underneath Django's wrapper
            with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                buffer = io.StringIO()
                for row in rows:
                    values = list(row)
                    values[TAGS_INDEX] = json.dumps(values[TAGS_INDEX])
                    for i in TIME_INDEXES:
                        if values[i]:
                            values[i] = values[i] + "+00"
                    buffer.write("\t".join(_copy_text(v) for v in values))
                    buffer.write("\n")
                    count += 1
                    if count % 10_000 == 0:
                        copy.write(buffer.getvalue())
                        buffer = io.StringIO()
                copy.write(buffer.getvalue())
        return count

    placeholders = ", ".join(["%s"] * len(CHARGE_COLUMNS))
    sql = f"INSERT INTO {table} ({', '.join(CHARGE_COLUMNS)}) VALUES ({placeholders})"
    batch: list[tuple] = []
    with connection.cursor() as cursor:
        for row in rows:
            batch.append(_sqlite_row(row))
            if len(batch) >= SQLITE_BATCH:
                cursor.executemany(sql, batch)
                count += len(batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)
            count += len(batch)
    return count
