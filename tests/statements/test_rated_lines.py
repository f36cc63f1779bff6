"""Statements of rated usage: each line shows its quantity and unit price, its discount by name
(free allowance, subsidies) and a 'how this was calculated' note, in the PDF and the portal, and
the cent rule still holds (a line is the exact sum of its charges, rounded once)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from accounts.services import roles_ensure
from billing.models import PI
from billing.rating import services as rating
from billing.rating.selectors import split_rounded
from billing.services import account_mapping_set
from statements.models import Statement
from tests.factories import ChargeFactory, PeriodFactory, SourceFactory

from .conftest import generate_and_render, pdf_text
from .test_pdf import assert_no_overlap

pytestmark = pytest.mark.django_db

AFTER = dt.datetime(2025, 4, 5, tzinfo=dt.UTC)
# 1000 CPUs × 210 h = 210,000 core-hours on cpu; 100 CPUs × 44,442 s = 1,234.5 core-hours on debug.
SACCT = [
    "1|bob|phys|cpu|normal|1000|cpu=1000|756000|2025-03-02T00:00:00|2025-03-10T18:00:00|COMPLETED",
    "2|bob|phys|debug|normal|100|cpu=100|44442|2025-03-20T00:00:00|2025-03-20T12:20:42|COMPLETED",
]


@pytest.fixture
def rated_month(tmp_path):
    SourceFactory(slug="hpc", display_name="HPC")
    rating.rate_add(source="hpc", unit="core-hour", price="0.0200", effective_from="2025-01")
    rating.rate_add(
        source="hpc",
        unit="core-hour",
        price="0.0200",
        tier="debug",
        effective_from="2025-01",
        free_quantity="100",
    )
    account_mapping_set(
        sub_account_id="phys", project_id="phys-lab", pi_email="bob@uni.edu", fund_org="F-2", source="hpc"
    )
    rating.subsidy_add(
        name="New Faculty Startup",
        percent="75",
        pis=["bob@uni.edu"],
        tier="cpu",
        source="hpc",
        effective_from="2025-01",
    )
    path = Path(tmp_path / "sacct.txt")
    path.write_text("\n".join(SACCT) + "\n")
    rating.usage_rate(kind="slurm", path=path, period="2025-03", source="hpc", now=AFTER)
    generate_and_render("2025-03")
    return Statement.objects.get()


def test_rated_lines_show_usage_price_and_named_discounts(rated_month):
    statement = rated_month
    lines = {line.service_name: line for line in statement.lines.all()}
    cpu, debug = lines["HPC cpu"], lines["HPC debug"]
    assert (cpu.list_amount, cpu.discount_amount, cpu.amount) == (
        Decimal("4200.00"),
        Decimal("3150.00"),
        Decimal("1050.00"),
    )
    assert cpu.rating == {
        "usage": [
            {
                "quantity": "210000",
                "unit": "core-hour",
                "price": "0.0200",
                "text": "210,000 core-hours @ $0.0200",
            }
        ],
        "reductions": [{"name": "New Faculty Startup", "amount": "3150.00"}],
    }
    assert (debug.list_amount, debug.discount_amount, debug.amount) == (
        Decimal("24.69"),
        Decimal("2.00"),
        Decimal("22.69"),
    )
    assert debug.rating["usage"][0]["text"] == "1,234.5 core-hours @ $0.0200"
    assert debug.rating["reductions"] == [{"name": "Free allowance", "amount": "2.00"}]
    assert (statement.list_total, statement.discount_total, statement.billed_total) == (
        Decimal("4224.69"),
        Decimal("3152.00"),
        Decimal("1072.69"),
    )


def test_the_pdf_shows_the_same(rated_month):
    with rated_month.pdf.open("rb") as fh:
        data = fh.read()
    assert_no_overlap(data)
    text = pdf_text(data)
    for expected in (
        "210,000 core-hours @ $0.0200",
        "1,234.5 core-hours @ $0.0200",
        "New Faculty Startup",
        "-$3,150.00",
        "Free allowance",
        "-$2.00",
        "How this was calculated",
        "$1,072.69",
    ):
        assert expected in text, expected


def test_the_portal_shows_the_same(rated_month):
    groups = roles_ensure()
    user = PI.objects.get(email="bob@uni.edu").user  # created (inactive) with the PI by the import
    user.is_active = True
    user.save()
    user.groups.add(groups["PI"])
    client = Client()
    client.force_login(user)
    page = client.get(reverse("portal:statement", args=[rated_month.pk])).content.decode()
    for expected in (
        "210,000 core-hours @ $0.0200",
        "New Faculty Startup",
        "−$3,150.00",
        "How this was calculated",
    ):
        assert expected in page, expected


def test_a_statement_without_rated_usage_is_unchanged_by_the_rating_columns(db):
    aws = SourceFactory(slug="aws")
    period = PeriodFactory(period="2025-01")
    ChargeFactory(period=period, source=aws, list_cost=Decimal("100"), billed_cost=Decimal("85"))
    generate_and_render("2025-01")
    statement = Statement.objects.get()
    assert [line.rating for line in statement.lines.all()] == [{}]
    with statement.pdf.open("rb") as fh:
        assert "How this was calculated" not in pdf_text(fh.read())
    again = generate_and_render("2025-01")
    assert again.count("unchanged") == 1


def test_named_parts_always_add_up_to_the_rounded_discount():
    # Two half cents round up to a cent each, but the line's discount is one cent.
    assert split_rounded([Decimal("0.005"), Decimal("0.005")], Decimal("0.01"), "USD") == [
        Decimal("0.00"),
        Decimal("0.01"),
    ]
    # The cent missing goes to the part with the largest remainder.
    assert split_rounded([Decimal("2.003"), Decimal("1.004")], Decimal("3.01"), "USD") == [
        Decimal("2.00"),
        Decimal("1.01"),
    ]
    parts = [Decimal("0.3333333333")] * 3
    assert sum(split_rounded(parts, Decimal("1.00"), "USD")) == Decimal("1.00")
    assert split_rounded([Decimal("5")], Decimal("5"), "JPY") == [Decimal("5")]
