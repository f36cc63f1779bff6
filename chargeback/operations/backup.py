"""Backup and restore of a whole installation: database + media, one archive, verified.

An archive (`.tar.gz`) holds:

- `database/openchargeback.sqlite3` (SQLite online backup API) or
  `database/openchargeback.pgdump` (`pg_dump --format=custom`): a consistent snapshot;
- `media/...`: every stored file (stored imports, statement PDFs, journals), from MEDIA_ROOT or
  from object storage (chargeback/storage.py);
- `manifest.json`: format, app version, database vendor, the applied migrations,
  the sha256 and size of every other member, and figures taken *from the snapshot itself*:
  row counts per table, the exact sum of every money column, and per period the charges and
  billed totals by review state and by source;
- `manifest.sig`, last: an HMAC of the manifest with the installation's backup key
  (chargeback/backup_signing.py), so a member changed and re-hashed into the manifest is caught.

Restore works on an installation without data (a fresh `migrate` is fine); it refuses one
that has data unless forced. Before anything is written it checks every checksum, that the
archive is complete, that the database vendor matches, and that this version knows every
migration of the backup (a backup of a newer version is refused), and that the signature verifies
(unless `--unsigned`). Every path the manifest names must be a regular member of the archive
itself; the database member is the one name this format uses for its vendor. The database is replaced
in one transaction (SQLite backup API; PostgreSQL: one `psql --single-transaction`), the
media are staged beside MEDIA_ROOT and moved in afterwards, and the restored figures are
compared with the manifest. Then pending migrations of this version are applied.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import io
import json
import logging
import os
import sqlite3
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import Count

from chargeback import commands, storage, system_status
from chargeback.errors import Refused
from chargeback.hashing import HashingReader
from chargeback.logging import audit
from chargeback.money import MoneyField, MoneyTotal
from chargeback.operations import backup_signing

logger = logging.getLogger("chargeback.backup")  # the name the logs have always shown

FORMAT = "openchargeback-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database/openchargeback.sqlite3"
POSTGRES_MEMBER = "database/openchargeback.pgdump"
MEDIA_PREFIX = "media/"
# Apps whose rows make an installation "not empty" (BillingSettings is a singleton of defaults).
DATA_APPS = ("accounts", "billing", "statements", "journals", "auditlog")
NOT_DATA_MODELS = {"billing.billingsettings"}
CHUNK = 1024 * 1024


# --- figures ------------------------------------------------------------------------------


def app_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openchargeback")
    except PackageNotFoundError:
        return "0+unknown"


def _money(value: Decimal | None) -> str:
    return str(value if value is not None else Decimal("0E-10"))


def _concrete_models() -> list[Any]:
    return [m for m in apps.get_models() if m._meta.managed and not m._meta.proxy]


def collect_stats(using: str = DEFAULT_DB_ALIAS) -> dict[str, Any]:
    """Row counts per table, exact money sums per column, and per-period billing totals.

    Only tables and columns present in that database are read, so the same function describes
    a snapshot made by an older version of the schema.
    """
    connection = connections[using]
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
        columns = {
            table: {c.name for c in connection.introspection.get_table_description(cursor, table)}
            for table in tables
        }
        counts: dict[str, int] = {}
        for model in _concrete_models():
            table = model._meta.db_table
            if table in tables and table not in counts:
                cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")  # noqa: S608
                counts[table] = int(cursor.fetchone()[0])
    money: dict[str, str] = {}
    for model in _concrete_models():
        table = model._meta.db_table
        fields = [
            f
            for f in model._meta.concrete_fields
            if isinstance(f, MoneyField) and f.column in columns.get(table, ())
        ]
        if not fields:
            continue
        # MoneyTotal: a whole table's sum can pass SQLite's 64-bit integer, where SUM() fails.
        sums = model._default_manager.using(using).aggregate(**{f.name: MoneyTotal(f.name) for f in fields})
        for f in fields:
            money[f"{model._meta.label_lower}.{f.name}"] = _money(sums[f.name])
    return {
        "tables": dict(sorted(counts.items())),
        "money": dict(sorted(money.items())),
        "periods": _period_totals(using, columns),
    }


def _period_totals(using: str, columns: dict[str, set[str]]) -> dict[str, Any]:
    from billing.models import BillingPeriod, Charge

    needed = {"period_id", "source_id", "review_state", "list_cost", "billed_cost"}
    if not needed <= columns.get(Charge._meta.db_table, set()) or BillingPeriod._meta.db_table not in columns:
        return {}
    periods: dict[str, Any] = {}
    for p in BillingPeriod.objects.using(using).order_by("period").values("period", "status"):
        periods[p["period"]] = {
            "status": p["status"],
            "charges": 0,
            "list_total": Decimal(0),
            "billed_total": Decimal(0),
            "billed_by_state": {},
            "billed_by_source": {},
        }
    rows = (
        Charge.objects.using(using)
        .values_list("period__period", "review_state", "source__slug")
        .annotate(n=Count("id"), listed=MoneyTotal("list_cost"), billed=MoneyTotal("billed_cost"))
        .order_by()
    )
    for period, state, source, n, listed, billed in rows:
        p = periods[period]
        billed = billed or Decimal(0)
        p["charges"] += n
        p["list_total"] += listed or Decimal(0)
        p["billed_total"] += billed
        p["billed_by_state"][state] = p["billed_by_state"].get(state, Decimal(0)) + billed
        p["billed_by_source"][source] = p["billed_by_source"].get(source, Decimal(0)) + billed
    for p in periods.values():
        p["list_total"], p["billed_total"] = _money(p["list_total"]), _money(p["billed_total"])
        for key in ("billed_by_state", "billed_by_source"):
            p[key] = {k: _money(v) for k, v in sorted(p[key].items())}
    return periods


def applied_migrations(using: str = DEFAULT_DB_ALIAS) -> dict[str, list[str]]:
    recorder = MigrationRecorder(connections[using])
    if not recorder.has_table():
        return {}
    state: dict[str, list[str]] = {}
    for app_label, name in sorted(recorder.applied_migrations()):
        state.setdefault(app_label, []).append(name)
    return state


def compare_stats(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Differences between two `collect_stats` results, as readable lines (empty: identical)."""
    problems = []
    for section in ("tables", "money", "periods"):
        want, got = expected.get(section, {}), actual.get(section, {})
        for key in sorted(set(want) | set(got)):
            if want.get(key) != got.get(key):
                problems.append(f"{section} {key}: expected {want.get(key)!r}, found {got.get(key)!r}")
    return problems


# --- helpers ------------------------------------------------------------------------------


def _actor() -> str:
    from chargeback.actors import actor_label

    return actor_label()


def _vendor() -> str:
    return connections[DEFAULT_DB_ALIAS].vendor


@contextlib.contextmanager
def _sqlite_alias(path: Path) -> Iterator[str]:
    """A temporary Django database alias on an SQLite file (the ORM can read a snapshot)."""
    alias = f"snapshot_{uuid.uuid4().hex[:8]}"
    config = copy.deepcopy(connections.settings[DEFAULT_DB_ALIAS])
    config.update(NAME=str(path), OPTIONS={}, TEST={"NAME": str(path)})
    connections.settings[alias] = config
    try:
        yield alias
    finally:
        with contextlib.suppress(Exception):
            connections[alias].close()
        with contextlib.suppress(Exception):
            del connections[alias]
        connections.settings.pop(alias, None)


def _pg_command(
    executable: str, parameters: list[str], dbname: bool = True
) -> tuple[list[str], dict[str, str]]:
    from django.db.backends.postgresql.client import DatabaseClient

    settings_dict = connections[DEFAULT_DB_ALIAS].settings_dict
    args, env = DatabaseClient.settings_to_cmd_args_env(settings_dict, parameters)
    if not dbname and args[-1] == (settings_dict.get("NAME") or "postgres"):
        args = args[:-1]
    return [executable, *args[1:]], {**os.environ, **(env or {})}


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    try:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise Refused(f"{what}: {cmd[0]} is not installed (install the PostgreSQL client tools)") from None
    if result.returncode != 0:
        raise Refused(f"{what} failed: {result.stderr.strip() or result.stdout.strip()}")


# --- backup -------------------------------------------------------------------------------


@dataclass
class BackupOutcome:
    path: Path
    size_bytes: int
    manifest: dict[str, Any]
    key: backup_signing.BackupKey | None = None  # the signing key (key.created: made by this backup)


def default_archive_name(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"openchargeback-{now:%Y%m%d-%H%M%S}.tar.gz"


def _sqlite_functions(conn: sqlite3.Connection) -> None:
    from django.db.backends.sqlite3._functions import register

    register(conn)


def _snapshot_sqlite(dest: Path) -> tuple[dict[str, Any], dict[str, list[str]]]:
    connection = connections[DEFAULT_DB_ALIAS]
    connection.ensure_connection()
    target = sqlite3.connect(dest)
    _sqlite_functions(target)  # CHECK constraints use Django's REGEXP
    try:
        connection.connection.backup(target)  # online backup: a consistent copy while others write
        target.execute("PRAGMA journal_mode=DELETE")
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        target.close()
    if check != "ok":
        raise Refused(f"the database snapshot fails SQLite's integrity check: {check}")
    with _sqlite_alias(dest) as alias:
        return collect_stats(alias), applied_migrations(alias)


def _snapshot_postgres(dest: Path) -> tuple[dict[str, Any], dict[str, list[str]]]:
    connection = connections[DEFAULT_DB_ALIAS]
    connection.ensure_connection()
    # pg_dump reads the snapshot this transaction exports, and the figures come from it too.
    with transaction.atomic(using=DEFAULT_DB_ALIAS):
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
        cmd, env = _pg_command(
            "pg_dump",
            ["--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot}", f"--file={dest}"],
        )
        _run(cmd, env, "pg_dump")
        return collect_stats(), applied_migrations()


def _media_files(root: Path) -> list[tuple[Path, str]]:
    if not root.is_dir():
        return []
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            logger.warning("backup: skipping symbolic link %s", path)
            continue
        if path.is_file():
            files.append((path, MEDIA_PREFIX + path.relative_to(root).as_posix()))
    return files


def _add(tar: tarfile.TarFile, path: Path, arcname: str, files: dict[str, Any]) -> None:
    info = tar.gettarinfo(str(path), arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    with path.open("rb") as fh:
        reader = HashingReader(fh)
        tar.addfile(info, reader)  # type: ignore[arg-type]
    files[arcname] = {"sha256": reader.digest.hexdigest(), "size": info.size}


def _add_stored(tar: tarfile.TarFile, name: str, files: dict[str, Any]) -> None:
    """A medium from object storage, streamed into the archive."""
    media = storage.media_storage()
    arcname = MEDIA_PREFIX + name
    info = tarfile.TarInfo(arcname)
    info.size, info.mode = media.size(name), 0o644
    info.mtime = int(media.get_modified_time(name).timestamp())
    with media.open(name, "rb") as fh:
        reader = HashingReader(fh)  # type: ignore[arg-type]
        tar.addfile(info, reader)  # type: ignore[arg-type]
    files[arcname] = {"sha256": reader.digest.hexdigest(), "size": info.size}


def backup_create(*, path: str | Path, overwrite: bool = False) -> BackupOutcome:
    """Write one archive of the database and the media to PATH (a file, or a directory for a dated name)."""
    target = Path(path)
    if target.is_dir():
        target = target / default_archive_name()
    if target.exists() and not overwrite:
        raise Refused(f"{target} already exists (choose another name, or --overwrite)")
    if not target.parent.is_dir():
        raise Refused(f"directory {target.parent} does not exist")
    vendor = _vendor()
    if vendor not in ("sqlite", "postgresql"):
        raise Refused(f"backups support SQLite and PostgreSQL, not {vendor}")
    media_root = Path(settings.MEDIA_ROOT)
    key = backup_signing.backup_key(create=True)
    assert key is not None
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=target.parent) as work:
        member = SQLITE_MEMBER if vendor == "sqlite" else POSTGRES_MEMBER
        snapshot = Path(work) / Path(member).name
        stats, migrations = (_snapshot_sqlite if vendor == "sqlite" else _snapshot_postgres)(snapshot)
        partial = Path(work) / "archive.tar.gz"
        files: dict[str, Any] = {}
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            _add(tar, snapshot, member, files)
            if storage.is_local():
                for file_path, arcname in _media_files(media_root):
                    _add(tar, file_path, arcname, files)
            else:
                for name in storage.media_names():
                    _add_stored(tar, name, files)
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "app_version": app_version(),
                "database": {"vendor": vendor, "member": member},
                "currency": _currency(),
                "migrations": migrations,
                "stats": stats,
                "media": {
                    "files": sum(1 for k in files if k.startswith(MEDIA_PREFIX)),
                    "bytes": sum(v["size"] for k, v in files.items() if k.startswith(MEDIA_PREFIX)),
                },
                "files": files,
            }
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            for name, body in ((MANIFEST, data), (backup_signing.SIGNATURE, backup_signing.sign(data, key))):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(body), int(dt.datetime.now().timestamp()), 0o644
                tar.addfile(info, io.BytesIO(body))
        os.replace(partial, target)
    audit("backup", actor=_actor(), path=str(target), files=len(files), vendor=vendor, key_id=key.key_id)
    size = target.stat().st_size
    system_status.backup_recorded(
        path=target, size_bytes=size, vendor=vendor, files=len(files), created_at=str(manifest["created_at"])
    )
    return BackupOutcome(path=target, size_bytes=target.stat().st_size, manifest=manifest, key=key)


def _currency() -> str:
    """The installation's currency for the manifest (the core's currency source, which billing
    registers); empty when the database cannot say (not migrated)."""
    try:
        return commands.currency_source()
    except DatabaseError:
        return ""


# --- reading an archive ------------------------------------------------------------------


def _safe_member_name(name: str) -> str:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or name.startswith("/"):
        raise Refused(f"unsafe path in archive: {name!r}")
    return pure.as_posix()


def extract_verified(archive: str | Path, into: Path, *, unsigned: bool = False) -> dict[str, Any]:
    """Extract ARCHIVE into a directory, checking the manifest's signature (unless `unsigned`) and
    every member against the manifest. Returns the manifest, with "signature" set to how it was
    checked."""
    archive = Path(archive)
    if not archive.is_file():
        raise Refused(f"backup {archive} not found")
    found: dict[str, dict[str, Any]] = {}
    manifest_bytes: bytes | None = None
    signature: bytes | None = None
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = _safe_member_name(member.name)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise Refused(f"unexpected entry in archive: {name!r} is not a regular file")
                source = tar.extractfile(member)
                assert source is not None
                if name in (MANIFEST, backup_signing.SIGNATURE):
                    if name in found or (manifest_bytes if name == MANIFEST else signature) is not None:
                        raise Refused(f"{archive} holds {name} twice; nothing was restored")
                    body = source.read(50 * 1024 * 1024)
                    if name == MANIFEST:
                        manifest_bytes = body
                    else:
                        signature = body
                    continue
                if name in found:
                    raise Refused(f"{archive} holds {name} twice; nothing was restored")
                dest = into / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                digest, size = hashlib.sha256(), 0
                with dest.open("wb") as out:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                found[name] = {"sha256": digest.hexdigest(), "size": size}
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise Refused(f"cannot read backup {archive}: {exc.__class__.__name__}: {exc}") from None
    if manifest_bytes is None:
        raise Refused(f"{archive} has no {MANIFEST}: not an OpenChargeback backup, or incomplete")
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        raise Refused(f"cannot read backup {archive}: its {MANIFEST} is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise Refused(f"{archive} is not an OpenChargeback backup")
    checked = backup_signing.verify(archive, manifest_bytes, signature, unsigned=unsigned)
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise Refused(
            f"{archive} uses backup format {manifest.get('format_version')}; this version reads {FORMAT_VERSION}"
        )
    expected = manifest.get("files", {})
    if not isinstance(expected, dict) or not all(isinstance(v, dict) for v in expected.values()):
        raise Refused(f"{archive}: the manifest's list of files is malformed; nothing was restored")
    problems = [f"missing from archive: {n}" for n in sorted(set(expected) - set(found))]
    problems += [f"not in manifest: {n}" for n in sorted(set(found) - set(expected))]
    problems += [
        f"checksum mismatch: {n}"
        for n in sorted(set(expected) & set(found))
        if expected[n].get("sha256") != found[n]["sha256"] or expected[n].get("size") != found[n]["size"]
    ]
    if problems:
        raise Refused(f"backup {archive} is damaged; nothing was restored:\n  " + "\n  ".join(problems))
    _check_database_member(archive, manifest, found)
    manifest["signature"] = checked
    return manifest


def _check_database_member(archive: Path, manifest: dict[str, Any], found: dict[str, Any]) -> None:
    """The database the manifest names is this format's member for its vendor, and a regular file
    of the archive itself: never a path outside it (`/tmp/planted.sqlite3`, `../x`)."""
    database = manifest.get("database")
    vendor = database.get("vendor") if isinstance(database, dict) else None
    member = database.get("member") if isinstance(database, dict) else None
    expected = {"sqlite": SQLITE_MEMBER, "postgresql": POSTGRES_MEMBER}.get(str(vendor))
    if expected is None:
        raise Refused(f"{archive}: unknown database vendor {vendor!r} in the manifest; nothing was restored")
    if member != expected or member not in found:
        raise Refused(
            f"{archive}: the manifest names {member!r} as the database, not the archive's own "
            f"{expected}; nothing was restored"
        )


def backup_verify(*, path: str | Path, unsigned: bool = False) -> dict[str, Any]:
    """Check an archive's signature, checksums and completeness without touching the installation."""
    with tempfile.TemporaryDirectory(prefix=".verify-") as work:
        manifest = extract_verified(path, Path(work), unsigned=unsigned)
        member = manifest["database"]["member"]
        if member == SQLITE_MEMBER:
            with _sqlite_alias(Path(work) / member) as alias:
                problems = compare_stats(manifest["stats"], collect_stats(alias))
            if problems:
                raise Refused(
                    "the database in the backup does not match its manifest:\n  " + "\n  ".join(problems)
                )
    return manifest
