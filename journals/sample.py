"""A sample journal with awkward values (commas, quotes, formulas, long text): what a custom
format is checked against, and where the admin's list of row variables comes from."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from chargeback.money import ZERO
from journals.entries import CREDIT, DEBIT, ChargeRow, Entry, Journal, Line, StatementRef

PERIOD = "2025-01"
NASTY_PROJECT = 'proj,"one"'
FORMULA_PROJECT = '=HYPERLINK("http://x","y")'

# The sample's two statements: who they bill and their one service.
FIRST = {
    "statement": "2025-01-0001",
    "pi_email": "pi@example.edu",
    "project_id": NASTY_PROJECT,
    "fund_org": "123456-7890",
    "service_name": "Amazon EC2",
}
SECOND = {
    "statement": "2025-01-0002",
    "pi_email": "other@example.edu",
    "project_id": FORMULA_PROJECT,
    "fund_org": "@fund",
    "service_name": "Amazon S3",
}


def _ref(who: dict[str, str], version: int, billed_total: Decimal) -> StatementRef:
    return StatementRef(
        who["statement"], version, who["pi_email"], who["project_id"], who["fund_org"], billed_total
    )


def _entry(**values: Any) -> Entry:
    return Entry(**{"period": PERIOD, "source_slug": "aws", "source_name": "AWS, cloud", **values})


def _debit(pi_email: str, project_id: str, statement: str, **values: Any) -> Entry:
    """A debit of one PI's project on one statement (one line unless said)."""
    return _entry(
        side=DEBIT,
        pi_emails=[pi_email],
        project_ids=[project_id],
        statements=[statement],
        **{"line_count": 1, **values},
    )


def _line(**values: Any) -> Line:
    blank = dict.fromkeys(("pi_name", "project_name", "cost_center", "reference_1", "reference_2"), "")
    return Line(
        **{"period": PERIOD, "source_slug": "aws", "source_name": "AWS, cloud", "kind": "", **blank, **values}
    )


def _charge(**values: Any) -> ChargeRow:
    blank = dict.fromkeys(("resource_id", "resource_name", "sub_account_id", "region", "sku_id", "unit"), "")
    return ChargeRow(
        **{
            "period": PERIOD,
            "source_slug": "aws",
            "source_name": "AWS, cloud",
            "quantity": None,
            **blank,
            **values,
        }
    )


def sample_journal() -> Journal:
    """A small journal full of awkward values: commas, quotes, formulas, negative amounts."""
    entries = [
        _debit(
            "pi@example.edu",
            NASTY_PROJECT,
            "2025-01-0001",
            fund_org="123456-7890",
            ledger={"fund": "123456", "orgn": "7890", "program": "", "activity": "", "location": ""},
            account="54100",
            amount=Decimal("1062.50"),
            description='AWS 2025-01 "Research" charges',
            reference="REF,1",
            line_count=2,
        ),
        # A fund/org and an account code that are formulas, and a negative amount.
        _debit(
            "other@example.edu",
            FORMULA_PROJECT,
            "2025-01-0002",
            fund_org="=cmd|'/C calc'!A0",
            ledger={"fund": "=cmd|'/C calc'!A0"},
            account="@SUM(A1)",
            amount=Decimal("-12.25"),
            description="-refund",
        ),
        _entry(
            side=CREDIT,
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
        _line(
            **FIRST,
            version=1,
            pi_name='Doe, "Jane"',
            project_name="Genomics\nsequencing",
            cost_center="CC,1",
            reference_1="=1+2",
            reference_2="+ref",
            charge_count=2,
            list_amount=Decimal("1250.00"),
            discount_amount=Decimal("187.50"),
            amount=Decimal("1062.50"),
            account="54100",
            ledger={"fund": "123456", "orgn": "7890"},
        ),
        _line(
            **SECOND,
            version=2,
            kind="Credit",
            charge_count=1,
            list_amount=Decimal("-12.25"),
            discount_amount=ZERO,
            amount=Decimal("-12.25"),
        ),
    ]
    charges = [
        _charge(
            **FIRST,
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
        _charge(
            **SECOND,
            service_category="Storage",
            charge_category="Credit",
            list_cost=Decimal("-12.25"),
            billed_cost=Decimal("-12.25"),
            line_count=1,
        ),
    ]
    statements = [
        _ref(FIRST, 1, Decimal("1062.50")),
        _ref(SECOND, 2, Decimal("-12.25")),
    ]
    return Journal(
        period=PERIOD,
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
