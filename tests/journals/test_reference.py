"""The reference month (the original product's sample, 2025-01) through the journal: gl balances at
20,227.00 and summary reproduces the original's journal (45 rows)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest

from journals import services
from journals.models import JournalExport

from .conftest import REFERENCE_BY_SOURCE, REFERENCE_TOTAL, amount, parse, records

pytestmark = pytest.mark.django_db


def read(export: JournalExport) -> bytes:
    with export.file.open("rb") as fh:
        return fh.read()


def test_gl_balances_at_the_statement_total(journal_month):
    export = services.journal_export(period="2025-01", format="gl", actor_name="test")
    data = read(export)
    rows = records(data)
    assert parse(data)[0] == [
        "Fund",
        "Orgn",
        "Account",
        "Program",
        "Activity",
        "Location",
        "Debit",
        "Credit",
        "Description",
        "Reference ID",
    ]
    debits = [r for r in rows if r["Debit"]]
    credits = [r for r in rows if r["Credit"]]
    assert len(debits) + len(credits) == len(rows) == export.row_count
    assert sum(amount(r["Debit"]) for r in rows) == REFERENCE_TOTAL
    assert sum(amount(r["Credit"]) for r in rows) == REFERENCE_TOTAL
    assert export.debit_total == export.credit_total == REFERENCE_TOTAL
    # One credit per source with money, to the source's fund/org (hpc is fully subsidised: 0.00,
    # and entries of 0.00 are left out by default).
    by_fund = {r["Fund"]: amount(r["Credit"]) for r in credits}
    assert by_fund == {
        "IT-CLOUD-AWS": REFERENCE_BY_SOURCE["aws"],
        "IT-CLOUD-AZURE": REFERENCE_BY_SOURCE["azure"],
        "IT-STORAGE": REFERENCE_BY_SOURCE["it_storage"],
        "RC-STORAGE": REFERENCE_BY_SOURCE["storage"],
    }
    # One debit per (PI fund/org, source): the sum of that fund/org's statement lines of the source.
    assert len({(r["Fund"], r["Description"]) for r in debits}) == len(debits)
    by_pi_fund: dict[str, Decimal] = defaultdict(Decimal)
    for r in debits:
        by_pi_fund[r["Fund"]] += amount(r["Debit"])
    assert by_pi_fund["BIO-2024-001"] == Decimal("2307.75")
    assert by_pi_fund["NIH-R01-2023"] == Decimal("4152.25")
    assert by_pi_fund["ENGR-STARTUP"] == Decimal("5.00")
    assert "NSF-ATM-2024" in by_pi_fund and by_pi_fund["NSF-ATM-2024"] == Decimal("12.50")
    # Debits first, then credits; descriptions from the default template, cut to 35 characters.
    assert rows.index(credits[0]) == len(debits)
    assert all(len(r["Description"]) <= 35 for r in rows)
    assert debits[0]["Description"].startswith("AWS 2025-01 Research Computing")
    assert export.statement_count == 10 and len(export.statements) == 10
    assert export.actor_name == "test" and export.format_name == "gl"


def test_summary_reproduces_the_original_journal(journal_month):
    export = services.journal_export(period="2025-01", format="summary")
    data = read(export)
    header, *body = parse(data)
    assert header == [
        "BillingPeriod",
        "PIEmail",
        "ProjectID",
        "FundOrg",
        "ServiceName",
        "Amount",
        "ResourceCount",
    ]
    assert len(body) == export.row_count == 45
    rows = records(data)
    assert sum(Decimal(r["Amount"]) for r in rows) == REFERENCE_TOTAL
    assert sum(int(r["ResourceCount"]) for r in rows) == 59
    assert {r["BillingPeriod"] for r in rows} == {"2025-01"}
    # The original sorted by PI email, project, service.
    keys = [(r["PIEmail"], r["ProjectID"], r["ServiceName"]) for r in rows]
    assert keys == sorted(keys)
    per_project: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for r in rows:
        per_project[(r["PIEmail"], r["ProjectID"], r["FundOrg"])] += Decimal(r["Amount"])
    assert per_project[("zorp.blinkman@example.edu", "genomics-sequencing", "BIO-2024-001")] == Decimal(
        "2307.75"
    )
    assert per_project[("frin.bumberly@example.edu", "cfd-turbulence", "ENGR-STARTUP")] == Decimal("5.00")
    assert per_project[("quib.flannister@example.edu", "climate-modeling", "NSF-ATM-2024")] == Decimal(
        "12.50"
    )
    assert len(per_project) == 10
    # Amounts are rounded lines: two decimals, the 100 % subsidy shows as 0.00.
    assert all(len(r["Amount"].split(".")[1]) == 2 for r in rows)
    assert any(r["Amount"] == "0.00" for r in rows)
    assert export.debit_total == export.credit_total == REFERENCE_TOTAL


def test_detail_has_one_row_per_charge(journal_month):
    export = services.journal_export(period="2025-01", format="detail")
    rows = records(read(export))
    assert len(rows) == export.row_count == 59
    assert sum(Decimal(r["BilledCost"]) for r in rows) == REFERENCE_TOTAL
    assert {r["Statement"][:8] for r in rows} == {"2025-01-"}
    ec2 = next(r for r in rows if r["ResourceId"] == "i-0abc123def456789a")
    assert ec2["BilledCost"] == "1062.50" and ec2["ListCost"] == "1250.00" and ec2["Source"] == "aws"


def test_export_twice_is_byte_identical(journal_month):
    for name in ("gl", "summary", "detail"):
        first = services.journal_export(period="2025-01", format=name)
        second = services.journal_export(period="2025-01", format=name)
        assert read(first) == read(second)
        assert first.sha256 == second.sha256 and first.rows_sha256 == second.rows_sha256
        assert first.file.name != second.file.name  # both kept
    assert JournalExport.objects.count() == 6


def test_zero_entries_on_request(journal_month):
    from journals.services import journal_settings_update

    journal_settings_update(include_zero_entries=True)
    rows = records(read(services.journal_export(period="2025-01", format="gl")))
    hpc_credit = [r for r in rows if r["Fund"] == "IT-HPC-SERVICES"]
    assert len(hpc_credit) == 1 and hpc_credit[0]["Credit"] == "0.00"
    assert sum(amount(r["Debit"]) for r in rows) == sum(amount(r["Credit"]) for r in rows) == REFERENCE_TOTAL
