"""A sample journal with awkward values (commas, quotes, formulas, long text): what a custom
format is checked against, and where the admin's list of row variables comes from."""

from __future__ import annotations

from decimal import Decimal

from chargeback.money import ZERO
from journals.entries import CREDIT, DEBIT, ChargeRow, Entry, Journal, Line, StatementRef


def sample_journal() -> Journal:
    """A small journal full of awkward values: commas, quotes, formulas, negative amounts."""
    period = "2025-01"
    nasty_project = 'proj,"one"'
    formula_project = '=HYPERLINK("http://x","y")'
    entries = [
        Entry(
            side=DEBIT,
            period=period,
            source_slug="aws",
            source_name="AWS, cloud",
            fund_org="123456-7890",
            ledger={"fund": "123456", "orgn": "7890", "program": "", "activity": "", "location": ""},
            account="54100",
            amount=Decimal("1062.50"),
            description='AWS 2025-01 "Research" charges',
            reference="REF,1",
            pi_emails=["pi@example.edu"],
            project_ids=[nasty_project],
            statements=["2025-01-0001"],
            line_count=2,
        ),
        Entry(
            side=DEBIT,
            period=period,
            source_slug="aws",
            source_name="AWS, cloud",
            fund_org="=cmd|'/C calc'!A0",
            ledger={"fund": "=cmd|'/C calc'!A0"},
            account="@SUM(A1)",
            amount=Decimal("-12.25"),
            description="-refund",
            pi_emails=["other@example.edu"],
            project_ids=[formula_project],
            statements=["2025-01-0002"],
            line_count=1,
        ),
        Entry(
            side=CREDIT,
            period=period,
            source_slug="aws",
            source_name="AWS, cloud",
            fund_org="IT-CLOUD",
            ledger={"fund": "IT-CLOUD"},
            account="54100",
            amount=Decimal("1050.25"),
            description="AWS 2025-01 Research Computing",
            statements=["2025-01-0001", "2025-01-0002"],
            line_count=3,
        ),
    ]
    lines = [
        Line(
            period=period,
            statement="2025-01-0001",
            version=1,
            pi_email="pi@example.edu",
            pi_name='Doe, "Jane"',
            project_id=nasty_project,
            project_name="Genomics\nsequencing",
            fund_org="123456-7890",
            cost_center="CC,1",
            reference_1="=1+2",
            reference_2="+ref",
            source_slug="aws",
            source_name="AWS, cloud",
            service_name="Amazon EC2",
            kind="",
            charge_count=2,
            list_amount=Decimal("1250.00"),
            discount_amount=Decimal("187.50"),
            amount=Decimal("1062.50"),
            account="54100",
            ledger={"fund": "123456", "orgn": "7890"},
        ),
        Line(
            period=period,
            statement="2025-01-0002",
            version=2,
            pi_email="other@example.edu",
            pi_name="",
            project_id=formula_project,
            project_name="",
            fund_org="@fund",
            cost_center="",
            reference_1="",
            reference_2="",
            source_slug="aws",
            source_name="AWS, cloud",
            service_name="Amazon S3",
            kind="Credit",
            charge_count=1,
            list_amount=Decimal("-12.25"),
            discount_amount=ZERO,
            amount=Decimal("-12.25"),
        ),
    ]
    charges = [
        ChargeRow(
            period=period,
            statement="2025-01-0001",
            pi_email="pi@example.edu",
            project_id=nasty_project,
            fund_org="123456-7890",
            source_slug="aws",
            source_name="AWS, cloud",
            service_name="Amazon EC2",
            service_category="Compute",
            charge_category="Usage",
            resource_id="i-0abc,def",
            resource_name='say "hi"',
            sub_account_id="012345678901",
            region="us-east-1",
            sku_id="-SKU",
            quantity=Decimal("720.5"),
            unit="Hours",
            list_cost=Decimal("1250.1234567891"),
            billed_cost=Decimal("1062.5000000000"),
            line_count=720,
        ),
        ChargeRow(
            period=period,
            statement="2025-01-0002",
            pi_email="other@example.edu",
            project_id=formula_project,
            fund_org="@fund",
            source_slug="aws",
            source_name="AWS, cloud",
            service_name="Amazon S3",
            service_category="Storage",
            charge_category="Credit",
            resource_id="",
            resource_name="",
            sub_account_id="",
            region="",
            sku_id="",
            quantity=None,
            unit="",
            list_cost=Decimal("-12.25"),
            billed_cost=Decimal("-12.25"),
            line_count=1,
        ),
    ]
    statements = [
        StatementRef("2025-01-0001", 1, "pi@example.edu", nasty_project, "123456-7890", Decimal("1062.50")),
        StatementRef("2025-01-0002", 2, "other@example.edu", formula_project, "@fund", Decimal("-12.25")),
    ]
    return Journal(
        period=period,
        currency="USD",
        status="closed",
        statements=statements,
        lines=lines,
        entries=entries,
        charges=lambda: iter(charges),
    )


def row_variables(rows: str) -> list[str]:
    """The variables a row template may use (for the admin's help)."""
    sample = sample_journal()
    item: Entry | Line | ChargeRow
    if rows == "entries":
        item = sample.entries[0]
    elif rows == "lines":
        item = sample.lines[0]
    else:
        item = next(sample.charges())
    return list(item.values(sample.currency))
