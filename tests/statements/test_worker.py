"""End to end on a real Redis broker with real Celery workers: `generate --send` in a subprocess,
the worker SIGKILLed halfway and restarted, and still every PI gets exactly one email.

Runs when OPENCHARGEBACK_TEST_REDIS_URL names a Redis database the test may flush (CI sets
redis://127.0.0.1:6379/15). Worker, CLI and test share a SQLite file database and a media folder
under tmp_path (pytest-django's in-memory test database is invisible to other processes); emails go
to an aiosmtpd server in this process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REFERENCE_DIR, REFERENCE_SOURCES, ROOT, make_synthetic

from .conftest import start_smtp_server

REDIS_URL = os.environ.get("OPENCHARGEBACK_TEST_REDIS_URL", "")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not REDIS_URL,
        reason="needs a real Redis broker: set OPENCHARGEBACK_TEST_REDIS_URL=redis://127.0.0.1:6379/15 "
        "(CI does) to run the Celery worker kill/restart test",
    ),
]

SETUP = """
import sys
from pathlib import Path
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from billing import services
for slug in sys.argv[2].split(","):
    services.source_create(slug=slug)
for path in sorted(Path(sys.argv[1]).glob("*.csv")):
    services.import_file(path=path, source=path.name.rsplit("_", 1)[0], period="2025-01")
services.import_file(path=sys.argv[3], source="gcp", period="2025-01")
"""


class Stack:
    """The processes of the test, and the shared database read directly with sqlite3."""

    def __init__(self, tmp_path: Path, smtp_port: int) -> None:
        self.tmp = tmp_path
        self.db = tmp_path / "shared.sqlite3"
        self.queue = f"ocb-test-{uuid.uuid4().hex[:8]}"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("OPENCHARGEBACK_CONFIG", "DATABASE_URL", "EMAIL_URL", "CELERY_BROKER_URL")
        }
        self.env.update(
            {
                "DJANGO_SETTINGS_MODULE": "chargeback.settings",
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": f"sqlite:///{self.db}",
                "OPENCHARGEBACK_DATA_DIR": str(tmp_path / "data"),
                "MEDIA_ROOT": str(tmp_path / "media"),
                "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
                "CELERY_BROKER_URL": REDIS_URL,
                "CELERY_RESULT_BACKEND": REDIS_URL,
                "CELERY_TASK_DEFAULT_QUEUE": self.queue,
                # A killed worker's unacknowledged tasks come back after 5 s.
                "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(
                    {"visibility_timeout": 5, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}
                ),
                "LOG_LEVEL": "WARNING",
                # Redis loses a message a worker popped but had not recorded when it was killed: the
                # waiting CLI queues unfinished work again after this long without progress.
                "OPENCHARGEBACK_REDISPATCH_SECONDS": "8",
            }
        )
        self.workers: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_worker(self) -> subprocess.Popen:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        self.logs.append(log)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "chargeback",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                f"--queues={self.queue}",
                f"--hostname={self.queue}-{len(self.workers)}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=WARNING",
            ],
            env=self.env,
            cwd=self.tmp,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL takes the pool children too
        )
        self.workers.append(worker)
        return worker

    def kill(self, worker: subprocess.Popen) -> None:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

    def stop_all(self) -> None:
        for worker in self.workers:
            try:
                if worker.poll() is None:
                    os.killpg(worker.pid, signal.SIGTERM)
                    worker.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                if worker.poll() is None:
                    os.killpg(worker.pid, signal.SIGKILL)

    def query(self, sql: str) -> list[tuple]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute(sql).fetchall()

    def diagnose(self) -> str:
        """Delivery states, statements without PDF and the worker logs, for a failure message."""
        states = self.query(
            "SELECT state, attempts, COUNT(*) FROM statements_delivery GROUP BY state, attempts"
        )
        missing = self.query("SELECT number, version, render_error FROM statements_statement WHERE pdf = ''")
        logs = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs if log.exists())
        return f"deliveries: {states}\nwithout PDF: {missing[:20]}\n{logs}"


@pytest.fixture
def smtp():
    server, controller = start_smtp_server()
    yield server
    controller.stop()  # type: ignore[attr-defined]


@pytest.fixture
def stack(tmp_path, smtp):
    import redis

    stack = Stack(tmp_path, smtp.port)
    yield stack
    stack.stop_all()
    # The test's Redis database: drop what this run left (queues, unacked, chord counters, results).
    redis.Redis.from_url(REDIS_URL).flushdb()


def test_worker_killed_halfway_and_restarted_sends_every_email_once(stack, smtp, tmp_path):
    synthetic, _manifest = make_synthetic(
        tmp_path, "gcp_2025-01.csv", rows=3000, pis=120, provider="gcp", seed=7, grain="monthly"
    )
    setup = stack.run("-c", SETUP, str(REFERENCE_DIR), ",".join([*REFERENCE_SOURCES, "gcp"]), str(synthetic))
    assert setup.returncode == 0, setup.stderr[-3000:]

    stack.start_worker()
    cli_out, cli_err = tmp_path / "generate.out", tmp_path / "generate.err"
    generate = subprocess.Popen(
        [sys.executable, "-m", "chargeback.cli", "generate", "-p", "2025-01", "--send", "--format", "json"],
        env=stack.env,
        cwd=tmp_path,
        stdout=cli_out.open("w"),
        stderr=cli_err.open("w"),
    )
    try:
        # Wait until half of the PDFs exist, then kill the worker (and its pool).
        deadline = time.monotonic() + 240
        total = rendered = 0
        while time.monotonic() < deadline and generate.poll() is None:
            try:
                total = stack.query("SELECT COUNT(*) FROM statements_statement")[0][0]
                rendered = stack.query("SELECT COUNT(*) FROM statements_statement WHERE pdf != ''")[0][0]
            except sqlite3.OperationalError:  # tables not there yet
                total = rendered = 0
            if total and rendered >= max(5, total // 2):
                break
            time.sleep(0.02)
        assert total > 100, f"expected a few hundred statements, got {total}"
        assert generate.poll() is None and rendered < total, (
            "generation finished before the worker was killed"
        )
        stack.kill(stack.workers[0])
        at_kill = stack.query("SELECT COUNT(*) FROM statements_statement WHERE pdf != ''")[0][0]
        claimed_at_kill = stack.query("SELECT COUNT(*) FROM statements_delivery WHERE state != 'queued'")[0][
            0
        ]
        assert at_kill < total
        # Emails wait behind the queued renders (lowest priority): none had started.
        assert claimed_at_kill == 0 and smtp.messages == []

        time.sleep(1)
        stack.start_worker()
        deadline = time.monotonic() + 300
        while generate.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        if generate.poll() is None:
            pytest.fail(
                f"generate did not finish after the restart\n{stack.diagnose()}\n{cli_err.read_text()[-3000:]}"
            )
    finally:
        if generate.poll() is None:
            generate.kill()
    assert generate.returncode == 0, f"{cli_err.read_text()[-3000:]}\n{stack.diagnose()}"
    document = json.loads(cli_out.read_text())

    # Every statement rendered, every PI emailed exactly once with all of their PDFs.
    assert stack.query("SELECT COUNT(*) FROM statements_statement WHERE pdf = ''")[0][0] == 0
    pis = dict(
        stack.query(
            "SELECT pi_email, COUNT(*) FROM statements_statement WHERE state != 'superseded' GROUP BY pi_email"
        )
    )
    by_recipient = smtp.by_recipient()
    assert sorted(by_recipient) == sorted(pis)
    twice = {email: len(messages) for email, messages in by_recipient.items() if len(messages) != 1}
    assert twice == {}, f"emailed more than once: {twice}"
    for recipient, (message,) in by_recipient.items():
        pdfs = [a for a in message.iter_attachments() if a.get_content_type() == "application/pdf"]
        assert len(pdfs) == pis[recipient], recipient
        assert all(a.get_content().startswith(b"%PDF") for a in pdfs)
    deliveries = stack.query(
        "SELECT state, attempts, COUNT(*) FROM statements_delivery GROUP BY state, attempts"
    )
    assert deliveries == [("sent", 1, len(pis))]
    assert len(document["run"]["emails"]["sent"]) == len(pis)
    assert document["run"]["rendered"] == total

    # Sending again (through the workers) emails nobody.
    again = stack.run("-m", "chargeback.cli", "send", "-p", "2025-01", "--format", "json", timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["queued"] == 0
    assert len(smtp.messages) == len(pis)


START_RUN = """
import sys
import django
django.setup()
from statements import tasks
from statements.services import runs
run = runs.statement_run_start(kind=sys.argv[1], period="2025-01", actor=None)
tasks.statements_run.delay(run.pk)
print(run.pk)
"""


def _wait_for_run(stack: Stack, run_id: int, timeout: float = 180) -> tuple:
    deadline = time.monotonic() + timeout
    row: tuple = ()
    while time.monotonic() < deadline:
        (row,) = stack.query(
            "SELECT state, pdfs_total, pdfs_rendered, pdfs_failed, emails_total, emails_sent, emails_failed, "
            f"error, finished_at FROM statements_statementrun WHERE id = {int(run_id)}"
        )
        if row[0] in ("done", "failed"):
            return row
        time.sleep(0.5)
    pytest.fail(f"run {run_id} not finished: {row}\n{stack.diagnose()}")


def test_admin_runs_on_a_real_worker_are_followed_until_done(stack, smtp, tmp_path):
    """An issue run and a send run as the admin starts them: the worker prepares each, the
    follow-up task records its progress and finishes it in the database."""
    synthetic, _manifest = make_synthetic(
        tmp_path, "gcp_2025-01.csv", rows=300, pis=12, provider="gcp", seed=3, grain="monthly"
    )
    setup = stack.run("-c", SETUP, str(REFERENCE_DIR), ",".join([*REFERENCE_SOURCES, "gcp"]), str(synthetic))
    assert setup.returncode == 0, setup.stderr[-3000:]
    stack.start_worker()

    started = stack.run("-c", START_RUN, "issue", timeout=60)
    assert started.returncode == 0, started.stderr[-3000:]
    state, pdfs_total, rendered, failed, emails, _sent, _failed, error, finished_at = _wait_for_run(
        stack, int(started.stdout.strip())
    )
    statements = stack.query("SELECT COUNT(*) FROM statements_statement")[0][0]
    assert (state, error) == ("done", "") and finished_at
    assert pdfs_total == rendered == statements > 10 and failed == 0 and emails == 0
    assert stack.query("SELECT COUNT(*) FROM statements_statement WHERE pdf = ''")[0][0] == 0

    started = stack.run("-c", START_RUN, "send", timeout=60)
    assert started.returncode == 0, started.stderr[-3000:]
    state, _pdfs, _rendered, _failed, emails, sent, failed, error, _finished = _wait_for_run(
        stack, int(started.stdout.strip())
    )
    pis = stack.query("SELECT COUNT(DISTINCT pi_email) FROM statements_statement")[0][0]
    assert (state, error, failed) == ("done", "", 0)
    assert emails == sent == pis == len(smtp.messages)
