"""Storage quotas: a hand-made quota report rated into charges, amounts worked out by hand.

Period 2025-03. Rates of source `storage`: TB-month $5.0000 on class `project` with 1 TB-month free
per project per month; TiB-month $2.0000 on class `scratch`. chem-md is a project id; bob-scratch is
a mapped sub-account of project phys-lab (Bob, 75 % subsidy); nobody is neither.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from billing.ingest.errors import IngestError
from billing.models import Charge, Project
from billing.rating import services
from billing.rating.models import UsageFile
from billing.services import account_mapping_set
from chargeback.errors import Refused
from tests.cli import run
from tests.factories import PIFactory, ProjectFactory, SourceFactory

pytestmark = pytest.mark.django_db

QUOTA = [
    "project,class,used_tb,date",
    "chem-md,project,10,2025-03-01",
    "chem-md,project,20,2025-03-15",
    "chem-md,project,30,2025-03-31",
    "chem-md,project,99,2025-02-28",  # another month: skipped
    "bob-scratch,scratch,5.5,",  # no date: the month's value
    "nobody,project,1,2025-03-10",
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def storage(db):
    source = SourceFactory(slug="storage", display_name="Research storage")
    services.rate_add(
        source="storage",
        unit="tb-month",
        price="5",
        tier="project",
        effective_from="2025-01",
        free_quantity="1",
    )
    services.rate_add(source="storage", unit="tib-month", price="2", tier="scratch", effective_from="2025-01")
    ProjectFactory(project_id="chem-md", pi=PIFactory(email="alice@uni.edu"))
    account_mapping_set(
        sub_account_id="bob-scratch", project_id="phys-lab", pi_email="bob@uni.edu", source="storage"
    )
    services.subsidy_add(
        name="New Faculty Startup", percent="75", pis=["bob@uni.edu"], effective_from="2025-01"
    )
    return source


def test_a_hand_made_quota_report_is_rated_to_the_cent(storage, tmp_path):
    outcome = services.usage_rate(
        kind="storage", path=write(tmp_path / "quota.csv", QUOTA), period="2025-03", source="storage"
    )
    assert outcome.summary == {"lines": 6, "samples_in_period": 5, "samples_other_months": 1, "resources": 3}
    charges = {c.resource_name: c for c in Charge.objects.all()}
    # chem-md: mean of 10, 20, 30 TB = 20 TB-months at $5 = $100; 1 free = $5 off.
    chem = charges["chem-md/project TB-months"]
    assert (chem.quantity, chem.list_cost, chem.billed_cost, chem.project_code) == (
        Decimal("20"),
        Decimal("100"),
        Decimal("95"),
        "chem-md",
    )
    assert chem.attribution_source == "project" and chem.service_name == "Storage project"
    assert chem.service_category == "Storage" and chem.unit == "TB-months"
    # bob-scratch: 5.5 × 10¹² / 2⁴⁰ = 5.00222085975… → 5.002221 TiB-months at $2 = $10.004442; 75 % off.
    scratch = charges["bob-scratch/scratch TiB-months"]
    assert (scratch.quantity, scratch.list_cost, scratch.billed_cost, scratch.project_code) == (
        Decimal("5.002221"),
        Decimal("10.004442"),
        Decimal("2.5011105"),
        "phys-lab",
    )
    # nobody: 1 TB-month at $5, unattributed (no allowance, no subsidy) and flagged.
    nobody = charges["nobody/project TB-months"]
    assert (nobody.list_cost, nobody.billed_cost, nobody.review_state) == (
        Decimal("5"),
        Decimal("5"),
        "flagged",
    )
    assert outcome.billed_total == Decimal("102.5011105")
    assert UsageFile.objects.get().kind == "storage"


@pytest.mark.parametrize(
    ("column", "value", "unit_bytes"),
    [("used_bytes", "2000000000000", 1), ("used_gb", "2000", 10**9), ("used_tb", "2", 10**12)],
)
def test_every_amount_column_means_the_same(storage, tmp_path, column, value, unit_bytes):
    lines = [f"date,{column},Project", f"2025-03-05,{value},chem-md"]
    services.rate_add(source="storage", unit="gb-month", price="0.0100", effective_from="2025-01")
    outcome = services.usage_rate(
        kind="storage",
        path=write(tmp_path / "q.csv", lines),
        period="2025-03",
        source="storage",
        dry_run=True,
    )
    assert [(r.unit, r.quantity, r.list_cost) for r in outcome.rows] == [
        ("gb-month", Decimal("2000"), Decimal("20"))
    ]


def test_bad_quota_lines_are_refused_with_line_numbers(storage, tmp_path):
    lines = [
        "project,used_tb,date",
        "chem-md,-1,2025-03-01",
        ",3,2025-03-01",
        "chem-md,3,2025-03-32",
        "chem-md,lots,2025-03-01",
        "chem-md,3",
        "chem-md,3,2025-03-02",
    ]
    with pytest.raises(IngestError) as raised:
        services.usage_rate(
            kind="storage", path=write(tmp_path / "q.csv", lines), period="2025-03", source="storage"
        )
    assert [(e.line, e.column) for e in raised.value.errors] == [
        (2, "used_tb"),
        (3, "project"),
        (4, "date"),
        (5, "used_tb"),
        (6, ""),
    ]
    assert not Charge.objects.exists()
    with pytest.raises(IngestError, match="needs exactly one of the columns"):
        services.usage_rate(
            kind="storage",
            path=write(tmp_path / "q.csv", ["project,used_gb,used_tb", "a,1,2"]),
            period="2025-03",
            source="storage",
        )
    with pytest.raises(IngestError, match="missing column project"):
        services.usage_rate(
            kind="storage",
            path=write(tmp_path / "q.csv", ["name,used_gb", "a,1"]),
            period="2025-03",
            source="storage",
        )


def test_competing_storage_units_for_a_tier_are_refused(storage, tmp_path):
    services.rate_add(
        source="storage", unit="gb-month", price="0.0050", tier="project", effective_from="2025-02"
    )
    with pytest.raises(Refused, match="storage rates in several units"):
        services.usage_rate(
            kind="storage", path=write(tmp_path / "q.csv", QUOTA), period="2025-03", source="storage"
        )
    assert not Project.objects.filter(project_id="nobody").exists()


def test_usage_storage_cli(storage, tmp_path):
    result = run(
        "usage", "storage", write(tmp_path / "quota.csv", QUOTA), "-p", "2025-03", "--format", "json"
    )
    assert result.code == 0, result.err
    document = result.json()
    assert document["totals"]["list"] == {"amount": "115.0044420000", "cents": 11500}
    assert document["totals"]["subsidies"] == {
        "New Faculty Startup": {"amount": "7.5033315000", "cents": 750}
    }
    assert document["import"]["charges"] == 3
