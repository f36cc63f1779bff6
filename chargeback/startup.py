"""What the console script does before a command runs: a database to work in, the database
settings of a config.yaml applied, and what the file cannot honour said. Messages go to stderr in
one line each (stdout stays the command's: one JSON document with --format json)."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.db import DatabaseError, connection

# Commands that need no database, or set it up themselves.
NO_DATABASE_CHECK = frozenset(
    {
        "check",
        "collectstatic",
        "compilemessages",
        "dbshell",
        "demo",  # migrates, and says so
        "diffsettings",
        "findstatic",
        "help",
        "makemessages",
        "makemigrations",
        "migrate",
        "optimizemigration",
        "restore",  # onto an empty installation: it migrates itself
        "sendtestemail",
        "showmigrations",
        "sqlflush",
        "sqlmigrate",
        "sqlsequencereset",
        "squashmigrations",
        "startapp",
        "startproject",
        "test",
        "testserver",
        "version",
    }
)


def _database_label() -> str:
    db = settings.DATABASES["default"]
    if connection.vendor == "sqlite":
        return str(Path(db["NAME"]).resolve())
    return f"{db.get('NAME')} on {db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}"


def before_command(subcommand: str, err: TextIO) -> int:
    """0 when the command may run; otherwise an exit code, after saying why in one line."""
    for warning in settings.OPENCHARGEBACK_CONFIG_WARNINGS:
        err.write(f"openchargeback: warning: {_config_name()}: {warning}\n")
    if subcommand in NO_DATABASE_CHECK:
        return 0
    try:
        tables = set(connection.introspection.table_names())
    except DatabaseError as exc:
        err.write(
            f"openchargeback: error: cannot open the database {_database_label()}: {_first_line(exc)}\n"
        )
        return 1
    if "django_migrations" not in tables:
        code = _create_database(tables, err)
        if code:
            return code
    pending = _pending_migrations()
    if pending:
        err.write(f"openchargeback: error: {_needs_migrations(pending)}\n")
        return 1
    return _apply_config(err)


def _pending_migrations() -> int:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def _needs_migrations(count: int) -> str:
    return (
        f"the database {_database_label()} needs {count} migration{'' if count == 1 else 's'} "
        "(an upgrade of OpenChargeback): run `openchargeback migrate`"
    )


def _create_database(tables: set[str], err: TextIO) -> int:
    """The first command on the embedded SQLite default creates the database; PostgreSQL is set up
    by whoever runs it (`openchargeback migrate`), never behind their back."""
    if connection.vendor != "sqlite":
        err.write(
            f"openchargeback: error: the database {_database_label()} is not set up: "
            "run `openchargeback migrate`\n"
        )
        return 1
    if tables:
        err.write(
            f"openchargeback: error: {_database_label()} is not an OpenChargeback database (it has tables "
            "but no migrations; the original OpenChargeback's billing.db?): point database.path at a new "
            "file and import the FOCUS files again (import-config brings the settings over)\n"
        )
        return 1
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    err.write(
        f"openchargeback: created the database {_database_label()} "
        f"(data folder {Path(settings.DATA_DIR).resolve()})\n"
    )
    return 0


def _config_name() -> str:
    config = settings.OPENCHARGEBACK_CONFIG_FILE
    return config.path.name if config else "config"


def _apply_config(err: TextIO) -> int:
    """The database settings of config.yaml, when the file is new or changed since last applied."""
    config = settings.OPENCHARGEBACK_CONFIG_FILE
    if config is None:
        return 0
    from chargeback.errors import Refused
    from chargeback.operations.legacy_config import config_apply

    try:
        outcome = config_apply(config=config)
    except Refused as exc:
        err.write(f"openchargeback: error: {exc}\n")
        return 1
    if outcome is None:
        return 0
    applied = [item for item in outcome.items if item.status == "applied"]
    err.write(
        f"openchargeback: applied {config.path} (new or changed since it was last applied): "
        + (f"{len(applied)} change{'' if len(applied) == 1 else 's'}\n" if applied else "nothing to change\n")
    )
    for item in applied:
        err.write(f"  {item.key}: {item.detail}\n")
    return 0


def explain_database_error(exc: DatabaseError) -> str:
    """A database error a command met, in one line, when it is one of set-up (a table or column
    missing: migrations not applied); empty for anything else."""
    connection.close()  # a failed statement may have left the connection unusable (PostgreSQL)
    try:
        pending = _pending_migrations()
    except DatabaseError:
        return f"cannot use the database {_database_label()}: {_first_line(exc)}"
    return _needs_migrations(pending) if pending else ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
