"""Structured logging: JSON and key=value lines, settings wiring, audit and Celery fields."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from decimal import Decimal

import pytest

from chargeback.logging import (
    AUDIT_LOGGER,
    JSONFormatter,
    KeyValueFormatter,
    audit,
    build_logging,
)


def _record(msg: str = "imported %s rows", args: tuple = (12,), **extra) -> logging.LogRecord:
    record = logging.LogRecord("billing.services", logging.INFO, __file__, 10, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_has_the_fields_and_extras():
    line = JSONFormatter().format(_record(import_id=7, billed=Decimal("12.3400000000"), periods=["2025-01"]))
    doc = json.loads(line)
    assert doc["level"] == "INFO"
    assert doc["logger"] == "billing.services"
    assert doc["msg"] == "imported 12 rows"
    assert doc["ts"].endswith("Z")
    assert doc["import_id"] == 7
    assert doc["billed"] == "12.3400000000"  # money stays exact: a string, never a float
    assert doc["periods"] == ["2025-01"]
    assert "\n" not in line


def test_exceptions_stay_on_one_line():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    json_line = JSONFormatter().format(record)
    assert "\n" not in json_line
    assert "ValueError" in json.loads(json_line)["exc"]
    kv_line = KeyValueFormatter().format(record)
    assert "\n" not in kv_line
    assert "exc=" in kv_line and "ValueError" in kv_line


def test_key_value_quoting():
    line = KeyValueFormatter().format(_record("said %s", ('he said "hi" a=b',), user="ann", note="two words"))
    assert "level=INFO" in line
    assert "logger=billing.services" in line
    assert 'msg="said he said \\"hi\\" a=b"' in line
    assert "user=ann" in line
    assert 'note="two words"' in line


def test_build_logging_chooses_the_formatter():
    for fmt in ("json", "kv", "plain"):
        config = build_logging(fmt, "warning")
        assert config["handlers"]["console"]["formatter"] == fmt
        assert config["root"]["level"] == "WARNING"
        # Audit and Celery events are kept whatever the root level is.
        assert config["loggers"][AUDIT_LOGGER]["level"] == "INFO"
        assert config["loggers"]["celery.worker"]["level"] == "INFO"
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        build_logging("xml")


def test_settings_use_log_format(settings):
    assert settings.LOGGING["handlers"]["console"]["formatter"] in ("json", "kv", "plain")
    assert settings.CELERY_WORKER_HIJACK_ROOT_LOGGER is False


def _run_with_env(code: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    import os

    environment = {k: v for k, v in os.environ.items() if k != "OPENCHARGEBACK_CONFIG"}
    environment.update(
        OPENCHARGEBACK_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="chargeback.settings"
    )
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )


def test_log_format_json_from_the_environment(tmp_path):
    code = (
        "import django, logging; django.setup(); "
        "from chargeback.logging import audit; "
        "logging.getLogger('billing.services').warning('hello %s', 'world', extra={'import_id': 3}); "
        "audit('period_closed', actor='ann', period='2025-01')"
    )
    result = _run_with_env(code, tmp_path, LOG_FORMAT="json", LOG_LEVEL="WARNING")
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {
        "level": "WARNING",
        "logger": "billing.services",
        "msg": "hello world",
        "import_id": 3,
    }.items() <= lines[0].items()
    # The audit event is logged although the root level is WARNING.
    assert lines[1]["logger"] == AUDIT_LOGGER
    assert lines[1]["event"] == "period_closed"
    assert lines[1]["actor"] == "ann"


def test_log_format_kv_from_the_environment(tmp_path):
    code = "import django, logging; django.setup(); logging.getLogger('x').error('boom', extra={'n': 1})"
    result = _run_with_env(code, tmp_path, LOG_FORMAT="kv")
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("ts=")
    assert "level=ERROR logger=x msg=boom n=1" in line


def test_celery_task_fields(settings):
    from chargeback.celery import app

    seen: list[dict] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(json.loads(JSONFormatter().format(record)))

    @app.task(name="tests.log_something")
    def log_something() -> None:
        logging.getLogger("tests.task").warning("inside")

    handler = Capture()
    logging.getLogger("tests.task").addHandler(handler)
    try:
        log_something.apply()
    finally:
        logging.getLogger("tests.task").removeHandler(handler)
    assert seen[0]["task_name"] == "tests.log_something"
    assert seen[0]["task_id"]


def test_audit_helper(caplog):
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        audit("backup", actor="cli:root", path="/tmp/x.tar.gz")
    record = caplog.records[-1]
    assert record.name == AUDIT_LOGGER
    assert record.event == "backup"  # type: ignore[attr-defined]
    assert record.actor == "cli:root"  # type: ignore[attr-defined]
