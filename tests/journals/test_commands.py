"""`openchargeback export-journal`: text and JSON output, -o, exit codes; and the console script."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command

from chargeback.commands import CommandRefused, UsageError
from journals.models import JournalExport

from .conftest import CREDIT_FUNDS, REFERENCE_TOTAL, records, set_credit_funds

SCRIPT = Path(sys.executable).with_name("openchargeback")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "chargeback.cli"]


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("export-journal", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_text_output(journal_month):
    out, _err = run("-p", "2025-01")
    export = JournalExport.objects.get()
    assert out.splitlines()[0] == (
        f"Exported the gl journal of 2025-01 as export #{export.pk}: 20 rows, debits $20,227.00, "
        "credits $20,227.00, from 10 statements"
    )
    assert f"kept as   {export.file.name}" in out and export.actor_name.startswith("cli")


@pytest.mark.django_db
def test_json_output_and_copy(journal_month, tmp_path):
    out, _err = run("-p", "2025-01", "-f", "summary", "-o", str(tmp_path), "--format", "json")
    doc = json.loads(out)["export"]
    export = JournalExport.objects.get()
    assert doc["id"] == export.pk and doc["format"] == "summary" and doc["period"] == "2025-01"
    assert doc["rows"] == 45 and doc["statements"] == 10
    assert doc["debit"] == doc["credit"] == {"amount": "20227.0000000000", "cents": 2022700}
    copy = Path(doc["output"])
    assert copy.parent == tmp_path and copy.name == export.filename
    with export.file.open("rb") as fh:
        assert copy.read_bytes() == fh.read()
    assert doc["sha256"] == export.sha256


@pytest.mark.django_db
def test_output_to_a_file_and_to_stdout(journal_month, tmp_path):
    target = tmp_path / "out" / "jan.csv"
    run("-p", "2025-01", "-f", "detail", "-o", str(target))
    assert len(records(target.read_bytes())) == 59
    out, _err = run("-p", "2025-01", "-f", "gl", "-o", "-")
    latest = JournalExport.objects.filter(format_name="gl").get()
    with latest.file.open("rb") as fh:
        assert out.encode() == fh.read()


@pytest.mark.django_db
def test_usage_and_refusals(journal_month):
    with pytest.raises(UsageError, match="-o - prints the journal on stdout"):
        run("-p", "2025-01", "-o", "-", "--format", "json")
    with pytest.raises(UsageError):
        call_command("export-journal", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandRefused):
        run("-p", "2025-13")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandRefused) as caught:
        call_command("export-journal", "-p", "2025-01", "-f", "nope", stdout=out, stderr=err)
    assert caught.value.returncode == 1
    assert "unknown journal format 'nope': use one of gl, summary, detail" in err.getvalue()
    assert not JournalExport.objects.exists()


@pytest.mark.django_db
def test_an_empty_account_code_is_a_clear_error(journal_month):
    set_credit_funds(account="")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandRefused) as caught:
        call_command("export-journal", "-p", "2025-01", "-f", "gl", stdout=out, stderr=err)
    assert caught.value.returncode == 1
    text = err.getvalue()
    assert "the journal of 2025-01 cannot be exported" in text
    assert "no account code for debit of" in text and "the gl layout writes one" in text
    assert "set the default account in the journal settings" in text
    assert not JournalExport.objects.exists()
    # The summary layout has no account column: written as the original wrote it.
    out, _err = run("-p", "2025-01", "-f", "summary")
    assert out.startswith("Exported the summary journal of 2025-01")


def test_console_script_end_to_end(tmp_path, reference_dir):
    """The real console script finds `export-journal` (a command module named with a hyphen)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENCHARGEBACK_CONFIG", "DATABASE_URL", "MEDIA_ROOT", "DJANGO_SETTINGS_MODULE"}
    }
    env["OPENCHARGEBACK_DATA_DIR"] = str(tmp_path / "data")
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.sqlite3'}"

    def cli(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )

    assert cli("migrate", "--verbosity", "0").returncode == 0
    for slug, fund_org in CREDIT_FUNDS.items():
        assert cli("sources", "add", slug, "--fund-org", fund_org).returncode == 0
    assert cli("ingest", *sorted(reference_dir.glob("*.csv")), "-p", "2025-01").returncode == 0

    refused = cli("export-journal", "-p", "2025-01", "--format", "json")
    assert refused.returncode == 1
    assert "billable charges but no statement" in json.loads(refused.stdout)["error"]

    assert cli("generate", "-p", "2025-01").returncode == 0
    done = cli(
        "export-journal", "-p", "2025-01", "-f", "summary", "-o", tmp_path / "jan.csv", "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)["export"]
    assert doc["rows"] == 45 and doc["debit"]["cents"] == doc["credit"]["cents"] == 2022700
    rows = records((tmp_path / "jan.csv").read_bytes())
    assert len(rows) == 45 and sum(Decimal(r["Amount"]) for r in rows) == REFERENCE_TOTAL
    usage = cli("export-journal")
    assert usage.returncode == 2 and "-p/--period" in usage.stderr


@pytest.mark.django_db
def test_journal_folder_by_default_with_the_original_names(journal_month, settings, tmp_path):
    """The original's form: `export-journal --period P --format gl`, written to the journal folder as
    journal_{period}_{YYYYmmdd_HHMMSS}.csv, its absolute path printed."""
    settings.OPENCHARGEBACK_JOURNAL_DIR = tmp_path / "journals"
    out, _err = run("--period", "2025-01", "--format", "gl")
    export = JournalExport.objects.get()
    (written,) = (tmp_path / "journals").iterdir()
    assert re.fullmatch(r"journal_2025-01_\d{8}_\d{6}\.csv", written.name)
    assert out.splitlines()[-1] == f"Journal exported to: {written}"
    assert written.is_absolute()
    with export.file.open("rb") as fh:
        assert written.read_bytes() == fh.read()
    # The same second again: a second file, never an overwrite.
    run("-p", "2025-01", "-f", "gl")
    assert len(list((tmp_path / "journals").iterdir())) == 2

    # The original's default and standard names: one row per PI × project × service.
    for name in ("default", "standard"):
        doc = json.loads(run("-p", "2025-01", "-f", name, "--format", "json")[0])["export"]
        assert (doc["format"], doc["rows"]) == ("summary", 45)
        assert Path(doc["output"]).parent == tmp_path / "journals"
    with pytest.raises(UsageError, match="two layouts given"):
        run("-p", "2025-01", "-f", "gl", "--format", "detail")


@pytest.mark.django_db
def test_include_flagged_says_what_is_held_back(journal_month, settings, tmp_path):
    from billing.models import Charge

    settings.OPENCHARGEBACK_JOURNAL_DIR = tmp_path
    Charge.objects.filter(resource_id="hpc-node-042").update(review_state="flagged")  # held back: 0.00
    Charge.objects.filter(resource_id="i-0abc123def456789a").update(review_state="flagged")
    call_command("generate", "-p", "2025-01", stdout=io.StringIO(), stderr=io.StringIO())
    out, err = run("-p", "2025-01", "--include-flagged")
    assert "Journal exported to:" in out
    assert err.strip() == (
        "warning: --include-flagged: 2 flagged charges ($1,062.50) are on no statement, so not in the "
        "journal; approve them (review approve --period 2025-01) and generate again"
    )
