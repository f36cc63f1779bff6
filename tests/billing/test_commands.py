"""The `openchargeback` billing commands through call_command: output, JSON and exit codes."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from billing import selectors, services
from billing.models import AccountMapping, BillingPeriod, Charge, Import, PeriodTransition, ReviewLog, Source
from tests.cli import run
from tests.conftest import REFERENCE_TOTALS
from tests.factories import ChargeFactory, PeriodFactory

pytestmark = pytest.mark.django_db

REFERENCE_ROWS_BY_SOURCE = {"aws": 25, "azure": 4, "hpc": 9, "it_storage": 6, "storage": 15}
REFERENCE_BILLED_BY_SOURCE = {
    "aws": "19086.75",
    "azure": "735.25",
    "hpc": "0",
    "it_storage": "360.00",
    "storage": "45.00",
}

TAGS = '"{""pi_email"": ""ada.lovelace@university.example"", ""project_id"": ""engine"", ""fund_org"": ""ENG-1""}"'
HEADER = "BillingPeriodStart,BillingPeriodEnd,ChargeCategory,ListCost,BilledCost,ResourceId,ServiceName,Tags"


def amount(money: dict[str, Any]) -> Decimal:
    return Decimal(money["amount"])


def write_focus(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def focus_row(month: str = "2025-02", billed: str = "8.50", resource: str = "i-1", tags: str = TAGS) -> str:
    return f"{month}-01,{month}-28,Usage,10.00,{billed},{resource},Amazon EC2,{tags}"


@pytest.fixture
def demo_azure(demo_dir):
    """The demo's Azure file in 2026-10: two flagged charges (missing fund/org, unattributed)."""
    services.source_create(slug="azure")
    services.import_file(path=demo_dir / "azure_2026-10.csv", source="azure", period="2026-10")
    return selectors.period_get("2026-10")


# --- ingest ---------------------------------------------------------------------------------


def test_ingest_reference_month_json_with_detected_sources(reference_sources, reference_dir):
    files = sorted(reference_dir.glob("*.csv"))
    result = run("ingest", *files, "-p", "2025-01", "--format", "json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["failed"] == 0 and doc["imported"] == 5 and doc["dry_run"] is False
    assert {f["source"]: f["rows"] for f in doc["files"]} == REFERENCE_ROWS_BY_SOURCE
    assert {f["source"]: amount(f["billed"]) for f in doc["files"]} == {
        k: Decimal(v) for k, v in REFERENCE_BILLED_BY_SOURCE.items()
    }
    for f in doc["files"]:
        assert f["ok"] and f["status"] == "completed" and f["period"] == "2025-01"
        assert isinstance(f["import_id"], int) and f["supersedes"] == [] and f["decisions_carried"] == 0
    totals = doc["totals"]
    assert totals["rows"] == 59 and totals["charges"] == 59 and totals["flagged"] == 0
    assert amount(totals["list"]) == Decimal("32260.00") and totals["list"]["cents"] == 3226000
    assert amount(totals["billed"]) == Decimal("20227.00") and totals["billed"]["cents"] == 2022700
    # Exact amounts are strings with full precision, counts are integers.
    assert totals["billed"]["amount"] == "20227.0000000000"
    assert isinstance(totals["rows"], int)

    show = run("periods", "show", "2025-01", "--format", "json")
    assert show.code == 0, show.err
    summary = show.json()
    assert (summary["charges"], summary["pis"], summary["projects"], summary["flagged"]) == (59, 7, 10, 0)
    assert summary["list"] == {"amount": "32260.0000000000", "cents": 3226000}
    assert summary["billed"] == {"amount": "20227.0000000000", "cents": 2022700}
    assert summary["discount"]["cents"] == 1203300
    assert {
        (row["pi_email"], row["project_id"]): (row["fund_org"], amount(row["billed"]))
        for row in summary["by_pi_project"]
    } == {key: (fund, Decimal(billed)) for key, (fund, billed) in REFERENCE_TOTALS.items()}
    frin = next(r for r in summary["by_pi_project"] if r["pi_email"] == "frin.bumberly@example.edu")
    assert frin["list"]["cents"] == 366500
    genomics = next(r for r in summary["by_pi_project"] if r["project_id"] == "genomics-sequencing")
    assert (genomics["list"]["cents"], genomics["discount"]["cents"]) == (272000, 41225)


def test_ingest_text_output(reference_sources, reference_dir):
    result = run("ingest", *sorted(reference_dir.glob("*.csv")), "-p", "2025-01")
    assert result.code == 0, result.err
    assert "aws_2025-01.csv → aws 2025-01, import #" in result.out
    assert "it_storage_2025-01.csv → it_storage 2025-01" in result.out
    assert "rows 25 · charges 25 · flagged 0 · list $22,455.00 · billed $19,086.75" in result.out
    assert (
        "Imported 5 files: 59 rows, 59 charges, 0 flagged, list $32,260.00, billed $20,227.00" in result.out
    )
    assert result.err == ""


def test_ingest_uses_installation_currency(reference_sources, reference_dir):
    settings = selectors.billing_settings_get()
    settings.currency_code = "EUR"
    settings.save()
    result = run("ingest", reference_dir / "azure_2025-01.csv", "-p", "2025-01")
    assert "billed €735.25" in result.out


def test_ingest_explicit_source_and_period_from_data(tmp_path):
    services.source_create(slug="cloud")
    path = write_focus(tmp_path / "export.csv", focus_row(), focus_row(resource="i-2", billed="1.25"))
    result = run("ingest", path, "-s", "cloud", "--format", "json")
    assert result.code == 0, result.err
    (file,) = result.json()["files"]
    assert (file["source"], file["period"], file["rows"], file["billed"]["cents"]) == (
        "cloud",
        "2025-02",
        2,
        975,
    )


def test_ingest_dry_run_writes_nothing(reference_sources, reference_dir):
    result = run(
        "ingest", reference_dir / "aws_2025-01.csv", "-p", "2025-01", "--dry-run", "--format", "json"
    )
    assert result.code == 0, result.err
    (file,) = result.json()["files"]
    assert file["dry_run"] is True and file["import_id"] is None and file["rows"] == 25
    assert not Charge.objects.exists()
    assert not Import.objects.filter(status=Import.Status.COMPLETED).exists()
    text = run("ingest", reference_dir / "aws_2025-01.csv", "-p", "2025-01", "--dry-run")
    assert "dry run (nothing written)" in text.out


def test_ingest_refuses_undetectable_source_naming_the_file(reference_sources, tmp_path):
    path = write_focus(tmp_path / "mystery_2025-02.csv", focus_row())
    result = run("ingest", path)
    assert result.code == 1
    assert "mystery_2025-02.csv" in result.err and "cannot tell the source" in result.err
    assert "give -s SOURCE" in result.err


def test_ingest_creates_a_source_on_first_sight(tmp_path):
    path = write_focus(tmp_path / "it_storage_2025-02.csv", focus_row())
    checked = run("ingest", path, "-s", "IT_Storage", "--dry-run")
    assert checked.code == 0, checked.err
    assert checked.out.startswith("new source 'it_storage' (IT Storage): would be created\n")
    assert not Source.objects.exists()  # a dry run creates nothing

    result = run("ingest", path, "-s", "IT_Storage", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["files"][0]["source"] == "it_storage"
    assert result.json()["files"][0]["source_created"] is True
    source = Source.objects.get()
    assert (source.slug, source.display_name, source.filename_pattern) == (
        "it_storage",
        "IT Storage",
        "it_storage_*",
    )

    other = write_focus(tmp_path / "x.csv", focus_row(resource="i-2"))
    again = run("ingest", other, "-s", "it_storage")  # names are case-insensitive: the same source
    assert again.code == 0 and "new source" not in again.out
    assert Source.objects.count() == 1

    bad = run("ingest", path, "-s", "it/storage")
    assert bad.code == 1
    assert "invalid source name 'it/storage'" in bad.err


def test_ingest_without_source_suggests_one(tmp_path):
    path = write_focus(tmp_path / "oracle_2025-02.csv", focus_row())
    result = run("ingest", path)
    assert result.code == 1
    assert "give -s SOURCE (e.g. -s oracle: a new source is created)" in result.err
    assert not Source.objects.exists()


@pytest.mark.parametrize("period", ["2025-1", "2025-13", "202501", "January"])
def test_ingest_bad_period_format_is_refused(tmp_path, period):
    services.source_create(slug="aws")
    path = write_focus(tmp_path / "aws_2025-02.csv", focus_row())
    result = run("ingest", path, "-p", period)
    assert result.code == 1
    assert "invalid period" in result.err and "YYYY-MM" in result.err
    assert not Import.objects.exists()


def test_ingest_rows_of_another_month_are_kept_and_flagged(tmp_path):
    services.source_create(slug="aws")
    path = write_focus(
        tmp_path / "aws_2025-03.csv",
        focus_row("2025-03"),
        focus_row("2025-02", resource="i-2", billed="1.00"),
    )
    result = run("ingest", path, "-p", "2025-03")
    assert result.code == 0, result.err
    assert result.out.splitlines()[2:] == [
        "  1 row of 2025-02 kept in 2025-03, flagged 'billing period mismatch (row says 2025-02)'",
        "  added to the source's other imports of the period",
    ]
    straggler = Charge.objects.get(resource_id="i-2")
    assert (straggler.period.period, straggler.review_state) == ("2025-03", "flagged")
    listed = run("review", "list", "--period", "2025-03", "--reason", "period_mismatch")
    assert "period_mismatch:2025-02" in listed.out and "1 flagged charge, billed $1.00" in listed.out


def test_ingest_splits_a_file_spanning_several_periods(tmp_path):
    path = write_focus(
        tmp_path / "aws_2025-03.csv",
        focus_row("2025-03"),
        focus_row("2025-02", resource="i-2", billed="1.00"),
    )
    result = run("ingest", path, "-s", "AWS")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "new source 'aws' (AWS)"
    # The period with the most rows first; as many rows each: by period.
    assert lines[1].startswith("aws_2025-03.csv → aws 2025-02, 2025-03, imports #")
    assert lines[1].endswith("(its rows span several billing periods: one import each)")
    assert lines[3].startswith("  2025-02: rows 1 · charges 1 · flagged 0 · billed $1.00")
    assert lines[4].startswith("  2025-03: rows 1 · charges 1 · flagged 0 · billed $8.50")
    doc = run("ingest", path, "-s", "aws", "--format", "json").json()  # the same bytes: skipped
    assert doc["files"][0]["skipped"].startswith("already imported as #")
    assert {c.period.period for c in Charge.objects.all()} == {"2025-02", "2025-03"}


def test_ingest_missing_column_is_refused_naming_it(tmp_path):
    services.source_create(slug="aws")
    path = write_focus(
        tmp_path / "aws_2025-02.csv",
        "2025-02-01,2025-02-28,Usage,10.00,i-1,Amazon EC2,{}",
        header="BillingPeriodStart,BillingPeriodEnd,ChargeCategory,ListCost,ResourceId,ServiceName,Tags",
    )
    result = run("ingest", path)
    assert result.code == 1
    assert "BilledCost" in result.err
    doc = run("ingest", path, "--format", "json")
    assert doc.code == 1
    body = doc.json()
    assert "BilledCost" in body["error"]
    assert body["files"][0]["ok"] is False and "BilledCost" in body["files"][0]["error"]
    assert not Charge.objects.exists()


def test_ingest_bad_value_reports_line_column_value_in_json(tmp_path):
    services.source_create(slug="aws")
    path = write_focus(tmp_path / "aws_2025-02.csv", focus_row(), focus_row(billed="abc", resource="i-2"))
    result = run("ingest", path, "--format", "json")
    assert result.code == 1
    body = result.json()  # one JSON document, even for a refusal
    assert body["failed"] == 1 and body["imported"] == 0
    assert body["errors"] == [
        {"file": str(path), "line": 3, "column": "BilledCost", "value": "abc", "message": "not a number"}
    ]
    assert body["files"][0]["errors"][0]["line"] == 3
    assert "line 3, column BilledCost, value 'abc'" in result.err
    assert not Charge.objects.exists()


def test_ingest_same_file_again_is_skipped_with_import_number(reference_sources, reference_dir):
    """The same bytes are not imported twice; it is no failure (a cron job run twice succeeds)."""
    path = reference_dir / "azure_2025-01.csv"
    first = run("ingest", path, "-p", "2025-01", "--format", "json")
    import_id = first.json()["files"][0]["import_id"]
    again = run("ingest", path, "-p", "2025-01")
    assert again.code == 0 and again.err == ""
    assert again.out == (
        f"azure_2025-01.csv: skipped, already imported as #{import_id} (azure_2025-01.csv, azure 2025-01); "
        "use --force to import it again\n"
    )
    doc = run("ingest", path, "-p", "2025-01", "--format", "json").json()
    assert (doc["files"][0]["import_id"], doc["imported"], doc["failed"]) == (import_id, 1, 0)
    assert Import.objects.count() == 1
    forced = run("ingest", path, "-p", "2025-01", "--force", "--format", "json")
    assert forced.code == 0, forced.err
    assert forced.json()["files"][0]["supersedes"] == [import_id]
    assert forced.json()["files"][0]["mode"] == "superseded"


def test_ingest_says_how_a_file_met_earlier_imports(reference_sources, reference_dir, tmp_path):
    aws = reference_dir / "aws_2025-01.csv"
    first = run("ingest", aws, "-p", "2025-01")
    assert "  added to the source's other imports of the period" in first.out.splitlines()
    extra = write_focus(tmp_path / "aws_2025-01_late.csv", focus_row("2025-01", resource="late-1"))
    added = run("ingest", extra, "-s", "aws", "-p", "2025-01")
    assert "  added to the source's other imports of the period" in added.out.splitlines()
    (tmp_path / "again").mkdir()
    changed = write_focus(
        tmp_path / "again" / "aws_2025-01_late.csv", focus_row("2025-01", resource="late-2")
    )
    superseded = run("ingest", changed, "-s", "aws", "-p", "2025-01", "--format", "json").json()["files"][0]
    assert superseded["mode"] == "superseded" and len(superseded["supersedes"]) == 1
    text = run("ingest", aws, "-p", "2025-01", "--replace", "--force").out.splitlines()
    assert any(
        line.startswith("  replaced every earlier import (#") and line.endswith("): --replace")
        for line in text
    )
    assert set(Charge.objects.values_list("import_run__original_name", flat=True)) == {"aws_2025-01.csv"}


def test_ingest_several_files_each_its_own_transaction(reference_sources, reference_dir, tmp_path):
    bad = write_focus(tmp_path / "aws_2025-01.csv", focus_row("2025-01", billed="x"))
    good = reference_dir / "azure_2025-01.csv"
    result = run("ingest", bad, good, tmp_path / "missing_2025-01.csv", "-p", "2025-01", "--format", "json")
    assert result.code == 1
    doc = result.json()
    assert [f["ok"] for f in doc["files"]] == [False, True, False]
    assert doc["imported"] == 1 and doc["failed"] == 2
    assert "2 of 3 files refused" in doc["error"]
    assert "file not found" in doc["files"][2]["error"]
    assert doc["totals"]["billed"]["cents"] == 73525
    assert selectors.exact_sum(Charge.objects.all(), "billed_cost") == Decimal("735.25")
    assert "2 of 3 files refused" in result.err


def test_ingest_into_closed_period_is_refused(reference_sources, reference_dir):
    assert run("periods", "open", "2025-01").code == 0
    assert run("periods", "close", "2025-01").code == 0
    result = run("ingest", reference_dir / "aws_2025-01.csv", "-p", "2025-01")
    assert result.code == 1
    assert "period 2025-01 is closed" in result.err
    assert not Charge.objects.exists()


def test_ingest_usage_errors_exit_2():
    assert run("ingest").code == 2
    assert run("ingest", "x.csv", "--format", "xml").code == 2
    assert run("ingest", "x.csv", "--no-such-option").code == 2


# --- periods --------------------------------------------------------------------------------


def test_periods_lifecycle(reference_month):
    listed = run("periods", "list", "--format", "json")
    assert listed.code == 0
    (row,) = listed.json()["periods"]
    assert row["period"] == "2025-01" and row["status"] == "open"
    assert (row["charges"], row["flagged"], row["billed"]["cents"]) == (59, 0, 2022700)

    text = run("periods", "list")
    assert "2025-01" in text.out and "$20,227.00" in text.out and "open" in text.out

    closed = run("periods", "close", "2025-01", "--format", "json")
    assert closed.json() == {"period": "2025-01", "action": "close", "status": "closed", "changed": True}
    again = run("periods", "close", "2025-01", "-n", "cron ran twice")  # already closed: nothing to do
    assert again.code == 0 and again.out == "Period 2025-01 is already closed.\n"
    assert PeriodTransition.objects.filter(period__period="2025-01", to_status="closed").count() == 1

    assert run("periods", "reopen", "2025-01").code == 2  # --reason is required
    blank = run("periods", "reopen", "2025-01", "--reason", "  ")
    assert blank.code == 1 and "reason is required" in blank.err
    reopened = run("periods", "reopen", "2025-01", "--reason", "late HPC file")
    assert reopened.code == 0 and "Period 2025-01 is open." in reopened.out
    transition = PeriodTransition.objects.filter(period__period="2025-01").last()
    assert transition is not None and transition.note == "late HPC file"

    refused = run("periods", "finalize", "2025-01")
    assert refused.code == 1 and "close it first" in refused.err


def test_periods_finalize_closed_empty_period():
    assert run("periods", "open", "2024-12").code == 0
    assert run("periods", "close", "2024-12").code == 0
    result = run("periods", "finalize", "2024-12", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["status"] == "finalized"
    assert run("periods", "reopen", "2024-12", "--reason", "x").code == 1


def test_periods_finalize_refused_while_charges_are_flagged(demo_azure):
    run("periods", "close", "2026-10")
    result = run("periods", "finalize", "2026-10", "--format", "json")
    assert result.code == 1
    body = result.json()
    assert "2 charges still flagged" in body["error"] and body["errors"] == []


def test_periods_show_text(reference_month):
    result = run("periods", "show", "2025-01")
    assert result.code == 0
    assert "59 charges · 7 PIs · 10 projects · 0 flagged" in result.out
    assert "list $32,260.00 · discount $12,033.00 · billed $20,227.00" in result.out
    assert "zorp.blinkman@example.edu" in result.out and "$2,307.75" in result.out
    assert "statements: none yet (openchargeback generate -p 2025-01)" in result.out
    doc = run("periods", "show", "2025-01", "--format", "json").json()
    assert doc["statements"]["count"] == 0 and doc["statements"]["due"]["cents"] == 0


def test_periods_show_and_subcommand_errors():
    assert run("periods").code == 2
    assert run("periods", "show").code == 2
    assert run("periods", "explode", "2025-01").code == 2
    missing = run("periods", "show", "2031-01", "--format", "json")
    assert missing.code == 1 and missing.json() == {"error": "period 2031-01 does not exist", "errors": []}
    assert "period 2031-01 does not exist" in missing.err
    bad = run("periods", "show", "2025-13")
    assert bad.code == 1 and "invalid period" in bad.err


def test_periods_list_counts_charges_without_import_totals():
    """Totals come from the charges when the imports' recorded totals do not account for them."""
    period = PeriodFactory(period="2025-03")
    ChargeFactory(period=period)
    ChargeFactory(period=period, review_state=Charge.ReviewState.FLAGGED, billed_cost=Decimal("1.005"))
    PeriodFactory(period="2025-04")
    rows = run("periods", "list", "--format", "json").json()["periods"]
    assert [(r["period"], r["charges"], r["flagged"]) for r in rows] == [("2025-04", 0, 0), ("2025-03", 2, 1)]
    assert rows[1]["billed"] == {"amount": "86.0050000000", "cents": 8601}
    assert rows[1]["list"]["cents"] == 20000 and rows[1]["flagged_billed"]["cents"] == 101


def test_periods_list_empty():
    assert run("periods", "list", "--format", "json").json() == {"periods": []}
    assert "No periods yet" in run("periods", "list").out
    # Django's own options are accepted after the subcommand too.
    assert run("periods", "list", "-v", "2", "--no-color", "--skip-checks").code == 0


def test_format_option_accepted_before_the_subcommand(reference_month):
    result = run("periods", "--format", "json", "show", "2025-01")
    assert result.code == 0 and result.json()["charges"] == 59


# --- sources and accounts -------------------------------------------------------------------


def test_sources_add_list_update():
    added = run(
        "sources",
        "add",
        "openai",
        "--display-name",
        "OpenAI API",
        "--pattern",
        "openai*",
        "--fund-org",
        "RC-RECOVERY-AI",
        "--account",
        "4510",
        "--format",
        "json",
    )
    assert added.code == 0, added.err
    assert added.json()["source"] == {
        "slug": "openai",
        "display_name": "OpenAI API",
        "filename_pattern": "openai*",
        "fund_org": "RC-RECOVERY-AI",
        "account": "4510",
        "is_active": True,
    }
    assert run("sources", "add", "aws").code == 0
    aws = Source.objects.get(slug="aws")
    assert (aws.display_name, aws.filename_pattern) == ("AWS", "aws_*")  # a well-known name in capitals

    assert [s["slug"] for s in run("sources", "list", "--format", "json").json()["sources"]] == [
        "aws",
        "openai",
    ]
    assert "OpenAI API" in run("sources", "list").out

    updated = run("sources", "update", "aws", "--display-name", "Amazon Web Services")
    assert updated.code == 0 and "Updated source aws" in updated.out
    aws.refresh_from_db()
    assert (aws.display_name, aws.filename_pattern) == ("Amazon Web Services", "aws_*")

    duplicate = run("sources", "add", "aws")
    assert duplicate.code == 1 and "already exists" in duplicate.err
    assert run("sources", "add", "Bad Name!").code == 1
    assert run("sources", "update", "aws").code == 2  # nothing to change
    assert run("sources", "update", "nope", "--account", "1").code == 1
    assert run("sources", "add").code == 2


def test_accounts_map_and_list():
    services.source_create(slug="aws")
    mapped = run(
        "accounts",
        "map",
        "012345678901",
        "--project",
        "astro",
        "--pi",
        "Carmen.Diaz@university.example",
        "--fund-org",
        "NSF-1",
        "--source",
        "aws",
        "--format",
        "json",
    )
    assert mapped.code == 0, mapped.err
    assert mapped.json()["mapping"] == {
        "sub_account_id": "012345678901",
        "source": "aws",
        "project_id": "astro",
        "pi_email": "carmen.diaz@university.example",
        "fund_org": "NSF-1",
        "project_fund_org": "NSF-1",
        "note": "",
    }
    assert (
        run("accounts", "map", "999", "--project", "astro", "--pi", "carmen.diaz@university.example").code
        == 0
    )
    listed = run("accounts", "list", "--format", "json").json()["mappings"]
    assert [(m["sub_account_id"], m["source"]) for m in listed] == [("012345678901", "aws"), ("999", None)]
    text = run("accounts", "list").out
    assert "012345678901" in text and "(any)" in text

    other_pi = run("accounts", "map", "5", "--project", "astro", "--pi", "someone@university.example")
    assert other_pi.code == 1 and "belongs to carmen.diaz@university.example" in other_pi.err
    assert run("accounts", "map", "5", "--project", "astro").code == 2  # --pi missing
    assert run("accounts", "map", "5", "--project", "x", "--pi", "p@u.example", "--source", "nope").code == 1
    assert AccountMapping.objects.count() == 2


def test_mapping_attributes_untagged_rows(demo_dir):
    services.source_create(slug="aws")
    mapped = run(
        "accounts",
        "map",
        "210987654321",
        "--project",
        "astro-survey",
        "--pi",
        "carmen.diaz@university.example",
        "--fund-org",
        "NSF-2025-0931",
    )
    assert mapped.code == 0, mapped.err
    assert "Mapped 210987654321 (any source) → project astro-survey" in mapped.out
    result = run("ingest", demo_dir / "aws_2026-10.csv", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["files"][0]["flagged"] == 0
    charge = Charge.objects.get(sub_account_id="210987654321", tags={})
    assert (charge.project_code, charge.pi_email, charge.billed_cost) == (
        "astro-survey",
        "carmen.diaz@university.example",
        Decimal("29.8080"),
    )


# --- show -----------------------------------------------------------------------------------


def test_show_pi_per_project(reference_month):
    result = run("show", "zorp.blinkman@example.edu", "-p", "2025-01", "--format", "json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["pi_email"] == "zorp.blinkman@example.edu" and doc["period"] == "2025-01"
    assert [(p["project_id"], amount(p["billed"]), p["flagged"]) for p in doc["projects"]] == [
        ("genomics-sequencing", Decimal("2307.75"), 0),
        ("protein-folding-ml", Decimal("4152.25"), 0),
    ]
    assert doc["totals"]["billed"]["cents"] == 646000 and doc["totals"]["charges"] == 8
    text = run("show", "zorp.blinkman@example.edu", "-p", "2025-01")
    assert "genomics-sequencing" in text.out and "$2,307.75" in text.out
    assert "Total: 8 charges" in text.out


def test_show_flagged_amounts(demo_azure):
    doc = run("show", "dmitri.volkov@university.example", "-p", "2026-10", "--format", "json").json()
    pilot = next(p for p in doc["projects"] if p["project_id"] == "econ-survey-pilot")
    assert pilot["flagged"] == 1 and amount(pilot["flagged_billed"]) == Decimal("24.2960")


def test_show_errors(reference_month):
    unknown = run("show", "nobody@example.edu", "-p", "2025-01")
    assert unknown.code == 1 and "no PI with email nobody@example.edu" in unknown.err
    assert run("show", "zorp.blinkman@example.edu").code == 2  # -p is required
    assert run("show", "zorp.blinkman@example.edu", "-p", "2030-01").code == 1


# --- review ---------------------------------------------------------------------------------


def test_review_list(demo_azure):
    result = run("review", "list", "-p", "2026-10", "--format", "json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["count"] == 2 and doc["shown"] == 2
    assert amount(doc["billed"]) == Decimal("39.4320")
    flags = {c["flags"] for c in doc["charges"]}
    assert flags == {"missing_fund_org", "unattributed"}
    charge = doc["charges"][0]
    assert set(charge) >= {"id", "source", "pi_email", "project_id", "resource_name", "billed", "flags"}
    assert charge["source"] == "azure"

    only = run("review", "list", "--reason", "unattributed", "--format", "json").json()
    assert only["count"] == 1 and only["charges"][0]["pi_email"] == ""

    limited = run("review", "list", "--limit", "1")
    assert "2 flagged charges, billed $39.43 (showing 1" in limited.out
    assert "(unattributed)" in run("review", "list").out or "survey-pilot-vm" in run("review", "list").out

    assert run("review", "list", "--reason", "bogus").code == 2
    assert run("review", "list", "-p", "2099-01").code == 1


def test_review_approve_by_id_and_reject_all(demo_azure):
    flagged = {c.flag_summary: c for c in selectors.flagged_charges(demo_azure)}
    pilot = flagged["missing_fund_org"]
    approved = run("review", "approve", "--id", pilot.pk, "--note", "fund/org on file", "--format", "json")
    assert approved.code == 0, approved.err
    doc = approved.json()
    assert (doc["action"], doc["count"], doc["skipped"]) == ("approve", 1, 0)
    assert doc["billed"] == {"amount": "24.2960000000", "cents": 2430}
    assert isinstance(doc["batch"], str)
    pilot.refresh_from_db()
    assert pilot.review_state == Charge.ReviewState.APPROVED
    log = ReviewLog.objects.get(charge=pilot)
    assert log.note == "fund/org on file" and log.actor_name.startswith("cli")

    again = run("review", "approve", "--id", pilot.pk)
    assert again.code == 0 and "Approved 0 charges" in again.out and "1 already approved" in again.out

    no_note = run("review", "reject", "-p", "2026-10", "--all")  # refused, not a usage error
    assert no_note.code == 1 and no_note.err.strip() == "error: a note is required: --note TEXT"
    blank = run("review", "reject", "-p", "2026-10", "--all", "--note", " ")
    assert blank.code == 1 and "a note is required" in blank.err
    rejected = run("review", "reject", "-p", "2026-10", "--all", "--note", "not ours")
    assert rejected.code == 0, rejected.err
    assert "Rejected 1 charge, billed $15.14." in rejected.out
    assert run("review", "list", "-p", "2026-10", "--format", "json").json()["count"] == 0
    assert "No flagged charges." in run("review", "list").out


def test_the_original_cli_forms(demo_azure):
    """The forms of the original OpenChargeback's documented CLI, as its users' scripts write them."""
    listed = run("review", "list", "--period", "2026-10")
    assert listed.code == 0 and "2 flagged charges, billed $39.43" in listed.out
    one = selectors.flagged_charges(demo_azure).first()
    refused = run("review", "reject", "--id", one.pk)  # deliberate: a rejection needs a note
    assert refused.code == 1 and refused.err.strip() == "error: a note is required: --note TEXT"
    approved = run("review", "approve", "--id", one.pk)  # no note needed
    assert approved.code == 0 and approved.out.startswith("Approved 1 charge, billed $")
    everything = run("review", "approve", "--period", "2026-10")  # every flagged charge of the period
    assert everything.code == 0 and everything.out == "Approved 1 charge, billed $15.14.\n"
    assert not selectors.flagged_charges(demo_azure).exists()

    assert run("periods", "open", "2026-11").out == "Period 2026-11 is open.\n"
    assert run("periods", "open", "2026-11").out == "Period 2026-11 is already open.\n"
    closed = run("periods", "close", "2026-11", "--notes", "month done")
    assert closed.code == 0 and closed.out == "Period 2026-11 is closed.\n"
    assert run("periods", "close", "2026-11", "-n", "cron again").out == "Period 2026-11 is already closed.\n"
    finalized = run("periods", "finalize", "2026-11", "-n", "Sent to accounting Jan 15")
    assert finalized.code == 0 and finalized.out == "Period 2026-11 is finalized.\n"
    notes = list(PeriodTransition.objects.filter(period__period="2026-11").values_list("to_status", "note"))
    assert notes == [("open", "opened"), ("closed", "month done"), ("finalized", "Sent to accounting Jan 15")]

    added = run("sources", "add", "it_storage", "-d", "IT Secure Storage", "-t", "file")
    assert added.code == 0 and Source.objects.get(slug="it_storage").display_name == "IT Secure Storage"
    api = run("sources", "add", "cost-explorer", "--type", "api")
    assert api.code == 1 and "source type 'api' is not supported" in api.err


def test_sources_sync_status(demo_azure):
    services.source_create(slug="gcp")
    text = run("sources", "sync-status")
    assert text.code == 0
    header, _rule, azure, gcp = text.out.splitlines()
    assert header.split() == ["SOURCE", "LAST", "IMPORT", "AT", "STATUS", "PERIOD", "ROWS", "BILLED"]
    assert azure.startswith("azure   #") and "azure_2026-10.csv" in azure and "completed  2026-10" in azure
    assert gcp.split() == ["gcp", "never"]
    doc = run("sources", "sync-status", "--format", "json").json()["sources"]
    last = doc[0]["last_import"]
    assert (doc[0]["source"], last["file"], last["period"], last["status"]) == (
        "azure",
        "azure_2026-10.csv",
        "2026-10",
        "completed",
    )
    assert last["rows"] == Import.objects.get().rows_read and last["billed"]["cents"] > 0
    assert doc[1] == {"source": "gcp", "display_name": "GCP", "last_import": None}


def test_review_approve_all_of_a_period(demo_azure):
    result = run("review", "approve", "-p", "2026-10", "--all", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["count"] == 2 and amount(result.json()["billed"]) == Decimal("39.4320")
    assert not selectors.flagged_charges(demo_azure).exists()


def test_review_reject_by_ids(demo_azure):
    ids = [c.pk for c in selectors.flagged_charges(demo_azure)]
    result = run("review", "reject", "--id", *ids, "--note", "duplicate billing", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["count"] == 2 and result.json()["note"] == "duplicate billing"
    assert set(Charge.objects.filter(id__in=ids).values_list("review_state", flat=True)) == {"rejected"}


def test_review_usage_and_refusals(demo_azure):
    charge_id = selectors.flagged_charges(demo_azure).first().pk
    assert run("review").code == 2
    assert run("review", "approve").code == 2  # which charges?
    assert run("review", "approve", "--all").code == 2  # --all needs -p
    assert run("review", "approve", "--id", charge_id, "-p", "2026-10", "--all").code == 2
    assert run("review", "approve", "--id", "abc").code == 2
    missing = run("review", "approve", "--id", 999999, "--format", "json")
    assert missing.code == 1 and missing.json()["error"] == "no charge with id 999999"
    BillingPeriod.objects.filter(pk=demo_azure.pk).update(status=BillingPeriod.Status.FINALIZED)
    finalized = run("review", "approve", "--id", charge_id)
    assert finalized.code == 1 and "finalized" in finalized.err


# --- demo -----------------------------------------------------------------------------------


def _assert_demo_totals(summary: dict[str, Any], expected: dict[str, Any]) -> None:
    assert amount(summary["list"]) == Decimal(expected["list_total"])
    assert amount(summary["billed"]) == Decimal(expected["billed_total"])
    assert {k: amount(v) for k, v in summary["by_source"].items()} == {
        k: Decimal(v) for k, v in expected["billed_by_source"].items()
    }
    by_project = {(r["pi_email"], r["project_id"]): amount(r["billed"]) for r in summary["by_pi_project"]}
    wanted = {
        tuple(key.split("|")): Decimal(v) for key, v in expected["billed_by_pi_project"].items() if "|" in key
    }
    # The untagged AWS row is attributed to astro-survey through the demo's account mapping.
    wanted[("carmen.diaz@university.example", "astro-survey")] += Decimal(
        expected["billed_by_pi_project"]["mapped:210987654321"]
    )
    wanted[("", "")] = Decimal(expected["unattributed_billed"])
    assert by_project == wanted
    assert summary["flagged"] == expected["unattributed_rows"] + expected["missing_fund_org_rows"]
    assert amount(summary["flagged_billed"]) == Decimal(expected["held_back_billed"])
    assert summary["pis"] == 5 and summary["projects"] == 9


def test_demo_loads_everything_and_is_idempotent(demo_dir, monkeypatch):
    expected = json.loads((demo_dir / "expected.json").read_text())
    monkeypatch.setenv("OPENCHARGEBACK_DEMO_PASSWORD", "demo-password-123")
    first = run("demo", "--format", "json")
    assert first.code == 0, first.err
    doc = first.json()
    assert doc["sources"] == {"created": ["aws", "azure", "gcp", "hpc", "storage"], "existing": []}
    assert doc["imported"] == 5 and doc["skipped"] == 0 and doc["failed"] == 0
    assert {f["source"]: f["rows"] for f in doc["files"]} == expected["rows_by_source"]
    assert doc["admin"] == {"username": "admin", "created": True, "password": "demo-password-123"}
    _assert_demo_totals(doc["summary"], expected)

    aws = Source.objects.get(slug="aws")
    assert (aws.display_name, aws.filename_pattern, aws.fund_org, aws.account) == (
        "Amazon Web Services",
        "aws_*",
        "RC-RECOVERY-AWS",
        "4500",
    )
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("demo-password-123")
    # Statements under the cent rule: each source x service line rounded once, half-up.
    assert doc["statements"]["counts"]["statements"] == 8
    assert doc["statements"]["totals"]["billed"]["cents"] == 556029
    # The period summary says what the statements bill (cent rule) beside the exact billable sum.
    assert doc["summary"]["billable"]["amount"] == "5560.2808220393"
    assert doc["summary"]["statements"]["count"] == 8
    assert doc["summary"]["statements"]["due"]["cents"] == 556029
    assert doc["summary"]["statements"]["unsent"] == 0

    second = run("demo", "--format", "json")
    assert second.code == 0, second.err
    doc2 = second.json()
    assert doc2["imported"] == 0 and doc2["skipped"] == 5 and doc2["failed"] == 0
    assert all(f["skipped"].startswith("already imported as #") for f in doc2["files"])
    assert doc2["admin"] == {"username": "admin", "created": False, "password": None}
    assert doc2["sources"]["existing"] == ["aws", "azure", "gcp", "hpc", "storage"]
    _assert_demo_totals(doc2["summary"], expected)
    assert Import.objects.filter(status=Import.Status.COMPLETED).count() == 5


def test_demo_text_output(demo_dir, monkeypatch):
    monkeypatch.delenv("OPENCHARGEBACK_DEMO_PASSWORD", raising=False)
    result = run("demo")
    assert result.code == 0, result.err
    assert "aws_2026-10.csv → aws 2026-10, import #" in result.out
    # The demo issues the statements too; the period stays open (generate leaves its state alone).
    assert "Period 2026-10 (open)" in result.out and "billed $5,599.71" in result.out
    assert "Total due $5,560.29" in result.out and "Sent 5 emails of 5." in result.out
    assert "statements: 8 current · due $5,560.29 (each line rounded to the cent) · 0 unsent" in result.out
    line = next(x for x in result.out.splitlines() if x.startswith("Admin user created: admin / "))
    password = line.rsplit(" ", 1)[1]
    assert len(password) >= 12 and get_user_model().objects.get(username="admin").check_password(password)
    assert "  openchargeback serve\n" in result.out and "/admin/" in result.out

    again = run("demo")
    assert again.code == 0, again.err
    assert "aws_2026-10.csv: skipped, already imported as #" in again.out
    assert password not in again.out and "already exists" in again.out


def test_demo_refuses_an_empty_folder(tmp_path):
    result = run("demo", "--dir", tmp_path, "--format", "json")
    assert result.code == 1 and "no demo files" in result.json()["error"]


def test_demo_reports_a_file_it_cannot_import(demo_dir, tmp_path):
    folder = tmp_path / "demo"
    shutil.copytree(demo_dir, folder)
    (folder / "gcp_2026-10.csv").write_text("nothing useful\n")
    result = run("demo", "--dir", folder, "--format", "json")
    assert result.code == 1
    doc = result.json()  # still one document
    assert doc["failed"] == 1 and doc["imported"] == 4
    assert "gcp_2026-10.csv" in result.err


def test_ingest_shows_a_progress_bar_on_a_terminal(tmp_path, monkeypatch, synthetic):
    import io
    import sys

    from billing.management.commands import ingest

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    path, _manifest = synthetic(rows=3000)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(ingest, "PROGRESS_BAR_BYTES", path.stat().st_size)  # "a few MB": this file
    result = run("ingest", path, "-s", "aws", "-p", "2025-01")
    assert result.code == 0, result.err
    size_mb = f"{path.stat().st_size / 1e6:,.0f}"
    assert f"] {size_mb}/{size_mb} MB reading {path.name}" in terminal.getvalue()
    assert terminal.getvalue().startswith("\r[") and terminal.getvalue().endswith("\n")
    # No bar for a smaller file, nor off a terminal (a cron job's mail).
    smaller, _ = synthetic(name="aws_2025-01_b.csv", rows=100, seed=3)
    monkeypatch.setattr(sys, "stderr", terminal := Terminal())
    assert run("ingest", smaller, "-s", "aws", "-p", "2025-01").code == 0
    assert terminal.getvalue() == ""
    monkeypatch.setattr(ingest, "PROGRESS_BAR_BYTES", 1)
    monkeypatch.setattr(sys, "stderr", mail := io.StringIO())
    assert run("ingest", path, "-s", "aws", "-p", "2025-01", "--force").code == 0
    assert mail.getvalue() == ""
