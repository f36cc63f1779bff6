"""Bulk writing of charges: PostgreSQL COPY, or batched executemany on SQLite.

The ORM's bulk_create spends most of its time adapting values field by field; an import
writes up to a million charges, so rows are built as tuples of database-ready values here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from queue import Queue

from django.db import connection
from django.db.backends.utils import CursorWrapper

from billing import charge_search
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
]
SQLITE_BATCH = 2000
# Below this many rows an import keeps the indexes as they are (see _indexes_rebuilt_after).
REBUILD_INDEXES_FROM_ROWS = 20_000


def write_charges(rows: Iterable[Sequence], expected_rows: int = 0) -> int:
    """Insert charge rows, tuples in CHARGE_COLUMNS order of database-ready values (money as
    10^-10 integer units on SQLite and decimal text on PostgreSQL, timestamps as UTC text,
    tags as JSON text); returns the count. `expected_rows`: about how many there are."""
    table = Charge._meta.db_table
    count = 0
    if connection.vendor == "postgresql":
        columns = ", ".join(CHARGE_COLUMNS)
        # The admin's search index (GIN) takes the new rows in one pass at the end.
        with charge_search.bulk_writing(), connection.cursor() as cursor:
            raw = cursor.cursor  # the psycopg cursor underneath Django's wrapper
            with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                # psycopg formats each row for COPY in C (psycopg-binary), several times faster
                # than joining escaped text in Python.
                for row in rows:
                    copy.write_row(row)
                    count += 1
        return count

    placeholders = ", ".join(["%s"] * len(CHARGE_COLUMNS))
    sql = f"INSERT INTO {table} ({', '.join(CHARGE_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608 - fixed names
    # The admin's search index takes the new rows in one statement at the end (billing.charge_search).
    with (
        charge_search.bulk_writing(),
        connection.cursor() as cursor,
        _indexes_rebuilt_after(cursor, table, expected_rows),
    ):
        for batch in _batches_in_background(rows, SQLITE_BATCH):
            cursor.executemany(sql, batch)
            count += len(batch)
    return count


@contextmanager
def _indexes_rebuilt_after(cursor: CursorWrapper, table: str, expected_rows: int) -> Iterator[None]:
    """On SQLite, when the rows to insert outnumber those in the table, drop its secondary indexes
    for the insert and build them again after it, in the same transaction: sorting once costs
    less than updating five B-trees row by row (measured: a third of the insert's time at 490k
    charges into an empty table). A failure rolls the drop back with everything else; readers
    see the committed table, indexes included, throughout (WAL)."""
    if expected_rows < REBUILD_INDEXES_FROM_ROWS:
        yield
        return
    cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed name
    (existing,) = cursor.fetchone()
    if existing > expected_rows:
        yield
        return
    cursor.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s AND sql IS NOT NULL",
        [table],
    )
    indexes = cursor.fetchall()
    for name, _sql in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    yield
    for _name, sql in indexes:
        cursor.execute(sql)


def _batches_in_background(rows: Iterable[Sequence], size: int) -> Iterator[list]:
    """Build row batches in a second thread: SQLite releases the GIL while it inserts, so the two
    overlap on a multi-core machine. The thread never touches the database connection."""
    queue: Queue = Queue(maxsize=8)
    done = object()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            batch: list = []
            for row in rows:
                batch.append(row)
                if len(batch) >= size:
                    queue.put(batch)
                    batch = []
            if batch:
                queue.put(batch)
        except BaseException as exc:  # handed to the consumer, re-raised there
            failure.append(exc)
        finally:
            queue.put(done)

    thread = threading.Thread(target=produce, name="charge-rows", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not done:
            yield item
    finally:
        thread.join(timeout=60)
    if failure:
        raise failure[0]
