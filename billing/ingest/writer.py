"""Bulk writing of charges (and of other import rows, such as subsidy records): PostgreSQL COPY,
or multi-row INSERT statements on SQLite.

The ORM's bulk_create spends most of its time adapting values field by field; an import
writes up to a million charges, so they come here as database-ready values: Arrow tables
(`RowTables`, from charge_rows.py), which PostgreSQL's COPY takes as pyarrow's CSV, or tuples.

An import larger than the table it writes to drops the table's secondary indexes (and on
PostgreSQL its foreign keys) for the insert and builds them again after it, in the same
transaction: sorting once costs less than updating B-trees and a trigram index row by row, and
one join checks the keys of every new row where PostgreSQL would otherwise run one query per row
and key at commit (measured at 490k charges into an empty table: 33 s of server time instead of
70 s). Readers see the committed table throughout (SQLite's WAL); on PostgreSQL they wait for
the import to commit, which only a first import, into a near-empty table, can make them do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain

import pyarrow as pa
import pyarrow.csv as pacsv
from django.db import DatabaseError, connection, transaction
from django.db.backends.utils import CursorWrapper

from billing import charge_search
from billing.models import Charge

from .background import produced_in_background

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
# SQLite: rows handed from the formatting thread to the insert at once.
SQLITE_BATCH = 2000
# SQLite: rows per INSERT statement (a multi-row VALUES list, within the connection's limit of
# parameters). executemany runs its statement once per row, and each run has fixed costs —
# AUTOINCREMENT reads and writes sqlite_sequence, the statement starts and ends — which a
# statement of 100 rows pays once: 490k charges went in in 3.9 s instead of 5.6 s, and the
# commit took 0.6 s instead of 1.1 s.
SQLITE_ROWS_PER_STATEMENT = 100
# Below this many rows an import keeps the indexes as they are (see _indexes_rebuilt_after).
REBUILD_INDEXES_FROM_ROWS = 20_000
# PostgreSQL: how long the import waits for the lock that dropping indexes and keys takes before
# it writes with them in place instead (a long query reading charges holds the table).
PG_LOCK_TIMEOUT = "3s"
# SQLSTATEs of giving up that lock, and of a table still in use in the transaction: both mean
# "write with the indexes in place".
PG_KEEP_INDEXES_SQLSTATES = {"55P03", "55006"}
# Tables formatted ahead of the database's insert (each a WRITE_SLICE_ROWS slice, tens of MB).
TABLES_AHEAD = 2


class RowTables:
    """Rows to write, as Arrow tables of the target's columns holding database-ready values; read
    once. Iterating gives their rows as tuples, as write_rows also takes them."""

    def __init__(self, tables: Iterable[pa.Table]) -> None:
        self._tables = iter(tables)

    def tables(self) -> Iterator[pa.Table]:
        return self._tables

    def __iter__(self) -> Iterator[tuple]:
        for table in self._tables:
            yield from zip(*(column.to_pylist() for column in table.columns), strict=True)


def write_charges(rows: Iterable[Sequence] | RowTables, expected_rows: int = 0) -> int:
    """Insert charges: RowTables, or tuples in CHARGE_COLUMNS order of database-ready values
    (money as 10^-10 integer units on SQLite and decimal text on PostgreSQL, timestamps as UTC
    text, tags as JSON text); returns the count. `expected_rows`: about how many there are."""
    # The admin's search index takes the new rows in one pass at the end (billing.charge_search),
    # or, on PostgreSQL, is built anew with the other indexes when write_rows drops them.
    with charge_search.bulk_writing():
        return write_rows(Charge._meta.db_table, CHARGE_COLUMNS, rows, expected_rows)


def write_rows(
    table: str, columns: Sequence[str], rows: Iterable[Sequence] | RowTables, expected_rows: int = 0
) -> int:
    """Insert rows of database-ready values (RowTables, or tuples in `columns` order) into
    `table` (fixed names, never user input) by COPY or multi-row INSERT statements, the table's
    indexes dropped and built again after when that pays; returns the count."""
    count = 0
    names = ", ".join(columns)
    if isinstance(rows, RowTables):
        rows = RowTables(_named(rows.tables(), list(columns)))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor, _pg_indexes_rebuilt_after(cursor, table, expected_rows):
            raw = cursor.cursor  # the psycopg cursor underneath Django's wrapper
            if isinstance(rows, RowTables):
                with raw.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT csv)") as copy:
                    # Formatted in a second thread while the server inserts the previous table.
                    for rows_in, text in produced_in_background(
                        _csv_texts(rows.tables()), TABLES_AHEAD, name="charge-csv"
                    ):
                        copy.write(text)
                        count += rows_in
                return count
            with raw.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                # psycopg formats each row for COPY in C (psycopg-binary).
                for row in rows:
                    copy.write_row(row)
                    count += 1
        return count

    width = len(columns)
    per_statement = max(1, min(SQLITE_ROWS_PER_STATEMENT, SQLITE_BATCH, _sqlite_parameter_limit() // width))
    one_row = "(" + ", ".join(["?"] * width) + ")"
    statements: dict[int, str] = {}  # rows -> the INSERT of that many rows
    with connection.cursor() as cursor, _indexes_rebuilt_after(cursor, table, expected_rows):
        # The driver's own cursor, in the same transaction: Django's would rewrite the thousands
        # of placeholders of every statement from %s to ? (a regular expression each time). Its
        # errors still reach the caller as Django's (IntegrityError, OperationalError ...).
        raw = connection.connection.cursor()
        try:
            with connection.wrap_database_errors:
                for batch in _batches_in_background(rows, SQLITE_BATCH, per_statement):
                    for params in batch:
                        rows_in = len(params) // width
                        if rows_in not in statements:
                            statements[rows_in] = (
                                f"INSERT INTO {table} ({names}) VALUES "  # noqa: S608 - fixed names
                                + ", ".join([one_row] * rows_in)
                            )
                        raw.execute(statements[rows_in], params)
                        count += rows_in
        finally:
            raw.close()
    return count


def _named(tables: Iterator[pa.Table], columns: list[str]) -> Iterator[pa.Table]:
    """The tables, each checked to hold exactly `columns` in that order: a table that does not
    would put values in the wrong columns (SQLite's statements are cut by the column count)."""
    for table in tables:
        if table.column_names != columns:
            raise ValueError(f"rows to write have columns {table.column_names}, not {columns}")
        yield table


def _sqlite_parameter_limit() -> int:
    """How many parameters one statement of this SQLite connection takes (Django assumes 999, the
    limit of SQLite before 3.32; later versions take 32,766)."""
    connection.ensure_connection()
    return int(connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def _csv_texts(tables: Iterator[pa.Table]) -> Iterator[tuple[int, pa.Buffer]]:
    """Each table as COPY's CSV (strings quoted, so that only a null is an unquoted empty field)."""
    options = pacsv.WriteOptions(include_header=False)
    for table in tables:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, options)
        yield table.num_rows, sink.getvalue()


def _holds_more_than(cursor: CursorWrapper, table: str, rows: int) -> bool:
    """Whether the table holds more than `rows` rows (counting no further)."""
    cursor.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT %s) AS head", [rows + 1])  # noqa: S608 - fixed name
    return bool(cursor.fetchone()[0] > rows)


def _worth_rebuilding(cursor: CursorWrapper, table: str, expected_rows: int) -> bool:
    """When the rows to insert outnumber those in the table, inside a transaction (which rolls
    a drop back with everything else if the import fails)."""
    return (
        expected_rows >= REBUILD_INDEXES_FROM_ROWS
        and connection.in_atomic_block
        and not _holds_more_than(cursor, table, expected_rows)
    )


@contextmanager
def _indexes_rebuilt_after(cursor: CursorWrapper, table: str, expected_rows: int) -> Iterator[None]:
    """SQLite: the table's secondary indexes dropped while inserting, and built again after it,
    when that pays (see the module's doc: measured a third of the insert's time at 490k charges
    into an empty table)."""
    if not _worth_rebuilding(cursor, table, expected_rows):
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
    with _sorting_on_disk(cursor):
        for _name, sql in indexes:
            cursor.execute(sql)


def sqlite_temp_storage_closed() -> None:
    """SQLite, outside a transaction: close the connection's temporary database (migrations run
    in the same process leave it open), so that the import can sort on disk inside its
    transaction (_sorting_on_disk): SQLite refuses to change temp_store in a transaction while a
    temporary database is open. The connection keeps its setting."""
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA temp_store")
        (before,) = cursor.fetchone()
        # Any change of the setting closes the temporary database; the second puts it back.
        cursor.execute(f"PRAGMA temp_store = {1 if int(before) == 2 else 2}")
        cursor.execute(f"PRAGMA temp_store = {int(before)}")


@contextmanager
def _sorting_on_disk(cursor: CursorWrapper) -> Iterator[None]:
    """SQLite sorts to temporary files in the block (beyond its page cache). Under the
    connection's temp_store=MEMORY (settings) its sorter never flushes: the indexes built again
    after a large insert held every entry in memory, which grew with the charges (about 150 MB at
    2.3M). Only the rebuild: inserting under temp_store=FILE was slower (statement journals go to
    files; +1.5 s at 490k charges). Refused while the connection has a temporary database open
    (see sqlite_temp_storage_closed): the sort then stays in memory."""
    cursor.execute("PRAGMA temp_store")
    (before,) = cursor.fetchone()
    try:
        cursor.execute("PRAGMA temp_store = FILE")
    except DatabaseError:
        yield
        return
    try:
        yield
    finally:
        cursor.execute(f"PRAGMA temp_store = {int(before)}")


@contextmanager
def _pg_indexes_rebuilt_after(cursor: CursorWrapper, table: str, expected_rows: int) -> Iterator[None]:
    """PostgreSQL: the table's plain secondary indexes and its foreign keys dropped while
    inserting, and made again after it (each exactly as the catalog defines it), when that pays.
    When the table cannot be had within PG_LOCK_TIMEOUT, nothing is dropped and the rows go in
    with the indexes and keys in place."""
    dropped = _pg_drop_indexes(cursor, table) if _worth_rebuilding(cursor, table, expected_rows) else None
    yield
    if dropped is None:
        return
    indexes, keys = dropped
    for definition in indexes:
        cursor.execute(definition)
    if keys:
        # One statement: each key is checked by one join over the table.
        quote = connection.ops.quote_name
        cursor.execute(
            f"ALTER TABLE {quote(table)} "
            + ", ".join(f"ADD CONSTRAINT {quote(name)} {definition}" for name, definition in keys)
        )


def _pg_drop_indexes(cursor: CursorWrapper, table: str) -> tuple[list[str], list[tuple[str, str]]] | None:
    """Drop the table's plain secondary indexes and its foreign keys; their definitions, or None
    when they stay (see _pg_indexes_rebuilt_after)."""
    cursor.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary AND NOT i.indisunique "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) ORDER BY c.relname",
        [table],
    )
    indexes = cursor.fetchall()
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname",
        [table],
    )
    keys = cursor.fetchall()
    if not indexes and not keys:
        return None
    quote = connection.ops.quote_name
    cursor.execute("SELECT current_setting('lock_timeout')")
    (lock_timeout,) = cursor.fetchone()
    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [PG_LOCK_TIMEOUT])
    try:
        with transaction.atomic():  # a savepoint: a refusal leaves the transaction usable
            # A table with checks pending in the transaction (rows inserted into the tables its keys
            # refer to, say) cannot be altered: those checks run now rather than at commit. (Named,
            # not ALL: ALL would also make the keys added back after the insert immediate.)
            _pg_set_constraints(cursor, "IMMEDIATE", "k.condeferrable")
            if keys:
                cursor.execute(
                    f"ALTER TABLE {quote(table)} "
                    + ", ".join(f"DROP CONSTRAINT {quote(name)}" for name, _ in keys)
                )
            if indexes:
                cursor.execute("DROP INDEX " + ", ".join(quote(name) for name, _ in indexes))
            _pg_set_constraints(cursor, "DEFERRED", "k.condeferred")  # back to their initial mode
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) not in PG_KEEP_INDEXES_SQLSTATES:
            raise
        return None
    finally:
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
    return [definition for _, definition in indexes], keys


def _pg_set_constraints(cursor: CursorWrapper, mode: str, which: str) -> None:
    """SET CONSTRAINTS `mode` for the database's constraints that satisfy `which` (SQL on k)."""
    cursor.execute(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(k.conname) FROM pg_constraint k "  # noqa: S608 - fixed SQL
        f"JOIN pg_namespace n ON n.oid = k.connamespace WHERE {which}"
    )
    names = sorted({name for (name,) in cursor.fetchall()})
    if names:
        cursor.execute(f"SET CONSTRAINTS {', '.join(names)} {mode}")


def _batches_in_background(
    rows: Iterable[Sequence] | RowTables, size: int, per_statement: int
) -> Iterator[list[list]]:
    """Batches of about `size` rows, each a list of the parameters of one INSERT statement
    (`per_statement` rows' values one after the other), built in a second thread: SQLite releases
    the GIL while it inserts, so the two overlap on a multi-core machine."""
    return produced_in_background(_batches(rows, size, per_statement), 8, name="charge-rows")


def _batches(rows: Iterable[Sequence] | RowTables, size: int, per_statement: int) -> Iterator[list[list]]:
    if isinstance(rows, RowTables):
        for table in rows.tables():
            width = table.num_columns
            statement = per_statement * width
            # A batch at a time: Python values of a whole table (50,000 charges) took 100 MB or so.
            for start in range(0, table.num_rows, size):
                piece = table.slice(start, size)
                # Every row's values one after the other, in column order (a strided slice
                # assignment per column: a third cheaper than chaining the rows' tuples).
                values: list = [None] * (piece.num_rows * width)
                for position, column in enumerate(piece.columns):
                    values[position::width] = column.to_pylist()
                yield [values[at : at + statement] for at in range(0, len(values), statement)]
        return
    batch: list[list] = []
    pending: list = []
    for row in rows:
        pending.append(row)
        if len(pending) >= per_statement:
            batch.append(list(chain.from_iterable(pending)))
            pending = []
            if len(batch) * per_statement >= size:
                yield batch
                batch = []
    if pending:
        batch.append(list(chain.from_iterable(pending)))
    if batch:
        yield batch
