"""The original OpenChargeback's README, run as its users run it: its quick start and its monthly
cron script, verbatim, against the reference month and a config.yaml in the original's schema.

Only what cannot be the same on a test machine is pointed elsewhere, as the issue allows:
- the file paths: `sample_data/inputs/` and `/data/` are the reference folder, and
  `/etc/openchargeback/config.yaml` the config the test writes (the quick start copies it from
  `config.example.yaml`, as its `cp` line says);
- the install lines (`python -m venv`, `pip install -e .`) are what the test environment did
  already: the venv's `openchargeback` is first on PATH;
- the cron script's `$(date +%Y-%m)` is the reference month: a `date` on PATH answers 2025-01;
- the SMTP server of config.yaml is an aiosmtpd server in this process.
Between the two blocks, the site's other two files of the month arrive (it_storage, storage),
imported with the original's CLI form, so that the month is the one the original billed.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import REFERENCE_DIR, REFERENCE_TOTALS, SHARED
from tests.statements.conftest import free_port, start_smtp_server

ORIGINAL_README = SHARED / "seed" / "original-README.md"
BIN = Path(sys.executable).parent
# The original's config.example.yaml, with the values a site sets (its layout and keys kept).
CONFIG = """\
# OpenChargeback Configuration
dev_mode: false
currency: "$"

database:
  path: ./instance/billing.db

smtp:
  host: 127.0.0.1
  port: {smtp_port}
  use_tls: false
  username: ${{SMTP_USER}}      # Set via environment variable
  password: ${{SMTP_PASSWORD}}  # Set via environment variable

email:
  from_address: hpc-billing@example.edu
  from_name: Research Computing Billing
  subject_template: "Research Computing Charges - {{billing_period}}"

tag_mapping:
  pi_email: "pi_email"
  project_id: "project_id"
  fund_org: "fund_org"
  cost_center: "cost_center"
  reference_1: "grant_number"
  reference_2: "request_id"

output:
  pdf_dir: ./instance/output/pdfs
  journal_dir: ./instance/output/journals
  email_dir: ./instance/output/emails

logging:
  level: INFO
  format: splunk
  file: ./instance/logs/openchargeback.log

web:
  enabled: true
  host: 127.0.0.1
  port: {web_port}
  secret_key: ${{WEB_SECRET_KEY}}
  session_lifetime_hours: 8
  users:
    admin:
      email: admin@example.edu
      display_name: "Admin User"
      # Default password below is "admin123" - CHANGE THIS!
      password_hash: "$2b$12$Fxu99zxFh4plt3a2FDyEnuFyg2Co/osXmQGGYw.HFl0/Id6V.Uvey"
      role: admin
      recovery: true
  password_requirements:
    min_length: 8

review:
  flag_patterns: []
  fund_org_patterns: []

imports:
  known_sources:
  - name: AWS
    pattern: aws
    fund_org: "IT-CLOUD-AWS"
    account_code: "54100"
  - name: Azure
    pattern: azure
    fund_org: "IT-CLOUD-AZURE"
    account_code: "54100"
  - name: Azure Local
    pattern: azure-local
    fund_org: "IT-AZLOCAL"
    account_code: "54100"
  - name: GCP
    pattern: gcp
    fund_org: "IT-CLOUD-GCP"
    account_code: "54100"
  - name: HPC
    pattern: hpc
    fund_org: "RC-HPC-SERVICES"
    account_code: "54200"
  - name: OpenAI
    pattern: openai
    fund_org: "IT-AI-OPENAI"
    account_code: "54100"
  - name: Storage
    pattern: storage
    fund_org: "RC-STORAGE"
    account_code: "54300"
  - name: IT Storage
    pattern: it_storage
    fund_org: "IT-SECURE-STORAGE"
    account_code: "54300"

journal:
  fund_org_regex: "^(?P<orgn>[^-]+)-(?P<fund>.+)$"
  account_code_regex: ""
  template: journal_gl.csv
  default_account: "54000"
  debit_description: "{{source}} {{period}} Research Computing Charges"
  credit_description: "{{source}} {{period}} Research Computing Charges"
"""
# (PI's user name, project): the statement PDFs are named after them.
REFERENCE_PROJECTS = {(pi.split("@")[0], project) for pi, project in REFERENCE_TOTALS}
PDF_NAMES = sorted(f"2025-01_{pi}_{project}.pdf" for pi, project in REFERENCE_PROJECTS)


def shell_block(heading: str) -> str:
    """The first ```bash block after a heading of the original README, as written there."""
    text = ORIGINAL_README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, heading
    return match.group(1)


def pointed(block: str, config: Path) -> str:
    """Only the file paths pointed at the reference month and the test's config."""
    return (
        block.replace("sample_data/inputs/", f"{REFERENCE_DIR}/")
        .replace("/data/", f"{REFERENCE_DIR}/")
        .replace("/etc/openchargeback/config.yaml", str(config))
    )


@pytest.fixture
def site(tmp_path):
    """An empty folder with config.example.yaml, the environment of a shell with the venv active,
    and an SMTP server; yields (folder, env, smtp server)."""
    smtp, controller = start_smtp_server()
    folder = tmp_path / "site"
    folder.mkdir()
    web_port = free_port()
    (folder / "config.example.yaml").write_text(CONFIG.format(smtp_port=smtp.port, web_port=web_port))
    shims = tmp_path / "bin"
    shims.mkdir()
    date = shims / "date"  # the month the cron script bills is the reference month
    date.write_text('#!/bin/sh\n[ "$1" = "+%Y-%m" ] && { echo 2025-01; exit 0; }\nexec /bin/date "$@"\n')
    date.chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {"OPENCHARGEBACK_CONFIG", "OPENCHARGEBACK_DATA_DIR", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
        and not k.startswith(("EMAIL_", "CELERY_", "LOG_"))
    }
    env.update(
        PATH=f"{shims}:{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        VIRTUAL_ENV=str(BIN.parent),
        SMTP_USER="",  # the relay of the test takes mail without a login
        SMTP_PASSWORD="",
        WEB_SECRET_KEY="a-secret-key-for-the-test-of-the-original-readme-0123456789",
        web_port=str(web_port),
    )
    yield folder, env, smtp
    controller.stop()  # type: ignore[attr-defined]


def run_line(line: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


def check_served(port: int) -> None:
    """`serve -c config.yaml`: sign in with the credentials of config.yaml; the admin is styled."""
    base = f"http://127.0.0.1:{port}"
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = opener.open(f"{base}/admin/login/", timeout=10).read().decode()
    token = found(r'name="csrfmiddlewaretoken" value="([^"]+)"', login)
    data = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "username": "admin", "password": "admin123", "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(
        f"{base}/admin/login/", data=data, headers={"Referer": f"{base}/admin/login/"}
    )
    home = opener.open(request, timeout=30)
    page = home.read().decode()
    assert home.geturl() == f"{base}/admin/" and "Log out" in page, page[:500]
    css = found(r'href="(/static/[^"]+\.css)"', page)
    with opener.open(f"{base}{css}", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/css")


def start_server(line: str, folder: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        shlex.split(line), cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def stop_server(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)  # gunicorn's graceful stop
    try:
        _out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _out, err = process.communicate()
    return process.returncode, err


def wait_for(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(
        process.communicate()[1] if process.poll() is not None else "the server did not answer"
    )


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, (pattern, text[:500])
    return match.group(1)


def test_the_original_readme_runs_verbatim(site):
    folder, env, smtp = site
    web_port = int(env["web_port"])

    # --- the quick start ------------------------------------------------------------------------------
    quick_start = pointed(shell_block("## Quick Start"), folder / "config.yaml")
    ran = []
    for line in quick_start.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith(("python -m venv", "pip install")):
            continue  # comments; the install lines (done: the venv is on PATH)
        if line.startswith("openchargeback serve"):
            process = start_server(line, folder, env)
            try:
                wait_for(web_port, process)
                check_served(web_port)
            finally:
                code, err = stop_server(process)
            assert code == 0, err[-3000:]
            ran.append(line)
            continue
        done = run_line(line, folder, env)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (line, done.stderr)
        ran.append(line)
    assert [line.split()[:2] for line in ran] == [
        ["cp", "config.example.yaml"],
        ["openchargeback", "ingest"],
        ["openchargeback", "ingest"],
        ["openchargeback", "generate"],
        ["openchargeback", "serve"],
    ]
    instance = folder / "instance"
    assert (instance / "billing.db").is_file()
    previews = instance / "output" / "pdfs" / "preview" / "2025-01"
    assert len(list(previews.glob("*.pdf"))) == 10  # the dry run's DRAFT previews (aws and hpc so far)
    assert smtp.messages == []  # a dry run sends nothing

    # --- the month's other files arrive ---------------------------------------------------------------
    for name in ("it_storage", "storage"):
        done = run_line(
            f"openchargeback ingest {REFERENCE_DIR}/{name}_2025-01.csv -s {name} -p 2025-01 -c config.yaml",
            folder,
            env,
        )
        assert done.returncode == 0, done.stderr
        assert f"{name}_2025-01.csv → {name} 2025-01, import #" in done.stdout

    # --- the monthly cron script ------------------------------------------------------------------------
    cron = pointed(shell_block("## CLI Automation"), folder / "config.yaml")
    done = subprocess.run(
        ["bash", "-e", "-c", cron], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "aws_2025-01.csv: skipped, already imported as #1" in done.stdout  # the quick start's file

    # 7 emails with 10 PDFs, over SMTP, named {period}_{pi}_{project}.pdf
    assert len(smtp.messages) == 7
    attachments = sorted(p.get_filename() for m in smtp.messages for p in m.iter_attachments())
    assert attachments == PDF_NAMES
    assert {m["Subject"] for m in smtp.messages} == {"Research Computing Charges - 2025-01"}
    senders = {(a.display_name, a.addr_spec) for m in smtp.messages for a in m["From"].addresses}
    assert senders == {("Research Computing Billing", "hpc-billing@example.edu")}
    # The PDFs in output.pdf_dir, the journal in output.journal_dir
    assert sorted(p.name for p in (instance / "output" / "pdfs").glob("*.pdf")) == PDF_NAMES
    (journal,) = (instance / "output" / "journals").glob("journal_2025-01_*.csv")
    assert re.fullmatch(r"journal_2025-01_\d{8}_\d{6}\.csv", journal.name)
    rows = list(csv_rows(journal))
    assert sum(Decimal(r["Debit"] or 0) for r in rows) == sum(Decimal(r["Credit"] or 0) for r in rows)
    assert sum(Decimal(r["Debit"] or 0) for r in rows) == Decimal("20227.00")
    assert f"Journal exported to: {journal}" in done.stdout
    # The period billed what the original billed.
    shown = run_line("openchargeback periods show 2025-01 --format json -c config.yaml", folder, env)
    summary = json_doc(shown.stdout)
    assert summary["billed"] == {"amount": "20227.0000000000", "cents": 2022700}
    assert (summary["pis"], summary["projects"], summary["flagged"]) == (7, 10, 0)
    assert summary["statements"]["due"]["cents"] == 2022700 and summary["statements"]["unsent"] == 0
    assert (instance / "logs" / "openchargeback.log").is_file()  # logging.file


def csv_rows(path: Path):
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    yield from csv.DictReader(lines)


def json_doc(text: str) -> dict:
    import json

    return json.loads(text)
