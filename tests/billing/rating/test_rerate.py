"""Rates and subsidies over time: a rate change from a month on leaves earlier periods (charges and
statements) as they were; re-rating an open period is logged; a capped subsidy stops exactly at its
cap across the months of a fiscal year and starts again in the next; cloud imports get subsidies."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from billing.models import BillingPeriod, Charge, Import
from billing.rating import services
from billing.rating.models import ChargeSubsidy, Rate, Rerate
from billing.services import account_mapping_set, import_file, period_close, period_reopen
from chargeback.errors import Refused
from statements.models import Statement
from statements.services import statements_generate
from tests.cli import run
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db
AFTER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def sacct(tmp_path: Path, month: str, core_hours: int, name: str = "") -> Path:
    """One job of `core_hours` × 3600 CPU-seconds (one hour, many CPUs) on the 10th of the month."""
    path = tmp_path / (name or f"sacct_{month}.txt")
    path.write_text(
        f"1|bob|phys|cpu|normal|{core_hours}|cpu={core_hours}|3600|{month}-10T00:00:00|{month}-10T01:00:00|COMPLETED\n"
    )
    return path


@pytest.fixture
def hpc(db):
    source = SourceFactory(slug="hpc", display_name="HPC")
    account_mapping_set(
        sub_account_id="phys", project_id="phys-lab", pi_email="bob@uni.edu", fund_org="F-2", source="hpc"
    )
    return source


def reopened(period: str) -> None:
    """Open again after generate (which closes an open period on this branch; not after issue 11)."""
    if BillingPeriod.objects.get(period=period).status == BillingPeriod.Status.CLOSED:
        period_reopen(period=period, reason="test: more to import")


def rate(tmp_path: Path, month: str, core_hours: int) -> services.UsageOutcome:
    return services.usage_rate(
        kind="slurm", path=sacct(tmp_path, month, core_hours), period=month, source="hpc", now=AFTER
    )


def test_a_rate_change_from_a_month_leaves_earlier_periods_unchanged(hpc, tmp_path):
    services.rate_add(source="hpc", unit="core-hour", price="0.0200", effective_from="2025-07")
    rate(tmp_path, "2025-08", 1000)
    statements_generate(period="2025-08")
    august = Statement.objects.get(period__period="2025-08")
    assert august.billed_total == Decimal("20.00")

    services.rate_add(source="hpc", unit="core-hour", price="0.0300", effective_from="2026-01")
    rate(tmp_path, "2026-01", 1000)
    assert Charge.objects.get(period__period="2026-01").billed_cost == Decimal("30")
    # August keeps its charge and statement; generating it again changes nothing.
    assert Charge.objects.get(period__period="2025-08").billed_cost == Decimal("20")
    outcome = statements_generate(period="2025-08")
    assert outcome.count("unchanged") == 1 and Statement.objects.filter(period__period="2025-08").count() == 1
    # Re-rating August (open) uses the rate in effect for August, still $0.0200.
    reopened("2025-08")
    services.usage_rerate(period="2025-08", reason="check after the January rate")
    assert Charge.objects.get(period__period="2025-08").billed_cost == Decimal("20")
    assert statements_generate(period="2025-08").count("unchanged") == 1


def test_an_edited_rate_changes_a_rated_period_only_when_it_is_re_rated_and_that_is_logged(hpc, tmp_path):
    services.rate_add(source="hpc", unit="core-hour", price="0.0200", effective_from="2025-07")
    first = rate(tmp_path, "2025-09", 1000)
    services.rate_update(rate_id=Rate.objects.get().pk, price="0.0250")
    assert Charge.objects.get().billed_cost == Decimal("20")  # rated periods keep their charges

    result = run(
        "usage",
        "rerate",
        "-p",
        "2025-09",
        "--reason",
        "board approved the FY26 rate late",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    document = result.json()
    assert (
        document["billed_before"]["amount"] == "20.0000000000"
        and document["billed_after"]["amount"] == "25.0000000000"
    )
    log = Rerate.objects.get()
    assert log.reason == "board approved the FY26 rate late" and log.actor_name.startswith("cli")
    assert log.details[0]["replaced_import"] == first.imported.import_id
    assert Import.objects.get(pk=first.imported.import_id).status == Import.Status.SUPERSEDED
    assert Charge.objects.get().billed_cost == Decimal("25")
    listed = run("usage", "list", "-p", "2025-09").out
    assert "re-rated 2025-09" in listed and "board approved" in listed


def test_rerate_needs_an_open_period_and_a_reason(hpc, tmp_path):
    services.rate_add(source="hpc", unit="core-hour", price="0.0200", effective_from="2025-07")
    rate(tmp_path, "2025-09", 1000)
    with pytest.raises(Refused, match="a reason is required"):
        services.usage_rerate(period="2025-09", reason=" ")
    period_close(period="2025-09")
    with pytest.raises(Refused, match="only an open period can be re-rated; reopen it first"):
        services.usage_rerate(period="2025-09", reason="late rate")
    assert not Rerate.objects.exists()
    BillingPeriod.objects.create(period="2025-10")
    with pytest.raises(Refused, match="no rated usage"):
        services.usage_rerate(period="2025-10", reason="x")


def test_a_capped_subsidy_stops_exactly_at_its_cap_and_starts_again_next_fiscal_year(hpc, tmp_path):
    """Cap $100 per project per fiscal year (July–June); each month lists $45 (2,250 core-h at $0.02)."""
    services.rate_add(source="hpc", unit="core-hour", price="0.0200", effective_from="2025-01")
    services.subsidy_add(
        name="Startup", percent="100", pis=["bob@uni.edu"], cap="100", effective_from="2025-01"
    )
    billed = {
        month: rate(tmp_path, month, 2250).billed_total
        for month in ("2025-07", "2025-08", "2025-09", "2025-10")
    }
    assert billed == {
        "2025-07": Decimal("0"),  # 45 paid, 45 so far
        "2025-08": Decimal("0"),  # 45 paid, 90 so far
        "2025-09": Decimal("35"),  # 10 paid: the cap is reached exactly
        "2025-10": Decimal("45"),  # nothing left
    }
    paid = {c.charge.period.period: c.amount for c in ChargeSubsidy.objects.select_related("charge__period")}
    assert paid == {"2025-07": Decimal("45"), "2025-08": Decimal("45"), "2025-09": Decimal("10")}
    assert sum(paid.values()) == Decimal("100")
    # A new fiscal year: the cap starts again.
    assert rate(tmp_path, "2026-07", 2250).billed_total == Decimal("0")
    # Re-rating September with unchanged rules gives the same amounts: its own subsidy is given back first.
    services.usage_rerate(period="2025-09", reason="unchanged rules")
    assert Charge.objects.get(period__period="2025-09").billed_cost == Decimal("35")


def test_the_fiscal_year_start_is_a_setting(hpc, tmp_path, settings):
    settings.OPENCHARGEBACK_FISCAL_YEAR_START = 1
    services.rate_add(source="hpc", unit="core-hour", price="0.0200", effective_from="2025-01")
    services.subsidy_add(
        name="Startup", percent="100", pis=["bob@uni.edu"], cap="50", effective_from="2025-01"
    )
    assert rate(tmp_path, "2025-12", 2250).billed_total == Decimal("0")
    assert rate(tmp_path, "2026-01", 2250).billed_total == Decimal("0")  # calendar years: a new cap


def test_a_subsidy_applies_to_an_imported_cloud_file_and_is_stated(db, tmp_path):
    SourceFactory(slug="aws")
    services.subsidy_add(
        name="Cloud Credits",
        percent="50",
        source="aws",
        projects=["engine"],
        cap="30",
        effective_from="2025-01",
    )
    tags = '"{""pi_email"": ""ada@uni.edu"", ""project_id"": ""engine"", ""fund_org"": ""ENG-1""}"'
    other = '"{""pi_email"": ""zed@uni.edu"", ""project_id"": ""other"", ""fund_org"": ""ENG-2""}"'
    path = tmp_path / "aws_2025-02.csv"
    path.write_text(
        "BillingPeriodStart,ListCost,BilledCost,ResourceId,ServiceName,Tags\n"
        f"2025-02-01,50.00,40.00,i-1,Amazon EC2,{tags}\n"
        f"2025-02-01,50.00,40.00,i-2,Amazon EC2,{tags}\n"
        f"2025-02-01,10.00,10.00,i-3,Amazon EC2,{other}\n"
    )
    outcome = import_file(path=path, source="aws", period="2025-02")
    charges = {c.resource_id: c for c in Charge.objects.all()}
    # 50 % of 40 = 20 on i-1; only 10 of the $30 cap is left for i-2; "other" is out of scope.
    assert [(charges[r].list_cost, charges[r].billed_cost) for r in ("i-1", "i-2", "i-3")] == [
        (Decimal("50"), Decimal("20")),
        (Decimal("50"), Decimal("30")),
        (Decimal("10"), Decimal("10")),
    ]
    assert outcome.billed_total == Decimal("60") and any("Cloud Credits" in w for w in outcome.warnings)
    statements_generate(period="2025-02")
    line = Statement.objects.get(project_code="engine").lines.get()
    assert line.rating["reductions"] == [
        {"name": "Cloud Credits", "amount": "30.00"},
        {"name": "Other discount", "amount": "20.00"},
    ]
    # The same file imported again supersedes: the subsidy is worked out again, not twice.
    reopened("2025-02")
    import_file(path=path, source="aws", period="2025-02", force=True)
    assert sorted(Charge.objects.values_list("billed_cost", flat=True)) == [
        Decimal("10"),
        Decimal("20"),
        Decimal("30"),
    ]
    assert ChargeSubsidy.objects.count() == 2


def test_subsidies_that_do_not_match_the_charges_written_fail_the_import_whole(db, tmp_path, monkeypatch):
    """The subsidies are recorded on the import's charges by their write order; each subsidised
    charge's billed amount is checked on the way, and a mismatch fails the import with nothing
    written (here the expected amounts are made wrong by a cent)."""
    from billing.ingest.errors import IngestError
    from billing.rating import ingest as rating_ingest

    SourceFactory(slug="aws")
    services.subsidy_add(name="Cloud Credits", percent="50", source="aws", effective_from="2025-01")
    tags = '"{""pi_email"": ""ada@uni.edu"", ""project_id"": ""engine"", ""fund_org"": ""ENG-1""}"'
    path = tmp_path / "aws_2025-02.csv"
    path.write_text(
        "BillingPeriodStart,ListCost,BilledCost,ResourceId,ServiceName,Tags\n"
        + "".join(f"2025-02-01,50.00,40.00,i-{n},Amazon EC2,{tags}\n" for n in range(3))
    )
    real_write = rating_ingest.ImportSubsidies.write

    def write_with_a_wrong_amount(self, import_id):
        billed = self.billed.column("billed_cost").to_pylist()
        billed[1] += Decimal("0.01")
        self.billed = self.billed.set_column(1, "billed_cost", pa.array(billed, self.billed.column(1).type))
        return real_write(self, import_id)

    monkeypatch.setattr(rating_ingest.ImportSubsidies, "write", write_with_a_wrong_amount)
    with pytest.raises(IngestError, match="could not be matched to the charges written"):
        import_file(path=path, source="aws", period="2025-02")
    assert Charge.objects.count() == 0 and ChargeSubsidy.objects.count() == 0
    assert Import.objects.get().status == Import.Status.FAILED

    monkeypatch.setattr(rating_ingest.ImportSubsidies, "write", real_write)
    import_file(path=path, source="aws", period="2025-02", force=True)
    assert sorted(Charge.objects.values_list("billed_cost", flat=True)) == [Decimal("20")] * 3
    assert sorted(ChargeSubsidy.objects.values_list("amount", flat=True)) == [Decimal("20")] * 3


def test_rerate_carries_review_decisions_to_unchanged_charges(hpc, tmp_path):
    services.rate_add(source="hpc", unit="core-hour", price="0.0200", effective_from="2025-07")
    path = tmp_path / "sacct_2025-09.txt"
    path.write_text(
        "1|bob|phys|cpu|normal|10|cpu=10|3600|2025-09-10T00:00:00|2025-09-10T01:00:00|COMPLETED\n"
        "2|eve|guests|cpu|normal|10|cpu=10|3600|2025-09-10T00:00:00|2025-09-10T01:00:00|COMPLETED\n"
    )
    services.usage_rate(kind="slurm", path=path, period="2025-09", source="hpc", now=AFTER)
    guests = Charge.objects.get(sub_account_id="guests")
    assert guests.review_state == Charge.ReviewState.FLAGGED  # nobody mapped the guests account
    from billing.services import charges_approve

    charges_approve(charge_ids=[guests.pk], note="visitors' hours, billed to the department")
    outcome = services.usage_rerate(period="2025-09", reason="subsidy review")
    assert outcome.files[0]["decisions_carried"] == 1
    assert Charge.objects.get(sub_account_id="guests").review_state == Charge.ReviewState.APPROVED
