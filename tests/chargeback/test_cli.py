"""The real `openchargeback` console script in a subprocess: its own database, exit codes, -c/--config.

Each test gets a fresh SQLite file in its tmp_path (also on the PostgreSQL run, so that the
subprocess never touches the test database) and runs `migrate` in it first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from chargeback.cli import _take_config_option
from tests.conftest import REFERENCE_SOURCES

SCRIPT = Path(sys.executable).with_name("openchargeback")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "chargeback.cli"]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """Runs the console script from a scratch directory with its own data dir and database."""

    def __init__(self, root: Path, database: bool = True) -> None:
        self.root = root
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"OPENCHARGEBACK_CONFIG", "DATABASE_URL", "MEDIA_ROOT", "DJANGO_SETTINGS_MODULE"}
        }
        self.env["OPENCHARGEBACK_DATA_DIR"] = str(root / "data")
        if database:
            self.env["DATABASE_URL"] = f"sqlite:///{root / 'cli.sqlite3'}"

    def __call__(self, *args: Any, env: dict[str, str] | None = None) -> Run:
        done = subprocess.run(
            [*COMMAND, *map(str, args)],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )
        return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(tmp_path) -> Cli:
    runner = Cli(tmp_path)
    migrated = runner("migrate", "--verbosity", "0")
    assert migrated.code == 0, migrated.err
    return runner


def money(doc: dict[str, Any]) -> Decimal:
    return Decimal(doc["amount"])


def test_reference_month_end_to_end(cli, reference_dir):
    for slug in REFERENCE_SOURCES:
        added = cli("sources", "add", slug)
        assert added.code == 0, added.err
    files = sorted(reference_dir.glob("*.csv"))
    ingested = cli("ingest", *files, "-p", "2025-01", "--format", "json")
    assert ingested.code == 0, ingested.err
    doc = ingested.json()
    assert [f["source"] for f in doc["files"]] == REFERENCE_SOURCES  # detected from the file names
    assert doc["totals"]["rows"] == 59
    assert doc["totals"]["list"] == {"amount": "32260.0000000000", "cents": 3226000}
    assert doc["totals"]["billed"] == {"amount": "20227.0000000000", "cents": 2022700}

    shown = cli("periods", "show", "2025-01", "--format", "json")
    assert shown.code == 0, shown.err
    summary = shown.json()
    assert (summary["charges"], summary["pis"], summary["projects"]) == (59, 7, 10)
    assert summary["billed"]["cents"] == 2022700 and summary["list"]["cents"] == 3226000
    billed = {(r["pi_email"], r["project_id"]): money(r["billed"]) for r in summary["by_pi_project"]}
    assert billed[("zorp.blinkman@example.edu", "genomics-sequencing")] == Decimal("2307.75")
    assert billed[("frin.bumberly@example.edu", "cfd-turbulence")] == Decimal("5.00")
    assert sum(billed.values()) == Decimal("20227.00") and len(billed) == 10

    again = cli("ingest", files[0], "-p", "2025-01")  # the same bytes: skipped, not a failure (cron)
    assert again.code == 0, again.err
    assert f"skipped, already imported as #{doc['files'][0]['import_id']}" in again.out


def test_exit_codes(cli, tmp_path):
    # 2: usage (argparse), with the usage line on stderr
    # (tests/billing/test_commands.py covers every command's usage errors through call_command)
    for args in (
        ["ingest"],
        ["periods", "show", "2025-01", "--format", "xml"],
        ["review", "approve"],
    ):
        result = cli(*args)
        assert result.code == 2, (args, result.err)
        assert "error" in result.err.lower(), args
    # 1: refused, a clear message on stderr and, with --format json, a JSON document on stdout
    bad_period = cli("periods", "show", "2025-13")
    assert bad_period.code == 1 and bad_period.err.strip() == (
        "error: invalid period '2025-13': expected YYYY-MM, e.g. 2025-01"
    )
    assert "Traceback" not in bad_period.err
    as_json = cli("periods", "show", "2025-02", "--format", "json")
    assert as_json.code == 1 and as_json.json() == {"error": "period 2025-02 does not exist", "errors": []}
    missing_file = cli("ingest", tmp_path / "x.csv", "-s", "nope")
    assert missing_file.code == 1 and "file not found" in missing_file.err
    no_note = cli("review", "reject", "--id", "1")  # deliberate: every rejection says why
    assert no_note.code == 1 and no_note.err == "error: a note is required: --note TEXT\n"

    assert cli("sources", "add", "aws").code == 0
    missing_column = tmp_path / "aws_2025-02.csv"
    missing_column.write_text("BillingPeriodStart,ListCost,ResourceId\n2025-02-01,1.00,i-1\n")
    refused = cli("ingest", missing_column, "--format", "json")
    assert refused.code == 1
    assert "missing required column BilledCost" in refused.json()["error"]
    assert "missing required column BilledCost" in refused.err
    # 0: success
    listed = cli("sources", "list", "--format", "json")
    assert listed.code == 0 and [s["slug"] for s in listed.json()["sources"]] == ["aws"]


def test_closed_period_and_review_through_the_script(cli, demo_dir):
    assert cli("sources", "add", "azure").code == 0
    assert cli("ingest", demo_dir / "azure_2026-10.csv").code == 0
    flagged = cli("review", "list", "-p", "2026-10", "--format", "json").json()
    assert flagged["count"] == 2
    ids = [c["id"] for c in flagged["charges"]]
    assert cli("periods", "close", "2026-10").code == 0
    closed = cli("ingest", demo_dir / "azure_2026-10.csv", "--force")
    assert closed.code == 1 and "period 2026-10 is closed" in closed.err
    no_note = cli("review", "reject", "--id", *ids, "--note", "")
    assert no_note.code == 1 and "a note is required" in no_note.err
    rejected = cli("review", "reject", "--id", *ids, "--note", "not billable", "--format", "json")
    assert rejected.code == 0, rejected.err
    assert rejected.json()["count"] == 2 and rejected.json()["billed"]["cents"] == 3943


def test_config_option_reads_another_env_file(tmp_path):
    configured = tmp_path / "configured"
    config = tmp_path / "site.env"
    config.write_text(f"OPENCHARGEBACK_DATA_DIR={configured}\n")
    cli = Cli(tmp_path / "cwd", database=False)  # no DATABASE_URL: SQLite under the data dir
    cli.root.mkdir()

    assert cli("-c", config, "migrate", "--verbosity", "0").code == 0
    assert (configured / "openchargeback.sqlite3").is_file()
    assert cli("--config", config, "sources", "add", "aws").code == 0
    # -c may also follow the command, and --config=PATH works
    listed = cli("sources", "list", "--format", "json", "-c", config)
    assert listed.code == 0, listed.err
    assert [s["slug"] for s in listed.json()["sources"]] == ["aws"]
    assert [
        s["slug"] for s in cli(f"--config={config}", "sources", "list", "--format", "json").json()["sources"]
    ] == ["aws"]

    # Without -c the default data dir (from the environment) is a different database.
    assert cli("migrate", "--verbosity", "0").code == 0
    assert cli("sources", "list", "--format", "json").json() == {"sources": []}
    assert not (cli.root / "instance").exists()

    missing = cli("-c", tmp_path / "nope.env", "sources", "list")
    assert missing.code != 0 and "config file not found" in missing.err
    assert cli("-c").code == 2


def test_take_config_option_leaves_shell_c_alone(monkeypatch):
    monkeypatch.delenv("OPENCHARGEBACK_CONFIG", raising=False)
    assert _take_config_option(["oc", "shell", "-c", "print(1)"]) == ["oc", "shell", "-c", "print(1)"]
    assert "OPENCHARGEBACK_CONFIG" not in os.environ
    assert _take_config_option(["oc", "-c", "x.env", "periods", "list"]) == ["oc", "periods", "list"]
    assert os.environ["OPENCHARGEBACK_CONFIG"].endswith("x.env")


def test_demo_end_to_end_and_idempotent(tmp_path, demo_dir):
    expected = json.loads((demo_dir / "expected.json").read_text())
    cli = Cli(tmp_path)  # demo runs the migrations itself
    first = cli("demo", env={"OPENCHARGEBACK_DEMO_PASSWORD": "pw-from-env-42"})
    assert first.code == 0, first.err
    assert "Admin user created: admin / pw-from-env-42" in first.out
    # The next steps print commands that work as shown: here the script's path (not on PATH).
    steps = first.out.split("Next steps:\n", 1)[1].splitlines()
    assert steps[1] == f"  {SCRIPT} serve" or not SCRIPT.exists()
    commands = [s.strip() for s in steps[3:]]
    assert any(c.endswith("periods show 2026-10") for c in commands), commands
    for command in commands:  # every printed command after serve works as shown
        shown = subprocess.run(
            command, shell=True, cwd=tmp_path, env=cli.env, capture_output=True, text=True, timeout=120
        )
        assert shown.returncode == 0, (command, shown.stderr)

    second = cli("demo", "--format", "json", env={"OPENCHARGEBACK_DEMO_PASSWORD": "other"})
    assert second.code == 0, second.err
    doc = second.json()
    assert doc["skipped"] == 5 and doc["imported"] == 0 and doc["admin"]["created"] is False
    assert "pw-from-env-42" not in second.out

    summary = cli("periods", "show", "2026-10", "--format", "json").json()
    assert summary == doc["summary"]
    assert money(summary["list"]) == Decimal(expected["list_total"])
    assert money(summary["billed"]) == Decimal(expected["billed_total"])
    assert {k: money(v) for k, v in summary["by_source"].items()} == {
        k: Decimal(v) for k, v in expected["billed_by_source"].items()
    }
    assert money(summary["flagged_billed"]) == Decimal(expected["held_back_billed"])
    (period,) = cli("periods", "list", "--format", "json").json()["periods"]
    assert (period["period"], period["charges"], period["flagged"]) == ("2026-10", 47, 2)
    assert (tmp_path / "data" / "media").is_dir()  # stored copies of the imports


def test_version(tmp_path):
    from chargeback import package_version

    cli = Cli(tmp_path)
    for args in (["--version"], ["version"]):
        result = cli(*args)
        assert result.code == 0 and result.out == f"openchargeback version {package_version()}\n", args
    assert package_version() == "0.1.0"
