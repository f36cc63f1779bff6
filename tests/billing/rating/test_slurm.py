"""Slurm usage: a hand-made sacct file rated into charges, every quantity and amount worked out by hand.

Period 2025-03, cluster time zone UTC, rated "now" = 2025-04-05 (after the period) unless said.
Rates: core-hour $0.0200 on every partition with 100 core-hours free per project per month;
core-hour $0.0100 on the gpu partition (no free allowance); GPU-hour $1.5000 on gpu.
Accounts chem, phys and astro are mapped to projects; ghost is not. Bob (phys) has a 75 % subsidy.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from billing.ingest.errors import IngestError
from billing.models import Charge, Import
from billing.rating import services
from billing.rating.models import ChargeRating, ChargeSubsidy, UsageFile
from billing.services import account_mapping_set
from chargeback.errors import Refused
from tests.cli import run
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db

HEADER = "JobID|User|Account|Partition|QOS|AllocCPUS|AllocTRES|ElapsedRaw|Start|End|State"
AFTER = dt.datetime(2025, 4, 5, tzinfo=dt.UTC)
SACCT = [
    HEADER,
    # chem/cpu: 64 × 7200 s = 128 core-h; 32 × 1800 = 16 (cancelled); 16 × 900 = 4 (failed): 148 core-h.
    "1001|alice|chem|cpu|normal|64|billing=64,cpu=64,mem=256G,node=1|7200|2025-03-03T10:00:00|2025-03-03T12:00:00|COMPLETED",
    "1001.batch|alice|chem|cpu|normal|64|cpu=64,mem=256G,node=1|7200|2025-03-03T10:00:00|2025-03-03T12:00:00|COMPLETED",
    "1001.0|alice|chem|cpu|normal|64|cpu=64,mem=256G,node=1|7190|2025-03-03T10:00:05|2025-03-03T11:59:55|COMPLETED",
    "1002|alice|chem|cpu|normal|32|billing=32,cpu=32,node=1|1800|2025-03-04T00:00:00|2025-03-04T00:30:00|CANCELLED by 1001",
    "1003|alice|chem|cpu|normal|16|billing=16,cpu=16,node=1|900|2025-03-05T00:00:00|2025-03-05T00:15:00|FAILED",
    # phys/cpu: node-failed and zero-length jobs charge nothing.
    "1004|bob|phys|cpu|normal|128|billing=128,cpu=128,node=1|3600|2025-03-06T00:00:00|2025-03-06T01:00:00|NODE_FAIL",
    "1005|bob|phys|cpu|normal|4|billing=4,cpu=4,node=1|0|2025-03-07T00:00:00|2025-03-07T00:00:00|CANCELLED by 0",
    # Month-spanning: 2 h job, 1 h of it in March, 48 CPUs: 48 core-h.
    "1006|bob|phys|cpu|normal|48|billing=48,cpu=48,node=1|7200|2025-02-28T23:00:00|2025-03-01T01:00:00|COMPLETED",
    # 24 h job, 12 h in March, 10 CPUs: 120 core-h.
    "1007|bob|phys|cpu|normal|10|billing=10,cpu=10,node=1|86400|2025-03-31T12:00:00|2025-04-01T12:00:00|TIMEOUT",
    # Suspended: 3 h wall, ElapsedRaw 5400, 1 h of the wall in March: 5400 × 1/3 = 1800 s × 4 CPUs = 2 core-h.
    "1012|bob|phys|cpu|normal|4|billing=4,cpu=4,node=1|5400|2025-03-31T23:00:00|2025-04-01T02:00:00|COMPLETED",
    # 50 min wall, ElapsedRaw 1000, 1000 s of the wall in March: 1000 × 1000/3000 = 1000/3 s, 1 CPU.
    "1013|bob|phys|cpu|normal|1|billing=1,cpu=1,node=1|1000|2025-03-31T23:43:20|2025-04-01T00:33:20|COMPLETED",
    # phys/gpu: typed and untyped gres together count once (2 GPUs): 8 × 5400 = 12 core-h, 2 × 5400 = 3 GPU-h.
    "1008|bob|phys|gpu|normal|8|billing=8,cpu=8,gres/gpu=2,gres/gpu:a100=2,mem=64G,node=1|5400|2025-03-10T00:00:00|2025-03-10T01:30:00|COMPLETED",
    # Typed only: 1 GPU, 4 CPUs, 1 h: 4 core-h, 1 GPU-h.
    "1009|bob|phys|gpu|normal|4|billing=4,cpu=4,gres/gpu:v100=1,node=1|3600|2025-03-11T00:00:00|2025-03-11T01:00:00|COMPLETED",
    # Untyped only: 4 GPUs, 2 CPUs, 30 min: 1 core-h, 2 GPU-h.
    "1014|bob|phys|gpu|normal|2|billing=2,cpu=2,gres/gpu=4,node=1|1800|2025-03-12T00:00:00|2025-03-12T00:30:00|OUT_OF_MEMORY",
    # astro/cpu: still running since Mar 30 00:00 (ElapsedRaw ignored): to the end of March, 48 h × 3 = 144 core-h.
    "1010|carol|astro|cpu|normal|3|billing=3,cpu=3,node=1|5000|2025-03-30T00:00:00|Unknown|RUNNING",
    # Pending: never started, charges nothing.
    "1015|carol|astro|cpu|normal|3|billing=3,cpu=3,node=1|0|Unknown|Unknown|PENDING",
    # Ended before March: outside the period.
    "1016|carol|astro|cpu|normal|3|billing=3,cpu=3,node=1|3600|2025-02-10T00:00:00|2025-02-10T01:00:00|COMPLETED",
    # An account nobody mapped: 1 core-h, kept unattributed and flagged.
    "1011|dave|ghost|cpu|normal|1|billing=1,cpu=1,node=1|3600|2025-03-20T00:00:00|2025-03-20T01:00:00|COMPLETED",
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cluster(db):
    hpc = SourceFactory(slug="hpc", display_name="HPC")
    services.rate_add(
        source="hpc", unit="core-hour", price="0.0200", effective_from="2025-01", free_quantity="100"
    )
    services.rate_add(source="hpc", unit="core-hour", price="0.0100", tier="gpu", effective_from="2025-01")
    services.rate_add(source="hpc", unit="gpu-hour", price="1.5000", tier="gpu", effective_from="2025-01")
    account_mapping_set(
        sub_account_id="chem", project_id="chem-md", pi_email="alice@uni.edu", fund_org="F-1", source="hpc"
    )
    account_mapping_set(
        sub_account_id="phys", project_id="phys-lab", pi_email="bob@uni.edu", fund_org="F-2", source="hpc"
    )
    account_mapping_set(sub_account_id="astro", project_id="astro", pi_email="carol@uni.edu", fund_org="F-3")
    services.subsidy_add(
        name="New Faculty Startup", percent="75", pis=["bob@uni.edu"], effective_from="2025-01"
    )
    return hpc


def charges_by_resource() -> dict[str, Charge]:
    return {c.resource_name: c for c in Charge.objects.select_related("rating")}


def test_a_hand_made_sacct_file_is_rated_to_the_cent(cluster, tmp_path):
    outcome = services.usage_rate(
        kind="slurm",
        path=write(tmp_path / "sacct_2025-03.txt", SACCT),
        period="2025-03",
        source="hpc",
        now=AFTER,
    )
    assert outcome.summary == {
        "lines": 18,
        "jobs": 16,
        "billed_jobs": 12,
        "steps_skipped": 2,
        "zero_length": 1,
        "not_billed": {"NODE_FAIL": 1},
        "outside_period": 1,
        "running": 1,
        "split_at_month_boundary": 4,
    }
    charges = charges_by_resource()
    expected = {
        # resource: quantity, list, billed, project
        "chem/cpu core-hours": ("148", "2.96", "0.96", "chem-md"),  # 100 free: 2.00 off
        # 48 + 120 + 2 + 1000/10800 = 170.0925925… core-h; 100 free; 75 % of 1.40185186 = 1.051388895.
        "phys/cpu core-hours": ("170.092593", "3.40185186", "0.350462965", "phys-lab"),
        "phys/gpu core-hours": ("17", "0.17", "0.0425", "phys-lab"),  # gpu rate $0.0100, no free; 75 % off
        "phys/gpu GPU-hours": ("6", "9.00", "2.25", "phys-lab"),  # 3 + 1 + 2 GPU-h at $1.5000; 75 % off
        "astro/cpu core-hours": ("144", "2.88", "0.88", "astro"),
        "ghost/cpu core-hours": ("1", "0.02", "0.02", ""),  # unmapped: no allowance, no subsidy
    }
    assert set(charges) == set(expected)
    for name, (quantity, listed, billed, project) in expected.items():
        charge = charges[name]
        assert (charge.quantity, charge.list_cost, charge.billed_cost, charge.project_code) == (
            Decimal(quantity),
            Decimal(listed),
            Decimal(billed),
            project,
        ), name
        assert charge.rating.quantity == Decimal(quantity) and charge.effective_cost == charge.billed_cost
    phys = charges["phys/cpu core-hours"]
    assert (phys.resource_id, phys.service_name, phys.sub_account_id, phys.service_category, phys.unit) == (
        "phys/cpu",
        "HPC cpu",
        "phys",
        "Compute",
        "core-hours",
    )
    assert phys.rating.free_quantity == Decimal("100") and phys.rating.free_amount == Decimal("2.00")
    assert phys.tags["subsidy:New Faculty Startup"] == "1.0513888950"
    assert list(ChargeSubsidy.objects.filter(charge=phys).values_list("name", "amount")) == [
        ("New Faculty Startup", Decimal("1.051388895"))
    ]
    ghost = charges["ghost/cpu core-hours"]
    assert (
        ghost.review_state == Charge.ReviewState.FLAGGED
        and ghost.pi_id is None
        and "unattributed" in ghost.flag_summary
    )
    assert outcome.list_total == Decimal("18.43185186")
    assert outcome.billed_total == Decimal("4.502962965")
    record = Import.objects.get()
    assert record.status == Import.Status.COMPLETED and record.billed_total == outcome.billed_total
    assert record.original_name == "sacct_2025-03.txt.focus.csv"
    usage = UsageFile.objects.get()
    assert (usage.kind, usage.original_name, usage.import_run_id) == ("slurm", "sacct_2025-03.txt", record.pk)
    assert usage.file.read().decode().splitlines() == SACCT


def test_a_running_job_counts_up_to_now_when_now_is_inside_the_period(cluster, tmp_path):
    lines = ["2001|carol|astro|cpu|normal|2|cpu=2|100|2025-03-14T12:00:00|Unknown|RUNNING"]
    now = dt.datetime(2025, 3, 15, tzinfo=dt.UTC)
    outcome = services.usage_rate(
        kind="slurm",
        path=write(tmp_path / "s.txt", lines),
        period="2025-03",
        source="hpc",
        dry_run=True,
        now=now,
    )
    assert [(r.usage.resource_id, r.quantity) for r in outcome.rows] == [("astro/cpu", Decimal("24"))]
    assert not Charge.objects.exists() and not UsageFile.objects.exists()  # a dry run writes nothing


def test_month_boundaries_are_in_the_cluster_time_zone(cluster, tmp_path, settings):
    """New York: clocks go back on 2025-11-02, so 20:00 Oct 31 → 08:00 Nov 2 lasts 37 h; 4 h are in October."""
    settings.OPENCHARGEBACK_SLURM_TIME_ZONE = "America/New_York"
    lines = ["3001|carol|astro|cpu|normal|1|cpu=1|133200|2025-10-31T20:00:00|2025-11-02T08:00:00|COMPLETED"]
    path = write(tmp_path / "s.txt", lines)
    october = services.usage_rate(
        kind="slurm", path=path, period="2025-10", source="hpc", dry_run=True, now=AFTER
    )
    november = services.usage_rate(
        kind="slurm", path=path, period="2025-11", source="hpc", dry_run=True, now=AFTER
    )
    assert october.rows[0].quantity == Decimal("4") and november.rows[0].quantity == Decimal("33")


def test_malformed_lines_are_refused_with_their_line_numbers_and_nothing_is_written(cluster, tmp_path):
    lines = [
        SACCT[1],
        "1002|alice|chem|cpu|normal|lots|cpu=4|60|2025-03-04T00:00:00|2025-03-04T00:01:00|COMPLETED",
        "1003|alice|chem|cpu|normal|4|cpu=4",
        "1004|alice|chem|cpu|normal|4|cpu=4|60|2025-03-32T00:00:00|2025-03-04T00:01:00|COMPLETED",
        "",
        "1005|alice||cpu|normal|4|cpu=4|60|2025-03-04T00:00:00|2025-03-04T00:01:00|COMPLETED",
        "1006|alice|chem|cpu|normal|4|cpu=4|60|Unknown|Unknown|PENDING",
        "1007|alice|chem|cpu|normal|4|cpu=4|-5|2025-03-04T00:00:00|2025-03-04T00:01:00|COMPLETED",
    ]
    with pytest.raises(IngestError) as raised:
        services.usage_rate(
            kind="slurm", path=write(tmp_path / "bad.txt", lines), period="2025-03", source="hpc"
        )
    errors = [(e.line, e.column, e.value) for e in raised.value.errors]
    assert errors == [
        (2, "AllocCPUS", "lots"),
        (3, "", "1003|alice|chem|cpu|normal|4|cpu=4"),
        (4, "Start", "2025-03-32T00:00:00"),
        (6, "Account", ""),
        (8, "ElapsedRaw", "-5"),
    ]
    assert "6 malformed lines" not in str(raised.value) and "5 malformed lines" in str(raised.value)
    assert not Charge.objects.exists() and not UsageFile.objects.exists()
    assert not Import.objects.filter(status=Import.Status.COMPLETED).exists()


def test_a_job_without_start_but_with_elapsed_time_is_malformed(cluster, tmp_path):
    lines = ["1|a|chem|cpu|normal|4|cpu=4|60|Unknown|Unknown|RUNNING"]
    with pytest.raises(IngestError) as raised:
        services.usage_rate(
            kind="slurm", path=write(tmp_path / "s.txt", lines), period="2025-03", source="hpc"
        )
    assert [(e.line, e.column, e.message) for e in raised.value.errors] == [
        (1, "Start", "no Start time but ElapsedRaw is not 0")
    ]


def test_a_header_in_another_order_and_other_separators_are_refused(cluster, tmp_path):
    other = "JobID|Account|User|Partition|QOS|AllocCPUS|AllocTRES|ElapsedRaw|Start|End|State"
    with pytest.raises(IngestError, match=re.escape("expected exactly JobID|User|Account")):
        services.usage_rate(
            kind="slurm", path=write(tmp_path / "h.txt", [other]), period="2025-03", source="hpc"
        )
    with pytest.raises(IngestError, match="not pipe-separated"):
        services.usage_rate(
            kind="slurm", path=write(tmp_path / "c.txt", ["1,a,b"]), period="2025-03", source="hpc"
        )
    with pytest.raises(IngestError, match="empty"):
        services.usage_rate(kind="slurm", path=write(tmp_path / "e.txt", []), period="2025-03", source="hpc")


def test_every_unit_and_tier_without_a_rate_is_named(cluster, tmp_path):
    lines = [
        "1|a|chem|bigmem|normal|4|cpu=4,gres/gpu=1|60|2025-03-04T00:00:00|2025-03-04T00:01:00|COMPLETED",
        "2|a|chem|gpu|normal|4|cpu=4|60|2025-03-04T00:00:00|2025-03-04T00:01:00|COMPLETED",
    ]
    december = [line.replace("2025-03-04", "2024-12-04") for line in lines]  # before every rate
    with pytest.raises(Refused) as raised:
        services.usage_rate(
            kind="slurm", path=write(tmp_path / "d.txt", december), period="2024-12", source="hpc"
        )
    message = str(raised.value)
    assert (
        "no rate for hpc in 2024-12: core-hour on tier 'bigmem', core-hour on tier 'gpu', gpu-hour on tier 'bigmem'"
        in message
    )
    with pytest.raises(Refused, match="gpu-hour on tier 'bigmem'"):
        services.usage_rate(
            kind="slurm", path=write(tmp_path / "s.txt", lines), period="2025-03", source="hpc"
        )
    assert not Import.objects.exists()


def test_not_billed_states_are_a_setting(cluster, tmp_path, settings):
    settings.OPENCHARGEBACK_SLURM_NOT_BILLED_STATES = ["NODE_FAIL", "cancelled"]
    outcome = services.usage_rate(
        kind="slurm",
        path=write(tmp_path / "s.txt", SACCT),
        period="2025-03",
        source="hpc",
        dry_run=True,
        now=AFTER,
    )
    assert outcome.summary["not_billed"] == {"CANCELLED": 2, "NODE_FAIL": 1}
    chem = next(r for r in outcome.rows if r.usage.resource_id == "chem/cpu")
    assert chem.quantity == Decimal("132")  # 148 − the cancelled job's 16


def test_the_same_file_again_is_refused_and_the_same_name_replaces(cluster, tmp_path):
    path = write(tmp_path / "sacct_2025-03.txt", SACCT)
    first = services.usage_rate(kind="slurm", path=path, period="2025-03", source="hpc", now=AFTER)
    with pytest.raises(Refused, match="already rated as usage file"):
        services.usage_rate(kind="slurm", path=path, period="2025-03", source="hpc", now=AFTER)
    # The same export rated for another month is not a duplicate: April gets its share of the jobs
    # crossing into it and of the one still running.
    april = services.usage_rate(kind="slurm", path=path, period="2025-04", source="hpc", now=AFTER)
    assert april.imported.supersedes == [] and {r.usage.resource_id for r in april.rows} == {
        "phys/cpu",
        "astro/cpu",
    }
    ghost = Charge.objects.get(resource_id="ghost/cpu")
    from billing.services import charges_approve

    charges_approve(charge_ids=[ghost.pk], note="dave's test account, billed anyway")
    write(
        path,
        [*SACCT, "1020|alice|chem|cpu|normal|1|cpu=1|3600|2025-03-21T00:00:00|2025-03-21T01:00:00|COMPLETED"],
    )
    second = services.usage_rate(kind="slurm", path=path, period="2025-03", source="hpc", now=AFTER)
    assert second.replaces_usage_file == first.usage_file_id
    assert second.imported.supersedes == [first.imported.import_id] and second.imported.decisions_carried == 1
    assert Charge.objects.get(resource_id="ghost/cpu").review_state == Charge.ReviewState.APPROVED
    assert Charge.objects.get(resource_id="chem/cpu").quantity == Decimal("149")
    other = write(
        tmp_path / "sacct_extra.txt",
        ["9|a|chem|cpu|normal|1|cpu=1|3600|2025-03-22T00:00:00|2025-03-22T01:00:00|COMPLETED"],
    )
    third = services.usage_rate(kind="slurm", path=other, period="2025-03", source="hpc", now=AFTER)
    assert third.imported.supersedes == []  # another name adds to the period
    # chem's 100 free core-hours were used by the first file: the extra hour is billed in full.
    assert third.rows[0].free_quantity == 0 and third.billed_total == Decimal("0.02")
    assert Charge.objects.filter(period__period="2025-03").count() == 7
    assert ChargeRating.objects.filter(charge__period__period="2025-03").count() == 7


def test_a_used_rate_cannot_be_deleted(cluster, tmp_path):
    services.usage_rate(
        kind="slurm", path=write(tmp_path / "s.txt", SACCT), period="2025-03", source="hpc", now=AFTER
    )
    rate = ChargeRating.objects.first().rate
    with pytest.raises(Refused, match="stays for the record"):
        services.rate_delete(rate_id=rate.pk)


def test_usage_slurm_cli_json_focus_out_and_dry_run(cluster, tmp_path):
    path = write(tmp_path / "sacct.txt", SACCT)
    focus = tmp_path / "out.csv"
    result = run("usage", "slurm", path, "-p", "2025-03", "--focus-out", focus, "--format", "json")
    assert result.code == 0, result.err
    document = result.json()
    assert document["focus_out"] == str(focus) and document["import"] is None
    assert document["totals"]["billed"] == {"amount": "4.5029629650", "cents": 450}
    assert not Import.objects.exists()
    import csv

    rows = list(csv.DictReader(focus.open(encoding="utf-8")))
    gpu = next(r for r in rows if r["ResourceName"] == "phys/gpu GPU-hours")
    assert {
        k: gpu[k] for k in ("ProviderName", "ServiceCategory", "ServiceName", "SubAccountId", "PricingUnit")
    } == {
        "ProviderName": "Research Computing",
        "ServiceCategory": "Compute",
        "ServiceName": "HPC gpu",
        "SubAccountId": "phys",
        "PricingUnit": "GPU-hours",
    }
    assert (gpu["ConsumedQuantity"], gpu["PricingQuantity"], gpu["ListUnitPrice"]) == (
        "6.000000",
        "6.000000",
        "1.5000",
    )
    assert (gpu["ListCost"], gpu["BilledCost"], gpu["ContractedCost"]) == (
        "9.0000000000",
        "2.2500000000",
        "9.0000000000",
    )
    assert (gpu["ChargePeriodStart"], gpu["ChargePeriodEnd"]) == (
        "2025-03-01T00:00:00Z",
        "2025-04-01T00:00:00Z",
    )
    assert json.loads(gpu["Tags"])["subsidies"] == "New Faculty Startup"

    dry = run("usage", "slurm", path, "-p", "2025-03", "--dry-run")
    assert dry.code == 0, dry.err
    assert "dry run (nothing written)" in dry.out and "New Faculty Startup −$7.93" in dry.out
    assert not Import.objects.filter(status=Import.Status.COMPLETED).exists()

    real = run("usage", "slurm", path, "-p", "2025-03", "--format", "json")
    assert real.code == 0, real.err
    assert real.json()["import"]["charges"] == 6 and real.json()["import"]["flagged"] == 1
    bad = run("usage", "slurm", tmp_path / "missing.txt", "-p", "2025-03")
    assert bad.code == 1 and "file not found" in bad.err


def test_several_gpu_types_add_up_and_iso_timestamps_are_read(cluster, tmp_path):
    lines = [
        # No untyped total: 1 a100 + 2 v100 = 3 GPUs for 1 h.
        "1|bob|phys|gpu|normal|1|cpu=1,gres/gpu:a100=1,gres/gpu:v100=2|3600|2025-03-04T00:00:00|2025-03-04T01:00:00|COMPLETED",
        # A space instead of the T: read as the same timestamp.
        "2|bob|phys|gpu|normal|1|cpu=1,gres/gpu=1|3600|2025-03-05 00:00:00|2025-03-05 01:00:00|COMPLETED",
    ]
    outcome = services.usage_rate(
        kind="slurm",
        path=write(tmp_path / "s.txt", lines),
        period="2025-03",
        source="hpc",
        dry_run=True,
        now=AFTER,
    )
    assert {r.unit: r.quantity for r in outcome.rows} == {"core-hour": Decimal("2"), "gpu-hour": Decimal("4")}


def test_many_blocks_add_up_the_same_and_keep_line_numbers(cluster, tmp_path, monkeypatch):
    """The reader's blocks are worked out in worker threads and merged in order."""
    from billing.rating import slurm

    lines = [
        f"{n}|u|{'chem' if n % 3 else 'phys'}|{'gpu' if n % 5 == 0 else 'cpu'}|normal|{n % 7 + 1}|"
        f"cpu={n % 7 + 1}{',gres/gpu=1' if n % 5 == 0 else ''}|{60 * n}|2025-03-{n % 28 + 1:02d}T00:00:00|"
        f"2025-03-{n % 28 + 1:02d}T{n // 60 % 24:02d}:{n % 60:02d}:00|COMPLETED"
        for n in range(1, 1201)
    ]
    path = write(tmp_path / "s.txt", lines)
    one = services.usage_rate(
        kind="slurm", path=path, period="2025-03", source="hpc", dry_run=True, now=AFTER
    )
    monkeypatch.setattr(slurm, "BLOCK_BYTES", 4096)
    many = services.usage_rate(
        kind="slurm", path=path, period="2025-03", source="hpc", dry_run=True, now=AFTER
    )
    assert [(r.usage.resource_id, r.unit, r.quantity) for r in many.rows] == [
        (r.usage.resource_id, r.unit, r.quantity) for r in one.rows
    ]
    assert many.summary == one.summary and many.billed_total == one.billed_total
    lines[1099] = lines[1099].replace("|COMPLETED", "|x|COMPLETED")  # line 1100: a field too many
    fields = lines[1149].split("|")
    fields[5] = "many"  # line 1150: AllocCPUS is not a number
    lines[1149] = "|".join(fields)
    with pytest.raises(IngestError) as raised:
        services.usage_rate(
            kind="slurm", path=write(tmp_path / "bad.txt", lines), period="2025-03", source="hpc"
        )
    assert [(e.line, e.column) for e in raised.value.errors] == [(1100, ""), (1150, "AllocCPUS")]


def test_empty_values_are_reported_when_every_value_converts(cluster, tmp_path):
    """No value fails to convert, so the fast (typed) read is used; its checks still name the lines."""
    lines = [
        "1|a||cpu|normal|4|cpu=4|60|2025-03-04T00:00:00|2025-03-04T00:01:00|COMPLETED",
        "",
        "2|a|chem|cpu|normal||cpu=4|60|2025-03-04T00:00:00|2025-03-04T00:01:00|COMPLETED",
        "3|a|chem|cpu|normal|4|cpu=4|60|2025-03-04T00:00:00|2025-03-04T00:01:00|COMPLETED",
    ]
    with pytest.raises(IngestError) as raised:
        services.usage_rate(
            kind="slurm", path=write(tmp_path / "s.txt", lines), period="2025-03", source="hpc"
        )
    assert [(e.line, e.column) for e in raised.value.errors] == [(1, "Account"), (3, "AllocCPUS")]
