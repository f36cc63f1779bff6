"""What the system page shows a billing admin: version, database, broker and workers, disk use of
the data folder, last backup. Reads only; each check is short and never raises (a failing check
says what failed instead)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

# The backup command records its last archive here (in the data folder, so that a restore, which
# replaces the database, does not forget it).
BACKUP_RECORD = "last-backup.json"
WORKER_PING_SECONDS = 1.0


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable / unknown
    value: str
    detail: str = ""


@dataclass
class SystemStatus:
    version: str
    checks: list[Check] = field(default_factory=list)
    backup: dict[str, Any] | None = None


def app_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openchargeback")
    except PackageNotFoundError:
        return "0+unknown"


def database_check() -> Check:
    vendor = connection.vendor
    try:
        connection.ensure_connection()
        version = ".".join(str(part) for part in connection.get_database_version())
    except Exception as exc:
        return Check("Database", False, vendor, f"not reachable: {type(exc).__name__}")
    where = settings.DATABASES["default"].get("NAME", "")
    detail = (
        str(where) if vendor == "sqlite" else f"{settings.DATABASES['default'].get('HOST') or 'local socket'}"
    )
    return Check("Database", True, f"{connection.display_name} {version}", detail)


def broker_and_workers() -> list[Check]:
    """The broker answers, and how many workers answer a ping within WORKER_PING_SECONDS."""
    url = getattr(settings, "CELERY_BROKER_URL", "")
    if not url or getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
        return [
            Check(
                "Tasks",
                None,
                "run in-process",
                "no broker configured: imports, PDFs and emails run in the web request or CLI",
            )
        ]
    from chargeback.health import broker_ok

    if not broker_ok():
        return [Check("Broker", False, _redacted(url), "not reachable")]
    checks = [Check("Broker", True, _redacted(url))]
    try:
        from chargeback.celery import app

        replies = app.control.inspect(timeout=WORKER_PING_SECONDS).ping() or {}
    except Exception as exc:
        checks.append(Check("Workers", False, "unknown", f"ping failed: {type(exc).__name__}"))
        return checks
    names = sorted(replies)
    checks.append(
        Check(
            "Workers",
            bool(names),
            f"{len(names)} answering" if names else "none answering",
            ", ".join(names) if names else "queued tasks wait until a worker starts (openchargeback worker)",
        )
    )
    return checks


def _redacted(url: str) -> str:
    """A broker URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def disk_check() -> Check:
    data_dir = Path(settings.DATA_DIR)
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        return Check("Disk", False, str(data_dir), f"cannot read: {exc}")
    free_share = usage.free / usage.total if usage.total else 0
    used, capped = _folder_bytes(data_dir)
    return Check(
        "Disk",
        free_share > 0.1,
        f"{_size(usage.free)} free of {_size(usage.total)} ({free_share:.0%})",
        f"data folder {data_dir}; used by it: {'more than ' if capped else ''}{_size(used)}",
    )


def _folder_bytes(folder: Path, limit: int = 50_000) -> tuple[int, bool]:
    """Bytes in the folder, and whether counting stopped after `limit` files (the page stays fast)."""
    total = files = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            files += 1
            if files > limit:
                return total, True
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total, False


def _size(value: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TB"


# --- backups ----------------------------------------------------------------------------------


def backup_record_path() -> Path:
    return Path(settings.DATA_DIR) / BACKUP_RECORD


def backup_recorded(*, path: Path, size_bytes: int, vendor: str, files: int, created_at: str) -> None:
    """Remember the last backup (written beside, then renamed: never half a record)."""
    record = {
        "path": str(path),
        "size_bytes": size_bytes,
        "vendor": vendor,
        "files": files,
        "created_at": created_at,
    }
    target = backup_record_path()
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(json.dumps(record, indent=2))
    partial.replace(target)


def last_backup() -> dict[str, Any] | None:
    try:
        record = json.loads(backup_record_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    try:
        created = dt.datetime.fromisoformat(str(record.get("created_at", "")).replace("Z", "+00:00"))
        record["created"] = created
        record["age_days"] = (dt.datetime.now(dt.UTC) - created).days
    except ValueError:
        record["created"] = None
    record["size"] = _size(float(record.get("size_bytes") or 0))
    return record


def system_status() -> SystemStatus:
    status = SystemStatus(version=app_version())
    status.checks = [database_check(), *broker_and_workers(), disk_check()]
    status.backup = last_backup()
    return status
