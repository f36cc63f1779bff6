"""Structured logging: one line per record, as JSON or key=value, for the app, audit and Celery.

`LOG_FORMAT` (settings / environment) chooses the formatter:

- `json`: `{"ts": "...", "level": "INFO", "logger": "billing.services", "msg": "...", ...}`
- `kv`: `ts=... level=INFO logger=billing.services msg="..." key=value` (Splunk-style)
- `plain`: the human format of development (`2025-01-31 12:00:00 INFO name message`)

Fields passed with `extra={...}` are added to the line (`logger.info("imported", extra={"import_id": 7})`),
and so are the id and name of the Celery task that is running, if any. Exceptions are
rendered as one field (`exc`) so that a record is always one line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

LOG_FORMATS = ("json", "kv", "plain")
AUDIT_LOGGER = "openchargeback.audit"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
)


def _current_task() -> tuple[str, str] | None:
    """(task id, task name) of the Celery task running in this thread, without importing Celery."""
    state = sys.modules.get("celery._state")
    if state is None:
        return None
    task = state.get_current_task()
    if task is None or task.request is None or not getattr(task.request, "id", None):
        return None
    return task.request.id, task.name


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


class StructuredFormatter(logging.Formatter):
    """Collects the fields of a record; subclasses render them."""

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        ts = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        task = _current_task()
        if task:
            out["task_id"], out["task_name"] = task
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return out


class JSONFormatter(StructuredFormatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({k: _jsonable(v) for k, v in self.fields(record).items()}, ensure_ascii=False)


def _kv_value(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        text = json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))
    else:
        text = "" if value is None else str(_jsonable(value))
    if text and not any(c in text for c in ' "=\\\n\r\t'):
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


class KeyValueFormatter(StructuredFormatter):
    """`key=value` pairs on one line; values with spaces, quotes or `=` are double-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_kv_value(value)}" for key, value in self.fields(record).items())


def build_logging(
    log_format: str = "plain", level: str = "WARNING", audit_level: str = "INFO", log_file: str = ""
) -> dict[str, Any]:
    """The LOGGING dict of settings.py: one console handler with the chosen formatter, and with
    `log_file` (logging.file of config.yaml) the same lines in that file too.

    The root logger takes `level`; the audit logger and Celery's worker/beat loggers log at
    `audit_level`/INFO so that those events are kept whatever the root level is.
    """
    log_format = (log_format or "plain").lower()
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    level = level.upper()
    operational = "INFO" if logging.getLevelName(level) == logging.WARNING else level
    handlers: dict[str, Any] = {"console": {"class": "logging.StreamHandler", "formatter": log_format}}
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        # WatchedFileHandler: logrotate may move the file away; the next line opens a new one.
        handlers["file"] = {
            "class": "logging.handlers.WatchedFileHandler",
            "filename": str(log_file),
            "formatter": log_format,
            "encoding": "utf-8",
        }
    names = list(handlers)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
            "json": {"()": "chargeback.logging.JSONFormatter"},
            "kv": {"()": "chargeback.logging.KeyValueFormatter"},
        },
        "handlers": handlers,
        "root": {"handlers": names, "level": level},
        "loggers": {
            AUDIT_LOGGER: {"level": audit_level.upper()},
            "celery.worker": {"level": operational},
            "celery.beat": {"level": operational},
            "celery.app.trace": {"level": operational},
            "gunicorn.error": {"level": operational, "handlers": names, "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": names, "propagate": False},
        },
    }


def audit(event: str, **fields: Any) -> None:
    """Log an audit event (`event=... actor=...`) on the audit logger, structured like every record."""
    logging.getLogger(AUDIT_LOGGER).info(event, extra={"event": event, **fields})
