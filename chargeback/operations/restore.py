"""Restore of a backup archive onto an installation without data (see chargeback.operations.backup
for the archive's format and what is checked before anything is written)."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.loader import MigrationLoader

from chargeback import storage
from chargeback.errors import Refused
from chargeback.logging import audit
from chargeback.operations.backup import (
    CHUNK,
    DATA_APPS,
    NOT_DATA_MODELS,
    _actor,
    _concrete_models,
    _pg_command,
    _sqlite_alias,
    _vendor,
    applied_migrations,
    collect_stats,
    compare_stats,
    extract_verified,
)

# --- restore ------------------------------------------------------------------------------


@dataclass
class RestoreOutcome:
    path: Path
    manifest: dict[str, Any]
    media_files: int = 0
    migrated: list[str] = field(default_factory=list)
    previous_media: Path | str | None = None  # a folder, or s3://bucket/prefix


def installation_data() -> dict[str, int]:
    """Tables of this installation that hold data (rows of users, billing, statements, journals, audit)."""
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
        found = {}
        for model in _concrete_models():
            label = model._meta.label_lower
            table = model._meta.db_table
            is_data = model._meta.app_label in DATA_APPS or label == "auth.user"
            if not is_data or label in NOT_DATA_MODELS or table not in tables:
                continue
            cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")  # noqa: S608
            n = int(cursor.fetchone()[0])
            if n:
                found[table] = n
    return found


def _check_migrations_known(manifest: dict[str, Any]) -> None:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    known = set(loader.disk_migrations)
    unknown = [
        f"{app}.{name}"
        for app, names in manifest.get("migrations", {}).items()
        for name in names
        if (app, name) not in known
    ]
    if unknown:
        raise Refused(
            f"the backup was made by a newer version ({manifest.get('app_version')}) with migrations this "
            f"version does not know: {', '.join(unknown[:10])}; upgrade OpenChargeback first"
        )


def _restore_sqlite(snapshot: Path, manifest: dict[str, Any]) -> None:
    with _sqlite_alias(snapshot) as alias:
        problems = compare_stats(manifest["stats"], collect_stats(alias))
    if problems:
        raise Refused("the database in the backup does not match its manifest:\n  " + "\n  ".join(problems))
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.in_atomic_block:
        raise Refused("restore cannot run inside a transaction")
    connection.close()
    connection.ensure_connection()
    source = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True)
    try:
        # The backup API replaces the target's pages under one lock: all or nothing.
        source.backup(connection.connection)
    except sqlite3.Error as exc:
        raise Refused(f"restoring the SQLite database failed, nothing was changed: {exc}") from None
    finally:
        source.close()
        connection.close()


def _restore_postgres(dump: Path, work: Path) -> None:
    """Drop what `migrate` created and load the dump, in one transaction that commits only if
    pg_restore produced the whole script and psql ran every statement of it."""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.in_atomic_block:
        raise Refused("restore cannot run inside a transaction")
    with connection.cursor() as cursor:
        tables = [t.name for t in connection.introspection.get_table_list(cursor) if t.type in ("t", "p")]
    connection.close()
    prelude = "BEGIN;\nSET client_min_messages = warning;\n" + "".join(
        f"DROP TABLE IF EXISTS {connection.ops.quote_name(t)} CASCADE;\n" for t in tables
    )
    psql_cmd, env = _pg_command("psql", ["--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "-f", "-"])
    restore_cmd = ["pg_restore", "--no-owner", "--no-privileges", "--file=-", str(dump)]
    restore_err, psql_err = (work / "pg_restore.err").open("w+b"), (work / "psql.err").open("w+b")
    with restore_err, psql_err:
        try:
            consumer = subprocess.Popen(
                psql_cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_err, env=env
            )
        except FileNotFoundError:
            raise Refused("psql is not installed (install the PostgreSQL client tools)") from None
        assert consumer.stdin is not None
        producer: subprocess.Popen[bytes] | None = None
        producer_rc: int | None = None
        try:
            consumer.stdin.write(prelude.encode())
            producer = subprocess.Popen(restore_cmd, stdout=subprocess.PIPE, stderr=restore_err)
            assert producer.stdout is not None
            with producer.stdout:
                while chunk := producer.stdout.read(CHUNK):
                    consumer.stdin.write(chunk)
            producer_rc = producer.wait()
            # COMMIT only after the whole script went through; anything else rolls back.
            consumer.stdin.write(b"COMMIT;\n" if producer_rc == 0 else b"ROLLBACK;\n")
            consumer.stdin.close()
        except FileNotFoundError:
            consumer.kill()
            raise Refused("pg_restore is not installed (install the PostgreSQL client tools)") from None
        except BrokenPipeError:
            pass  # psql stopped at an error (ON_ERROR_STOP): its transaction is rolled back
        finally:
            with contextlib.suppress(BrokenPipeError):
                consumer.stdin.close()
            if producer is not None and producer_rc is None:
                producer.kill()
                producer.wait()
        consumer_rc = consumer.wait()
        restore_err.seek(0)
        psql_err.seek(0)
        restore_msg = restore_err.read().decode(errors="replace").strip()
        psql_msg = psql_err.read().decode(errors="replace").strip()
    if producer_rc == 0 and consumer_rc == 0:
        return
    detail = psql_msg if consumer_rc != 0 and psql_msg else (restore_msg or psql_msg)
    raise Refused(f"restoring the PostgreSQL database failed, nothing was changed: {detail}")


def _swap_media(staged: Path, media_root: Path) -> Path | None:
    """Move the staged media into MEDIA_ROOT; existing files move aside to a dated folder first."""
    media_root.mkdir(parents=True, exist_ok=True)
    previous = None
    existing = list(media_root.iterdir())
    if existing:
        previous = media_root.with_name(f"{media_root.name}.before-restore-{dt.datetime.now():%Y%m%d-%H%M%S}")
        previous.mkdir()
        for entry in existing:
            entry.rename(previous / entry.name)
    if staged.is_dir():
        for entry in staged.iterdir():
            entry.rename(media_root / entry.name)
    return previous


def backup_restore(
    *, path: str | Path, force: bool = False, migrate: bool = True, unsigned: bool = False
) -> RestoreOutcome:
    """Restore an archive onto this installation (which must hold no data unless `force`); its
    signature must verify unless `unsigned`."""
    archive = Path(path)
    media_root = Path(settings.MEDIA_ROOT)
    media_root.parent.mkdir(parents=True, exist_ok=True)
    # Staged beside MEDIA_ROOT: moving the files in is a rename on the same file system.
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=media_root.parent) as tmp:
        work = Path(tmp)
        manifest = extract_verified(archive, work, unsigned=unsigned)
        _check_migrations_known(manifest)
        vendor = manifest["database"]["vendor"]
        if vendor != _vendor():
            raise Refused(
                f"the backup holds a {vendor} database and this installation uses {_vendor()}; "
                "restore onto the same kind of database"
            )
        data = installation_data()
        if data and not force:
            listed = ", ".join(f"{t} ({n})" for t, n in sorted(data.items())[:8])
            raise Refused(
                f"this installation already holds data: {listed}; restore onto an empty installation, "
                "or --force to replace it"
            )
        snapshot = work / manifest["database"]["member"]
        if vendor == "sqlite":
            _restore_sqlite(snapshot, manifest)
        else:
            _restore_postgres(snapshot, work)
        if storage.is_local():
            previous: Path | str | None = _swap_media(work / "media", media_root)
        else:
            previous = storage.media_replace(work / "media")
    problems = compare_stats(manifest["stats"], collect_stats())
    if problems:
        raise Refused(
            "the restored database does not match the backup's manifest:\n  " + "\n  ".join(problems)
        )
    outcome = RestoreOutcome(
        path=archive, manifest=manifest, media_files=manifest["media"]["files"], previous_media=previous
    )
    if migrate:
        outcome.migrated = _migrate_to_head()
    audit(
        "restore",
        actor=_actor(),
        path=str(archive),
        vendor=vendor,
        forced=force,
        migrated=outcome.migrated,
        signature=manifest["signature"],
    )
    return outcome


def _migrate_to_head() -> list[str]:
    from django.core.management import call_command

    before = {(a, n) for a, names in applied_migrations().items() for n in names}
    call_command("migrate", interactive=False, verbosity=0)
    after = {(a, n) for a, names in applied_migrations().items() for n in names}
    return [f"{a}.{n}" for a, n in sorted(after - before)]
