"""Every refusal: the export names its reasons (all of them) and writes nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from billing import services as billing_services
from billing.models import Charge, Project
from chargeback.commands import CommandRefused
from chargeback.errors import Refused
from journals import selectors, services
from journals.entries import JournalRefused
from journals.models import JournalExport
from statements import services as statement_services
from tests.factories import ChargeFactory, PeriodFactory, PIFactory, ProjectFactory, SourceFactory

from .conftest import CREDIT_ACCOUNT, CREDIT_FUNDS, REFERENCE_TOTAL, records, set_credit_funds

pytestmark = pytest.mark.django_db


def refusal(period: str = "2025-01", format: str = "gl") -> JournalRefused:
    with pytest.raises(JournalRefused) as caught:
        services.journal_export(period=period, format=format)
    assert not JournalExport.objects.exists()
    journals_dir = Path(settings.MEDIA_ROOT) / "journals"
    assert not journals_dir.exists() or not any(journals_dir.rglob("*.*"))
    return caught.value


def codes(exc: JournalRefused) -> list[str]:
    return [p.code for p in exc.errors]


def test_statements_missing(reference_month):
    set_credit_funds()
    exc = refusal()
    assert codes(exc) == ["statements"]  # an open period exports once its statements are current
    assert "10 PI × projects have billable charges but no statement" in str(exc)
    assert "run generate" in exc.describe()


def test_stale_statements(journal_month):
    charge = Charge.objects.filter(project_code="exoplanet-survey").first()
    billing_services.charges_reject(charge_ids=[charge.pk], note="duplicate")
    exc = refusal(format="summary")
    assert codes(exc) == ["statements"]
    assert "1 statement is out of date" in str(exc) and "2025-01-0005 v1" in str(exc)
    # Regenerating makes the journal exportable again, from the new version.
    statement_services.statements_generate(period="2025-01")
    export = services.journal_export(period="2025-01", format="summary")
    assert "2025-01-0005 v2" in export.statements


def test_charges_without_pi(journal_month):
    period = journal_month
    source = SourceFactory(slug="aws")
    ChargeFactory(
        period=period, source=source, project=None, pi=None, review_state=Charge.ReviewState.APPROVED
    )
    exc = refusal()
    assert "1 billable charge ($85.00) has no PI to bill" in str(exc)


def test_source_without_credit_fund_org_is_unbalanced(reference_month):
    set_credit_funds({slug: fund for slug, fund in CREDIT_FUNDS.items() if slug != "aws"})
    billing_services.source_update(slug="aws", account=CREDIT_ACCOUNT)  # an account, no fund/org
    statement_services.statements_generate(period="2025-01")
    exc = refusal()
    assert codes(exc) == ["unbalanced"]
    message = exc.errors[0].message
    assert message.startswith("debits ($20,227.00) ≠ credits ($1,140.25)")
    assert "source aws has no credit fund/org for its $19,086.75 of debits" in message
    # A fully subsidised source needs no credit fund/org: its debits are all 0.00.
    billing_services.source_update(slug="aws", fund_org="IT-CLOUD-AWS")
    billing_services.source_update(slug="hpc", fund_org="")
    assert services.journal_export(period="2025-01").credit_total == REFERENCE_TOTAL


def test_fund_org_the_regex_cannot_split(journal_month):
    # NSF-ATM-2024 and ADNI-PILOT-2024 split; BIO-2024-001, NIH-R01-2023 and most credit funds do not.
    services.journal_settings_update(fund_org_regex=r"(?P<orgn>[A-Z]+)-(?P<fund>[A-Z]+-\d{4})")
    exc = refusal()
    assert set(codes(exc)) == {"fund_org"}
    text = str(exc)
    assert "fund/org 'BIO-2024-001' (statement 2025-01-0009) does not match the fund/org split regex" in text
    assert "fund/org 'NIH-R01-2023' (statement 2025-01-0010) does not match" in text
    assert "credit fund/org 'IT-STORAGE' of source it_storage does not match" in text
    assert "NSF-ATM-2024" not in text and "ADNI-PILOT-2024" not in text and "IT-HPC" not in text


def test_statement_without_fund_org(db):
    period = PeriodFactory(period="2024-11")
    source = SourceFactory(slug="hpc", fund_org="IT-HPC")
    project = ProjectFactory(project_id="no-fund", fund_org="")
    ChargeFactory(period=period, source=source, project=project, fund_org="", billed_cost="12.00")
    statement_services.statements_generate(period="2024-11")
    exc = refusal("2024-11")
    assert codes(exc) == ["fund_org"]
    assert "1 statement has no fund/org to debit (2024-11-0001; $12.00)" in str(exc)


def test_account_code_that_fails_validation(journal_month):
    services.journal_settings_update(account_regex=r"\d{5}", default_account="54000")
    Project.objects.filter(project_id="genomics-sequencing").update(gl_account="54A00")
    exc = refusal()
    assert codes(exc) == ["account"]
    assert "account code '54A00' (debit of BIO-2024-001 for aws) does not match" in str(exc)
    Project.objects.filter(project_id="genomics-sequencing").update(gl_account="54100")
    assert services.journal_export(period="2025-01").row_count > 0


def test_missing_account_code_when_one_is_required(journal_month):
    set_credit_funds(account="")  # as the reference month: no account code anywhere
    services.journal_settings_update(account_regex=r"\d{5}")
    exc = refusal()
    assert codes(exc) == ["account"]
    assert "no account code for" in str(exc) and "requires one" in str(exc)


def test_an_empty_account_is_refused_where_the_layout_writes_one(journal_month):
    set_credit_funds(account="")  # as the reference month: no account code anywhere
    assert selectors.journal_build(journal_month).problems == []  # no layout chosen yet
    exc = refusal(format="gl")
    assert codes(exc) == ["account"]
    message = exc.errors[0].message
    assert message.startswith("no account code for debit of ")
    assert (
        "and the gl layout writes one: set the default account in the journal settings, the source's"
        in message
    )
    assert "or the project's GL account" in message
    # The preview refuses it the same way, before anyone tries.
    assert [p.code for p in selectors.journal_preview(journal_month, "gl").journal.problems] == ["account"]
    assert selectors.journal_preview(journal_month, "summary").journal.problems == []
    # A custom format that writes the account, of entries or of lines, is refused too.
    services.journal_format_save(name="entries-account", row_template="{{ entry.fund }},{{ entry.account }}")
    services.journal_format_save(
        name="lines-account",
        rows="lines",
        row_template="{{ line.fund_org }},{{ row.account }},{{ line.amount }}",
    )
    assert codes(refusal(format="entries-account")) == ["account"]
    lines = refusal(format="lines-account").errors[0].message
    assert lines.startswith("no account code for the lines of ") and "the lines-account layout" in lines

    # Layouts without an account column are written as the original wrote them.
    services.journal_format_save(name="no-account", row_template="{{ entry.fund }},{{ entry.amount }}")
    for name in ("summary", "detail", "no-account"):
        assert services.journal_export(period="2025-01", format=name).debit_total == REFERENCE_TOTAL
    # Once the default account is set, every row of gl carries it.
    services.journal_settings_update(default_account="54999")
    export = services.journal_export(period="2025-01", format="gl")
    with export.file.open("rb") as fh:
        rows = records(fh.read())
    assert rows and {r["Account"] for r in rows} == {"54999"}
    assert export.debit_total == export.credit_total == REFERENCE_TOTAL


def test_every_reason_at_once_and_as_json(reference_month):
    set_credit_funds({"azure": "IT-CLOUD-AZURE"})
    services.journal_settings_update(account_regex=r"\d{5}")
    statement_services.statements_generate(period="2025-01")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandRefused):
        call_command("export-journal", "-p", "2025-01", "--format", "json", stdout=out, stderr=err)
    doc = json.loads(out.getvalue())
    found = {e["code"] for e in doc["errors"]}
    assert found == {"account", "unbalanced"}
    assert "the journal of 2025-01 cannot be exported" in doc["error"]
    assert "- debits ($20,227.00) ≠ credits ($735.25)" in err.getvalue()
    assert not JournalExport.objects.exists()


def test_unknown_and_inactive_formats(journal_month):
    with pytest.raises(Refused, match="unknown journal format 'nope': use one of gl, summary, detail"):
        services.journal_export(period="2025-01", format="nope")
    services.journal_format_save(name="mine", row_template="{{ entry.fund }}", is_active=False)
    with pytest.raises(Refused, match="inactive journal format 'mine'"):
        services.journal_export(period="2025-01", format="mine")


def test_empty_period(db):
    PeriodFactory(period="2024-10", status="closed")
    exc = refusal("2024-10")
    assert "2024-10 has no issued statements" in str(exc)


def test_preview_reports_problems_without_raising(reference_month):
    preview = selectors.journal_preview(reference_month, "gl")
    assert [p.code for p in preview.journal.problems] == ["statements"]
    assert preview.header == [
        [
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
    ]
    assert preview.rows == []


def test_flagged_charges_are_not_in_the_journal(journal_month):
    """Flagged charges are held back from statements, so from the journal (no --allow-flagged)."""
    pi = PIFactory(email="new.pi@example.edu")
    project = ProjectFactory(project_id="held", pi=pi, fund_org="HELD-1")
    ChargeFactory(
        period=journal_month,
        source=SourceFactory(slug="aws"),
        project=project,
        review_state=Charge.ReviewState.FLAGGED,
        billed_cost="999.00",
    )
    statement_services.statements_generate(period="2025-01")
    export = services.journal_export(period="2025-01")
    assert export.debit_total == REFERENCE_TOTAL
