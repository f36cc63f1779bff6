"""Fixtures of the journal tests: the reference month with credit funds and issued statements."""

from __future__ import annotations

import csv
import io
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps caches in ./.hypothesis by default: keep the project tree clean.
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "openchargeback-hypothesis"))

# Credit fund/org of each reference source (where the journal credits its revenue).
CREDIT_FUNDS = {
    "aws": "IT-CLOUD-AWS",
    "azure": "IT-CLOUD-AZURE",
    "hpc": "IT-HPC-SERVICES",
    "it_storage": "IT-STORAGE",
    "storage": "RC-STORAGE",
}
# Billed per source in the reference month (its README).
REFERENCE_BY_SOURCE = {
    "aws": Decimal("19086.75"),
    "azure": Decimal("735.25"),
    "hpc": Decimal("0.00"),
    "it_storage": Decimal("360.00"),
    "storage": Decimal("45.00"),
}
REFERENCE_TOTAL = Decimal("20227.00")


# The GL account the journal credits each source to (and debits for its usage when the project
# names none): a layout with an account column refuses an entry without one.
CREDIT_ACCOUNT = "54000"


def set_credit_funds(funds: dict[str, str] | None = None, account: str = CREDIT_ACCOUNT) -> None:
    """The credit fund/org and GL account of each source (the original's known_sources)."""
    from billing import services

    for slug, fund_org in (funds or CREDIT_FUNDS).items():
        services.source_update(slug=slug, fund_org=fund_org, account=account)


@pytest.fixture
def journal_month(reference_month):
    """The reference month with a credit fund/org and account on each source and its statements
    issued."""
    from statements import services

    set_credit_funds()
    services.statements_generate(period="2025-01")
    reference_month.refresh_from_db()
    return reference_month


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def parse(data: bytes | str, delimiter: str = ",") -> list[list[str]]:
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def records(data: bytes | str, delimiter: str = ",") -> list[dict[str, str]]:
    rows = parse(data, delimiter)
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def amount(cell: str) -> Decimal:
    return Decimal(cell) if cell else Decimal(0)
