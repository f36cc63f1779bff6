"""Production never runs with the public development key: with DEBUG off and no SECRET_KEY (or
.env.example's placeholder), `serve`, `worker`, `beat` and the WSGI application refuse to start
with one line saying how to set it, and `check --deploy` reports it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parents[2]
HOW = "set SECRET_KEY in the environment or the .env file"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENCHARGEBACK_CONFIG", "DATABASE_URL", "SECRET_KEY", "DEBUG", "CELERY_BROKER_URL")
    }
    env.update(
        {
            "OPENCHARGEBACK_DATA_DIR": str(tmp_path / "data"),
            "DJANGO_SETTINGS_MODULE": "chargeback.settings",
            "DEBUG": "false",
            **extra,
        }
    )
    return env


def _run(tmp_path: Path, args: list[str], timeout: int = 60, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=tmp_path, env=_env(tmp_path, **extra), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--bind", "127.0.0.1:0"],
        ["worker"],
        ["beat"],
    ],
)
def test_servers_refuse_the_development_key(tmp_path, command):
    result = _run(
        tmp_path,
        [sys.executable, "-m", "chargeback.cli", *command],
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SECRET_KEY is not set, and DEBUG is off" in result.stderr and HOW in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "SECRET_KEY" in line]) == 1


def test_the_wsgi_application_refuses_the_development_key(tmp_path):
    result = _run(tmp_path, [sys.executable, "-c", "import chargeback.wsgi"])
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("OpenChargeback will not start: SECRET_KEY is not set, and DEBUG is off")
    )
    assert "Traceback" not in result.stderr


def test_gunicorn_loading_the_wsgi_module_stops(tmp_path):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = _run(
        tmp_path, [str(gunicorn), "--bind", "127.0.0.1:0", "--workers", "1", "chargeback.wsgi:application"]
    )
    assert result.returncode != 0
    assert "OpenChargeback will not start: SECRET_KEY is not set" in result.stderr


def test_the_placeholder_of_env_example_is_refused_too(tmp_path):
    result = _run(tmp_path, [sys.executable, "-c", "import chargeback.wsgi"], SECRET_KEY="change-me")
    assert result.returncode != 0 and "SECRET_KEY is the placeholder 'change-me'" in result.stderr


def test_a_real_key_or_debug_starts(tmp_path):
    assert (
        _run(
            tmp_path, [sys.executable, "-c", "import chargeback.wsgi"], SECRET_KEY=secrets.token_urlsafe(50)
        ).returncode
        == 0
    )
    assert _run(tmp_path, [sys.executable, "-c", "import chargeback.wsgi"], DEBUG="true").returncode == 0


def test_check_deploy_reports_the_development_key(tmp_path):
    result = _run(tmp_path, [sys.executable, str(ROOT / "manage.py"), "check", "--deploy"])
    assert result.returncode != 0
    assert "chargeback.E001" in result.stderr + result.stdout


def test_in_process_commands_refuse_too(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = "openchargeback-insecure-development-key-change-me"
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    for command in ("serve", "worker", "beat"):
        with pytest.raises(CommandError, match="SECRET_KEY is not set"):
            call_command(command)
    # The development server stays available for a laptop.
    from chargeback.management.commands import serve

    calls: list = []
    original = serve.call_command
    serve.call_command = lambda *args, **kwargs: calls.append(args)  # type: ignore[assignment]
    try:
        call_command("serve", "--dev")
    finally:
        serve.call_command = original
    assert calls == [("runserver", "127.0.0.1:8000")]


def test_the_installation_key_file_written_by_the_demo_starts_the_server(tmp_path):
    """The quick start (`make demo`, then `serve`) runs with DEBUG off: the demo writes a random key
    to the data folder, readable by its owner only, and settings use it when nothing sets one."""
    from chargeback.secret_key import secret_key_file_ensure, secret_key_from_file

    data = tmp_path / "data"
    key_file = secret_key_file_ensure(data)
    assert key_file == data / "secret_key" and key_file.stat().st_mode & 0o777 == 0o600
    key = secret_key_from_file(data)
    assert key and len(key) >= 50 and key != "openchargeback-insecure-development-key-change-me"
    assert secret_key_file_ensure(data) is None and secret_key_from_file(data) == key  # kept, not replaced

    started = _run(
        tmp_path,
        [
            sys.executable,
            "-c",
            "import chargeback.wsgi; from django.conf import settings; print(settings.SECRET_KEY)",
        ],
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == key
    given = _run(
        tmp_path,
        [
            sys.executable,
            "-c",
            "from django.conf import settings; import django; django.setup(); print(settings.SECRET_KEY)",
        ],
        SECRET_KEY="k" * 60,
    )
    assert given.stdout.strip() == "k" * 60  # the environment wins over the file


def test_the_demo_writes_the_key_file(tmp_path):
    result = _run(tmp_path, [sys.executable, "-m", "chargeback.cli", "demo"], timeout=300)
    assert result.returncode == 0, result.stderr
    assert (
        f"A secret key for this installation was written to {tmp_path / 'data' / 'secret_key'}"
        in result.stdout
    )
    served = _run(tmp_path, [sys.executable, "-c", "import chargeback.wsgi"])
    assert served.returncode == 0, served.stderr
