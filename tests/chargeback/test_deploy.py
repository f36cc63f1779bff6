"""Deployment: docker-compose.yml, Dockerfile and .env.example against the settings the code reads;
`openchargeback serve`, `worker` and `beat`; the periodic reminder of open periods."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from django.core import mail
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
APP_SERVICES = ("web", "worker", "beat")
_ENV_CALL = re.compile(
    r"""\benv\.(?:str|bool|int|float|list|tuple|dict|json|url|db|db_url|email_url|cache_url|path)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
)
_OS_ENVIRON = re.compile(r"""(?:os\.)?environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']""")
_INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")


def settings_env_names() -> set[str]:
    """Every environment variable settings.py reads (env.str("X"), env.db("X"), os.environ.get("X"), ...)."""
    text = (ROOT / "chargeback" / "settings.py").read_text()
    return set(_ENV_CALL.findall(text)) | set(_OS_ENVIRON.findall(text))


def code_env_names() -> set[str]:
    """Variables read by the project's own code outside settings.py (e.g. WEB_CONCURRENCY by `serve`)."""
    names: set[str] = set()
    for path in (ROOT / "chargeback").rglob("*.py"):
        names |= set(_OS_ENVIRON.findall(path.read_text()))
    return names


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _command(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


def test_settings_env_names_are_found():
    names = settings_env_names()
    for expected in (
        "DATABASE_URL",
        "SECRET_KEY",
        "CELERY_BROKER_URL",
        "EMAIL_URL",
        "LOG_FORMAT",
        "LOG_LEVEL",
    ):
        assert expected in names


def test_compose_services(compose):
    assert set(compose["services"]) == {"web", "worker", "beat", "postgres", "redis"}
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_compose_commands_are_openchargeback_commands(compose):
    commands = get_commands()
    expected = {"web": "serve", "worker": "worker", "beat": "beat"}
    for name in APP_SERVICES:
        argv = _command(compose["services"][name])
        assert argv[0] == "openchargeback", name
        assert argv[1] == expected[name], name
        assert argv[1] in commands, f"{argv[1]} is not a command"
    web = _command(compose["services"]["web"])
    assert "--migrate" in web  # the web service runs migrations on start
    assert "0.0.0.0:8000" in web


def test_compose_app_services_share_image_env_file_and_data(compose):
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["build"] == "."
        assert service["image"] == "openchargeback:latest"
        assert service["env_file"] == ".env"
        assert "appdata:/data" in service["volumes"]
        assert service["environment"]["OPENCHARGEBACK_DATA_DIR"] == "/data"
    # Web waits for healthy PostgreSQL and Redis; worker and beat for a migrated web.
    assert compose["services"]["web"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    for name in ("worker", "beat"):
        assert compose["services"][name]["depends_on"]["web"]["condition"] == "service_healthy"


def test_compose_named_volumes(compose):
    assert set(compose["volumes"]) == {"appdata", "pgdata", "redisdata"}
    assert "pgdata:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    assert "redisdata:/data" in compose["services"]["redis"]["volumes"]
    used = {v.split(":", 1)[0] for s in compose["services"].values() for v in s.get("volumes", [])}
    assert used == set(compose["volumes"])


def test_compose_health_checks(compose):
    services = compose["services"]
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "ping" in " ".join(services["redis"]["healthcheck"]["test"])
    assert "inspect ping" in " ".join(services["worker"]["healthcheck"]["test"])


def test_compose_environment_names_are_read_by_the_settings(compose):
    readable = settings_env_names() | code_env_names()
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        unknown = set(env) - readable
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"


def test_compose_urls_point_at_the_services(compose):
    env = compose["services"]["web"]["environment"]
    postgres = compose["services"]["postgres"]["environment"]
    assert env["DATABASE_URL"].startswith(f"postgres://{postgres['POSTGRES_USER']}:")
    assert env["DATABASE_URL"].endswith(f"@postgres:5432/{postgres['POSTGRES_DB']}")
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379/")
    # The password comes from .env and is required.
    assert "${POSTGRES_PASSWORD:?" in env["DATABASE_URL"]
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_env_example_names_are_read(compose):
    interpolated = set(_INTERPOLATION.findall(COMPOSE.read_text()))
    readable = settings_env_names() | code_env_names() | interpolated
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"} <= names
    assert not names - readable, f".env.example names nothing reads: {sorted(names - readable)}"


def test_postgres_client_matches_the_server(compose):
    server_major = re.match(r"postgres:(\d+)", compose["services"]["postgres"]["image"]).group(1)
    client = re.search(r"postgresql-client-(\d+)", DOCKERFILE.read_text())
    assert client and client.group(1) == server_major  # pg_dump must not be older than the server


def test_dockerfile():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert re.search(r"^EXPOSE 8000", text, re.M)
    assert "collectstatic" in text
    assert "STATIC_ROOT=" in text and "OPENCHARGEBACK_DATA_DIR=/data" in text
    assert 'CMD ["openchargeback", "serve"' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".env", "instance"):
        assert entry in ignored


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config(tmp_path):
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose plugin not installed")
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    result = subprocess.run(
        ["docker", "compose", "-f", "docker-compose.yml", "config", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


# --- serve / worker / beat ----------------------------------------------------------------


def test_serve_runs_gunicorn_with_structured_logs(monkeypatch, settings):
    from chargeback.management.commands import serve

    settings.SECRET_KEY = "a production key, not the development one"
    captured = {}
    monkeypatch.setattr(serve, "run_gunicorn", lambda options: captured.update(options))
    call_command("serve", "--workers", "3")
    assert captured["bind"] == ["127.0.0.1:8000"]
    assert captured["workers"] == 3
    assert captured["logconfig_dict"] == settings.LOGGING
    assert captured["accesslog"] == "-"
    captured.clear()
    call_command("serve", "--bind", "0.0.0.0:9000", "--bind", "unix:/tmp/oc.sock")
    assert captured["bind"] == ["0.0.0.0:9000", "unix:/tmp/oc.sock"]
    assert captured["workers"] >= 2


def test_serve_takes_the_original_options(monkeypatch, settings):
    """`serve --host/-h --port/-p --reload`, defaults from web.host/web.port of config.yaml."""
    from chargeback.management.commands import serve

    settings.SECRET_KEY = "a-real-key-for-this-test-" + "x" * 40  # serve refuses the public one
    captured: dict = {}
    monkeypatch.setattr(serve, "run_gunicorn", lambda options: captured.update(options))
    out = io.StringIO()
    call_command("serve", "-h", "0.0.0.0", "-p", "9100", "--reload", stdout=out)
    assert captured["bind"] == ["0.0.0.0:9100"] and captured["reload"] is True
    assert out.getvalue() == "OpenChargeback at http://0.0.0.0:9100/admin/ (the PI portal at /portal/)\n"
    captured.clear()
    settings.OPENCHARGEBACK_WEB_HOST, settings.OPENCHARGEBACK_WEB_PORT = "10.0.0.5", 8800
    call_command("serve", "--port", "8801", stdout=io.StringIO())
    assert captured["bind"] == ["10.0.0.5:8801"] and "reload" not in captured
    settings.OPENCHARGEBACK_WEB_ENABLED = False
    with pytest.raises(CommandError, match=r"web interface is switched off \(web.enabled: false"):
        call_command("serve", stdout=io.StringIO())


def test_serve_workers_from_web_concurrency(monkeypatch):
    from chargeback.management.commands import serve

    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    assert serve.default_workers() == 5


def test_serve_dev_and_migrate(monkeypatch):
    from chargeback.management.commands import serve

    calls = []
    monkeypatch.setattr(serve, "call_command", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr(serve, "run_gunicorn", lambda options: calls.append(("gunicorn",)))
    call_command("serve", "--dev", "--migrate", "--bind", "127.0.0.1:8111")
    assert calls == [("migrate",), ("runserver", "127.0.0.1:8111")]


def test_worker_needs_a_broker(settings):
    settings.CELERY_BROKER_URL = ""
    with pytest.raises(CommandError, match="CELERY_BROKER_URL"):
        call_command("worker")
    with pytest.raises(CommandError, match="CELERY_BROKER_URL"):
        call_command("beat")


def test_worker_and_beat_arguments(monkeypatch, settings):
    from chargeback.management.commands import beat, worker

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    settings.SECRET_KEY = "a production key, not the development one"
    runs: list[list[str]] = []
    monkeypatch.setattr(worker, "run_celery", runs.append)
    monkeypatch.setattr(beat, "run_celery", runs.append)
    call_command("worker")
    call_command("worker", "--beat", "--concurrency", "4", "--queues", "pdf,email")
    call_command("beat")
    schedule = str(settings.DATA_DIR / "celerybeat-schedule")
    assert runs[0][:3] == ["worker", "--concurrency=2", "--loglevel=INFO"]
    assert "--beat" not in runs[0]
    assert "--concurrency=4" in runs[1] and "--queues=pdf,email" in runs[1]
    assert "--beat" in runs[1] and f"--schedule={schedule}" in runs[1]
    assert runs[2] == ["beat", "--loglevel=INFO", f"--schedule={schedule}"]


def test_beat_schedule_names_registered_tasks(settings):
    from chargeback.celery import app

    app.loader.import_default_modules()
    assert settings.CELERY_BEAT_SCHEDULE
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_starts_gunicorn_for_real(tmp_path):
    """`openchargeback serve` on a fresh SQLite installation answers /healthz and the admin login."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCHARGEBACK_CONFIG", "CELERY_BROKER_URL")}
    env.update(
        OPENCHARGEBACK_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'data' / 'oc.sqlite3'}",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        SECRET_KEY="a production key, not the development one",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chargeback.cli",
            "serve",
            "--migrate",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    body = response.read()
                    break
            except OSError:
                time.sleep(0.3)
        assert body == b'{"status": "ok"}', (
            process.stderr.read() if process.poll() is not None else "no answer"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=5) as response:
            assert response.status == 200
            page = response.read().decode()
        # Styled from the first start, DEBUG off, collectstatic never run: the admin's CSS is served.
        css = re.findall(r'href="(/static/[^"]+\.css)"', page)
        assert "/static/admin/css/base.css" in css and not list((tmp_path / "data" / "static").iterdir())
        for href in css:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{href}", timeout=5) as response:
                assert response.status == 200 and response.headers["Content-Type"].startswith("text/css")
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    access = [line for line in stderr.splitlines() if '"logger": "gunicorn.access"' in line]
    assert access, stderr[-2000:]  # access log lines are JSON, like every other record


# --- the periodic reminder ----------------------------------------------------------------


@pytest.mark.django_db
def test_remind_open_periods(settings):
    from django.contrib.auth.models import Permission

    from billing.models import BillingPeriod
    from chargeback.operations.reminders import remind_open_periods
    from tests.factories import UserFactory

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    BillingPeriod.objects.create(period="2025-01", status="open")
    BillingPeriod.objects.create(period="2025-02", status="closed")
    BillingPeriod.objects.create(period="2025-03", status="open")  # the current month: not yet due
    UserFactory(username="root", email="root@university.example", is_superuser=True, is_staff=True)
    admin = UserFactory(username="billing", email="billing@university.example", is_staff=True)
    admin.user_permissions.add(Permission.objects.get(codename="change_billingperiod"))
    UserFactory(username="viewer", email="viewer@university.example", is_staff=True)

    result = remind_open_periods.apply(kwargs={"today": "2025-03-03"}).get()
    assert result == {"periods": ["2025-01"], "recipients": 2}
    assert len(mail.outbox) == 1
    assert sorted(mail.outbox[0].to) == ["billing@university.example", "root@university.example"]
    assert "2025-01" in mail.outbox[0].body and "2025-03" not in mail.outbox[0].body

    mail.outbox.clear()
    BillingPeriod.objects.filter(period="2025-01").update(status="closed")
    assert remind_open_periods.apply(kwargs={"today": "2025-03-03"}).get() == {"periods": [], "recipients": 0}
    assert not mail.outbox
