"""A substring (trigram) index over the charge text the admin search looks in.

PostgreSQL: the pg_trgm extension and a GIN index over the six searched columns joined by a
unit separator (one index entry per trigram and charge: smaller and quicker to write and to
search than one per column); billing.charge_search queries exactly this expression with ILIKE. pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it
without being a superuser; on an older server a superuser must run `CREATE EXTENSION pg_trgm`
first.

SQLite: an FTS5 table with the trigram tokenizer (SQLite 3.34+) whose content is the charge
table itself (external content: nothing is stored twice), kept in step by triggers on insert,
delete and update of the searched columns (bulk writers pause them and index in one statement:
billing.charge_search.bulk_writing), and filled from the existing charges here.

Caution for later migrations: Django rebuilds a SQLite table for many ALTERs of billing_charge
(copy, drop, rename), which drops these triggers. tests/billing/test_charge_search.py fails
then; such a migration must create the triggers of this one again.
"""

from django.db import migrations

COLUMNS = ("resource_id", "resource_name", "sub_account_id", "fund_org", "reference_1", "reference_2")
FTS = "billing_charge_search"

PG_INDEX = (
    "CREATE INDEX IF NOT EXISTS charge_text_trgm ON billing_charge USING gin (("
    + " || E'\\x1f' || ".join(COLUMNS)
    + ") gin_trgm_ops)"
)
# A finer histogram of the indexed text lets the planner tell a common fragment (read the newest
# charges, stop after a page) from a rare one (ask the index): the default 100 entries call
# nearly every term rare.
PG_STATISTICS = "ALTER INDEX charge_text_trgm ALTER COLUMN 1 SET STATISTICS 1000"
PG_DROP = "DROP INDEX IF EXISTS charge_text_trgm"

_cols = ", ".join(COLUMNS)
_new = ", ".join(f"new.{c}" for c in COLUMNS)
_old = ", ".join(f"old.{c}" for c in COLUMNS)
# While a row is in this table (inside a bulk write's transaction), the triggers stand aside and
# the writer indexes or unindexes its rows in one statement: per-row FTS5 writes from a trigger
# cost about ten times more.
_active = f"WHEN NOT EXISTS (SELECT 1 FROM {FTS}_pause)"
SQLITE_CREATE = [
    f"CREATE TABLE {FTS}_pause (id INTEGER PRIMARY KEY)",
    # detail=none, columnsize=0: only which charges hold each trigram (half the size and the
    # writing time of full positions); the search checks the candidates' text itself.
    f"CREATE VIRTUAL TABLE {FTS} USING fts5({_cols}, content='billing_charge', content_rowid='id', "
    "tokenize='trigram', detail=none, columnsize=0)",
    f"CREATE TRIGGER {FTS}_insert AFTER INSERT ON billing_charge {_active} BEGIN "
    f"INSERT INTO {FTS}(rowid, {_cols}) VALUES (new.id, {_new}); END",
    f"CREATE TRIGGER {FTS}_delete AFTER DELETE ON billing_charge {_active} BEGIN "
    f"INSERT INTO {FTS}({FTS}, rowid, {_cols}) VALUES ('delete', old.id, {_old}); END",
    f"CREATE TRIGGER {FTS}_update AFTER UPDATE OF {_cols} ON billing_charge {_active} BEGIN "
    f"INSERT INTO {FTS}({FTS}, rowid, {_cols}) VALUES ('delete', old.id, {_old}); "
    f"INSERT INTO {FTS}(rowid, {_cols}) VALUES (new.id, {_new}); END",
    f"INSERT INTO {FTS}({FTS}) VALUES ('rebuild')",
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS {FTS}_insert",
    f"DROP TRIGGER IF EXISTS {FTS}_delete",
    f"DROP TRIGGER IF EXISTS {FTS}_update",
    f"DROP TABLE IF EXISTS {FTS}",
    f"DROP TABLE IF EXISTS {FTS}_pause",
]


def create_index(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        # Django's TrigramExtension would do the same forwards, but backwards it queries
        # pg_extension on every database; the extension stays when this migration is reversed.
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        schema_editor.execute(PG_INDEX)
        schema_editor.execute(PG_STATISTICS)
    elif vendor == "sqlite":
        for sql in SQLITE_CREATE:
            schema_editor.execute(sql)


def drop_index(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_DROP)
    elif vendor == "sqlite":
        for sql in SQLITE_DROP:
            schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0010_human_labels"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index, elidable=False),
    ]
