"""FOCUS ingest end to end: the reference month, synthetic files, real-world quirks, bad input,
all-or-nothing writes (including a process killed mid-import), re-import, append and dry run."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.db.models import Sum

from billing import selectors, services
from billing.ingest import pipeline, writer
from billing.ingest.errors import IngestError, RowError
from billing.models import (
    PI,
    BillingPeriod,
    BillingSettings,
    Charge,
    ChargeFlag,
    Import,
    Project,
    ReviewLog,
)
from billing.templatetags.openchargeback import flag_labels
from chargeback.errors import Refused
from tests.conftest import REFERENCE_TOTALS, ROOT
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

UTC = dt.UTC
D = Decimal


# --- helpers ----------------------------------------------------------------------------------------

HEADER = [
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ListCost",
    "BilledCost",
    "ResourceId",
    "ResourceName",
    "ServiceName",
    "SubAccountId",
    "Tags",
]
ADA = {"pi_email": "ada@uni.example", "project_id": "proj-ada", "fund_org": "NSF-0001"}


def tags(**values: str) -> str:
    return json.dumps(values)


def focus_row(**overrides: str) -> dict[str, str]:
    row = {
        "BillingPeriodStart": "2025-01-01T00:00:00Z",
        "BillingPeriodEnd": "2025-02-01T00:00:00Z",
        "ChargePeriodStart": "2025-01-01T00:00:00Z",
        "ChargePeriodEnd": "2025-02-01T00:00:00Z",
        "ListCost": "10.00",
        "BilledCost": "8.50",
        "ResourceId": "i-0001",
        "ResourceName": "vm-1",
        "ServiceName": "Amazon EC2",
        "SubAccountId": "111122223333",
        "Tags": tags(**ADA),
    }
    row.update(overrides)
    return row


def write_focus(path: Path, rows: list[dict], header: list[str] = HEADER) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", newline="", encoding="utf-8") as fh:
        out = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        out.writeheader()
        out.writerows(rows)
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def file_billed_sum(path: Path) -> Decimal:
    """Σ BilledCost of a file, exactly (csv + Decimal, independent of the ingest code)."""
    return sum((D(row["BilledCost"]) for row in read_rows(path)), D(0))


def ingest(path: Path, source: str = "aws", period: str | None = "2025-01", **options):
    return services.import_file(path=path, source=source, period=period, actor_name="test", **options)


def charges_of(outcome) -> list[Charge]:
    return list(Charge.objects.filter(import_run_id=outcome.import_id).order_by("resource_id", "id"))


def billed(queryset) -> Decimal:
    return queryset.aggregate(total=Sum("billed_cost"))["total"] or D(0)


def assert_nothing_written() -> None:
    assert Charge.objects.count() == 0
    assert ChargeFlag.objects.count() == 0
    assert PI.objects.count() == 0
    assert Project.objects.count() == 0
    assert ReviewLog.objects.count() == 0


def the_failed_import(exc: Refused) -> Import:
    """The only Import: failed, carrying the message and the row errors of the exception."""
    record = Import.objects.get()
    assert record.status == Import.Status.FAILED
    assert record.finished_at is not None
    if isinstance(exc, IngestError):
        assert record.error_message == exc.message
        assert record.errors == [e.as_dict() for e in exc.errors]
    else:
        assert record.error_message == str(exc)
    return record


@pytest.fixture
def sources(db):
    return {slug: services.source_create(slug=slug) for slug in ("aws", "azure", "gcp", "hpc")}


# --- the reference month ------------------------------------------------------------------------------


def test_reference_month_totals(reference_month):
    summary = selectors.period_summary(reference_month)

    imports = Import.objects.filter(status=Import.Status.COMPLETED)
    assert sum(imports.values_list("rows_read", flat=True)) == 59
    assert {i.source.slug: i.rows_read for i in imports} == {
        "aws": 25,
        "azure": 4,
        "hpc": 9,
        "it_storage": 6,
        "storage": 15,
    }
    assert summary.pis == 7
    assert summary.projects == 10
    assert summary.list_total == D("32260.00")
    assert summary.billed_total == D("20227.00")
    assert summary.discount == D("12033.00")
    assert summary.flagged == 0
    assert summary.billable_total == D("20227.00")
    assert summary.by_source == {
        "aws": D("19086.75"),
        "azure": D("735.25"),
        "hpc": D("0.00"),
        "it_storage": D("360.00"),
        "storage": D("45.00"),
    }
    # Every line of the reference table, and nothing else.
    table = {(p.pi_email, p.project_code): (p.fund_org, p.billed_total) for p in summary.by_project}
    assert table == {key: (fund, D(amount)) for key, (fund, amount) in REFERENCE_TOTALS.items()}
    by_project = {p.project_code: p for p in summary.by_project}
    assert by_project["cfd-turbulence"].list_total == D("3665.00")
    genomics = by_project["genomics-sequencing"]
    assert (genomics.list_total, genomics.discount) == (D("2720.00"), D("412.25"))
    # Money of every import adds up to the charges it wrote.
    for record in imports:
        assert billed(record.charges) == record.billed_total


def test_reference_month_creates_people_and_projects(reference_month):
    assert set(PI.objects.values_list("email", flat=True)) == {pi for pi, _ in REFERENCE_TOTALS}
    projects = {p.project_id: (p.pi.email, p.fund_org) for p in Project.objects.select_related("pi")}
    assert projects == {code: (pi, fund) for (pi, code), (fund, _) in REFERENCE_TOTALS.items()}
    # AWS tags carry the two references.
    genomics = Project.objects.get(project_id="genomics-sequencing")
    assert (genomics.reference_1, genomics.reference_2) == ("NSF-BIO-2024-1234567", "REQ-2024-00142")


# --- synthetic files ------------------------------------------------------------------------------------


def assert_matches_manifest(outcome, path: Path, manifest: dict) -> None:
    """Tagged charges equal the manifest exactly, all charges equal the file, untagged rows are flagged."""
    record = Import.objects.get(pk=outcome.import_id)
    charges = Charge.objects.filter(import_run=record)
    tagged = charges.filter(attribution_source="tags")
    assert billed(tagged) == D(manifest["billed_total"])
    per_pi = dict(tagged.values_list("pi_email").annotate(total=Sum("billed_cost")).order_by())
    assert per_pi == {email: D(total) for email, total in manifest["billed_by_pi"].items()}
    per_project = dict(tagged.values_list("project_code").annotate(total=Sum("billed_cost")).order_by())
    assert per_project == {code: D(total) for code, total in manifest["billed_by_project"].items()}

    file_total = file_billed_sum(path)
    assert billed(charges) == file_total
    assert record.billed_total == file_total
    assert outcome.billed_total == file_total
    assert record.rows_read == outcome.rows == manifest["rows"]
    assert sum(charges.values_list("line_count", flat=True)) == manifest["rows"]
    assert record.charges_created == outcome.charges == charges.count()

    # Untagged rows: kept, unattributed and flagged, never dropped.
    unattributed = charges.filter(attribution_source="none")
    assert sum(unattributed.values_list("line_count", flat=True)) == manifest["untagged_rows"]
    assert billed(unattributed) == file_total - D(manifest["billed_total"])
    assert set(unattributed.values_list("review_state", "flag_summary", "pi_id")) == {
        ("flagged", "unattributed", None)
    }
    flagged = charges.filter(review_state="flagged")
    assert flagged.count() == unattributed.count() == record.charges_flagged == outcome.flagged
    assert ChargeFlag.objects.filter(charge__import_run=record).count() == unattributed.count()
    assert set(ChargeFlag.objects.filter(charge__import_run=record).values_list("reason", flat=True)) == {
        "unattributed"
    }


def test_synthetic_aws_matches_manifest_exactly(sources, synthetic):
    path, manifest = synthetic(rows=5000, provider="aws", seed=1)
    assert manifest["tag_prefix"] == "user:"
    assert manifest["untagged_rows"] > 0 and manifest["credit_rows"] > 0

    outcome = ingest(path)

    assert outcome.status == Import.Status.COMPLETED
    assert outcome.period == "2025-01"
    assert_matches_manifest(outcome, path, manifest)
    credits = Charge.objects.filter(charge_category="Credit")
    assert credits.exists() and billed(credits) < 0
    assert PI.objects.count() == len(manifest["billed_by_pi"])
    record = Import.objects.get()
    assert record.period.period == "2025-01" and record.source.slug == "aws"
    assert record.actor_name == "test"
    assert record.sha256 == pipeline.sha256_of(path)
    assert Path(record.file.path).read_bytes() == path.read_bytes()


def test_the_stored_copy_is_written_while_the_file_is_parsed(sources, tmp_path, monkeypatch):
    """The copy and its hash are made in the background while the original is parsed; the stored
    copy is whole, named as given, and no temporary file is left beside it."""
    from billing.services import import_outcomes

    monkeypatch.setattr(import_outcomes, "COPY_CHUNK_BYTES", 7)  # many chunks: the loop is exercised
    path = write_focus(tmp_path / "aws_2025-01.csv", [focus_row(ResourceId=f"i-{n}") for n in range(50)])

    outcome = ingest(path)

    record = Import.objects.get(pk=outcome.import_id)
    stored = Path(record.file.path)
    assert stored.name == "aws_2025-01.csv" and stored.read_bytes() == path.read_bytes()
    assert record.sha256 == pipeline.sha256_of(path)
    assert [p.name for p in stored.parent.iterdir()] == ["aws_2025-01.csv"]
    assert Charge.objects.count() == 50


def test_a_file_that_changes_while_it_is_imported_is_refused(sources, tmp_path, monkeypatch):
    path = write_focus(tmp_path / "aws_2025-01.csv", [focus_row()])
    parse = pipeline.parse_file

    def parse_then_append(*args, **kwargs):
        parsed = parse(*args, **kwargs)
        with open(path, "a") as fh:  # the provider still writing the file
            fh.write("2025-01-01T00:00:00Z,,,,1,1,i-late,,EC2,,\n")
        return parsed

    monkeypatch.setattr(pipeline, "parse_file", parse_then_append)

    with pytest.raises(Refused, match=r"aws_2025-01\.csv changed while it was being imported"):
        ingest(path)

    assert Charge.objects.count() == 0
    record = Import.objects.get()
    assert record.status == Import.Status.FAILED and "changed while" in record.error_message


def test_a_copy_that_fails_leaves_no_partial_file(sources, tmp_path, monkeypatch):
    from billing.services import import_outcomes

    path = write_focus(tmp_path / "aws_2025-01.csv", [focus_row()])
    real_replace = os.replace

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(import_outcomes.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ingest(path)
    monkeypatch.setattr(import_outcomes.os, "replace", real_replace)

    assert Charge.objects.count() == 0
    record = Import.objects.get()
    assert record.status == Import.Status.FAILED and "No space left" in record.error_message
    folder = Path(record.file.storage.path(record.file.name)).parent
    assert not any(folder.iterdir())  # neither the copy nor its partial


@pytest.mark.parametrize(
    ("provider", "name"),
    [
        ("azure", "azure_2025-01.csv"),
        ("gcp", "gcp_2025-01.csv"),
        ("hpc", "hpc_2025-01.csv"),
        ("aws", "aws_2025-01.csv.gz"),
    ],
)
def test_synthetic_other_providers_and_gzip(sources, synthetic, provider, name):
    path, manifest = synthetic(name=name, rows=1500, provider=provider, seed=7, untagged=0.05)
    outcome = ingest(path, source=provider)
    assert_matches_manifest(outcome, path, manifest)


CHARGE_FIELDS = (
    *pipeline.IDENTITY_FIELDS,
    "billed_cost",
    "list_cost",
    "effective_cost",
    "quantity",
    "line_count",
    "charge_period_start",
    "charge_period_end",
    "tags",
    "review_state",
    "flag_summary",
)


def test_many_small_batches_sum_to_the_same_charges(sources, synthetic, settings, monkeypatch, tmp_path):
    """Small reader blocks and frequent re-aggregation (with Tags values compacted each time) give
    exactly the charges of a single-batch run, including which row's Tags a charge keeps."""
    path, manifest = synthetic(rows=3000, provider="aws", seed=11, grain="hourly")
    # One resource's rows differ only in a tag no attribution reads, as a timestamp tag would.
    rows = [
        focus_row(ChargePeriodStart=f"2025-01-01T{h:02d}:00:00Z", Tags=tags(**ADA, created=f"t{h}"))
        for h in range(24)
    ]
    extra = write_focus(tmp_path / "aws_2025-01_extra.csv", rows)

    def charges_of_run() -> list[tuple]:
        ingest(path, force=True)
        ingest(extra, force=True)  # another file name: added to the first
        values = list(Charge.objects.values_list(*CHARGE_FIELDS).order_by(*CHARGE_FIELDS))
        Charge.objects.all().delete()
        return values

    whole = charges_of_run()
    settings.OPENCHARGEBACK_INGEST_BLOCK_BYTES = 16 * 1024
    monkeypatch.setattr(pipeline, "TRANSFORM_ROWS", 40)
    monkeypatch.setattr(pipeline, "COMBINE_EVERY_ROWS", 100)
    compacted = []
    real_compact = pipeline.transform.TagReader.compact
    monkeypatch.setattr(
        pipeline.transform.TagReader,
        "compact",
        lambda self, ids: compacted.append(len(self.tag_batches)) or real_compact(self, ids),
    )
    in_pieces = charges_of_run()

    assert len(compacted) > 10 and max(compacted) > 1  # really re-aggregated, from several batches
    assert in_pieces == whole
    assert sum(row[CHARGE_FIELDS.index("line_count")] for row in whole) == manifest["rows"] + len(rows)
    (kept,) = [row for row in whole if row[CHARGE_FIELDS.index("line_count")] == 24]
    assert kept[CHARGE_FIELDS.index("tags")]["created"] == "t23"  # the last row's Tags


@pytest.mark.parametrize("period", ["2025-01", None])
def test_charges_summed_on_disk_are_the_charges_summed_in_memory(
    sources, synthetic, settings, monkeypatch, tmp_path, period
):
    """Past OPENCHARGEBACK_INGEST_SPILL_CHARGES the summing goes to disk, partitioned by charge key
    (spill.py): the charges, their flags, the Tags each keeps (its last row's) and the import's
    totals are exactly those of the in-memory path, for one period or a file split by month; and
    the spill folder is gone afterwards."""
    path, manifest = synthetic(rows=3000, provider="aws", seed=12, grain="hourly")
    # A charge whose rows differ only in a tag no attribution reads, spread over every batch; rows
    # of another month (a mismatch with -p, a second part without); an unattributed one.
    rows = [
        focus_row(ChargePeriodStart=f"2025-01-01T{h:02d}:00:00Z", Tags=tags(**ADA, created=f"t{h}"))
        for h in range(24)
    ] + [
        focus_row(BillingPeriodStart="2025-02-01", BilledCost="2.25", ResourceId="i-0002"),
        focus_row(BillingPeriodStart="2025-02-01", BilledCost="-1.25", ResourceId="i-0002"),
        focus_row(BilledCost="3.00", ResourceId="i-0003", Tags=""),
    ]
    extra = write_focus(tmp_path / "aws_2025-01_extra.csv", rows)
    interleaved = read_rows(path)
    mixed = write_focus(
        tmp_path / "aws_2025-01_mixed.csv",
        [row for pair in itertools.zip_longest(interleaved, rows * 100) for row in pair if row],
        header=list(interleaved[0]),
    )
    flag_fields = tuple("charge__" + name for name in CHARGE_FIELDS if name != "tags")

    def run() -> tuple[list, list, list]:
        outcomes = [ingest(f, period=period, force=True) for f in (path, extra, mixed)]
        totals = [
            (p.period, p.rows, p.charges, p.flagged, p.billed_total, p.list_total)
            for outcome in outcomes
            for p in outcome.parts
        ]
        charges = list(Charge.objects.values_list(*CHARGE_FIELDS).order_by(*CHARGE_FIELDS))
        flags = sorted(ChargeFlag.objects.values_list("reason", "detail", *flag_fields))
        Charge.objects.all().delete()
        Import.objects.all().delete()
        return totals, charges, flags

    in_memory = run()
    settings.OPENCHARGEBACK_INGEST_SPILL_CHARGES = 50
    settings.OPENCHARGEBACK_INGEST_SPILL_DIR = str(tmp_path / "spill")
    (tmp_path / "spill").mkdir()
    settings.OPENCHARGEBACK_INGEST_BLOCK_BYTES = 16 * 1024
    monkeypatch.setattr(pipeline, "FIRST_TRANSFORM_ROWS", 40)
    monkeypatch.setattr(pipeline, "TRANSFORM_ROWS", 40)
    monkeypatch.setattr(pipeline, "SPILL_SLICE_ROWS", 30)
    spilled_rows = []
    real_add = pipeline.SpilledCharges.add
    monkeypatch.setattr(
        pipeline.SpilledCharges,
        "add",
        lambda self, table: spilled_rows.append((self.partitions, table.num_rows)) or real_add(self, table),
    )
    on_disk = run()

    assert len(spilled_rows) > 50 and max(parts for parts, _ in spilled_rows) > 1  # really spilled
    # The charges summed before spilling (more than the bound) go to disk a slice at a time.
    assert max(rows for _, rows in spilled_rows) == 30
    assert on_disk == in_memory
    totals, charges, flags = on_disk
    assert totals[0][1] == manifest["rows"]
    assert totals[0][4] == file_billed_sum(path)
    assert any(reason == "unattributed" for reason, *_ in flags)
    assert any(reason == "period_mismatch" for reason, *_ in flags) == (period is not None)
    (kept,) = [c for c in charges if c[CHARGE_FIELDS.index("line_count")] == 2400]
    assert kept[CHARGE_FIELDS.index("tags")]["created"] == "t23"  # the last row's Tags
    assert list((tmp_path / "spill").iterdir()) == []


@pytest.mark.parametrize("period", ["2025-01", None])
def test_subsidies_on_charges_summed_on_disk_are_those_in_memory(
    sources, synthetic, settings, monkeypatch, tmp_path, period
):
    """A file summed on disk gets its subsidies a partition at a time, never read back into memory
    whole: every charge's billed and effective cost, every subsidy paid, and the import's totals
    are those of the same file summed in memory — with caps reached part way through a project's
    charges, and for a file split by month."""
    from billing.rating import services as rating_services
    from billing.rating.models import ChargeSubsidy

    path, _ = synthetic(rows=3000, provider="aws", seed=7, grain="hourly")
    february = write_focus(
        tmp_path / "aws_2025-01_feb.csv",
        [
            focus_row(BillingPeriodStart="2025-02-01", BilledCost=f"{n}.50", ResourceId=f"i-feb{n}")
            for n in range(5)
        ],
    )
    combined = write_focus(
        tmp_path / "aws_2025-01_combined.csv",
        read_rows(path) + read_rows(february),
        header=list(read_rows(path)[0]),
    )
    # Capped low enough that most projects reach it part way through their charges; a second one
    # takes its percent of what is left.
    rating_services.subsidy_add(
        name="Startup", percent="60", cap="25", source="aws", effective_from="2025-01"
    )
    rating_services.subsidy_add(
        name="College", percent="10", source="aws", effective_from="2025-01", position=200
    )
    money = (
        "resource_id",
        "service_name",
        "charge_category",
        "period__period",
        "billed_cost",
        "effective_cost",
    )

    def run() -> tuple[list, list, list]:
        outcome = ingest(combined, period=period, force=True)
        totals = [(p.period, p.charges, p.billed_total) for p in outcome.parts]
        charges = sorted(Charge.objects.values_list(*money), key=repr)
        paid = sorted(
            ChargeSubsidy.objects.values_list(
                "charge__resource_id", "charge__service_name", "subsidy__name", "name", "percent", "amount"
            ),
            key=repr,
        )
        ChargeSubsidy.objects.all().delete()
        Charge.objects.all().delete()
        Import.objects.all().delete()
        return totals, charges, paid

    in_memory = run()
    settings.OPENCHARGEBACK_INGEST_SPILL_CHARGES = 50
    settings.OPENCHARGEBACK_INGEST_SPILL_DIR = str(tmp_path / "spill")
    (tmp_path / "spill").mkdir()
    settings.OPENCHARGEBACK_INGEST_BLOCK_BYTES = 16 * 1024
    monkeypatch.setattr(pipeline, "FIRST_TRANSFORM_ROWS", 40)
    monkeypatch.setattr(pipeline, "TRANSFORM_ROWS", 40)
    # The charges and the subsidy records written with their tables' indexes dropped and built
    # again, a few rows to a statement.
    monkeypatch.setattr(writer, "REBUILD_INDEXES_FROM_ROWS", 10)
    monkeypatch.setattr(writer, "SQLITE_ROWS_PER_STATEMENT", 7)
    spilled = []
    real_add = pipeline.SpilledCharges.add
    monkeypatch.setattr(
        pipeline.SpilledCharges,
        "add",
        lambda self, table: spilled.append(self.partitions) or real_add(self, table),
    )
    whole_reads = []
    real_charges = pipeline.ParsedFile.charges
    monkeypatch.setattr(
        pipeline.ParsedFile,
        "charges",
        property(lambda self: whole_reads.append(self.spilled is not None) or real_charges.fget(self)),
    )
    on_disk = run()

    assert spilled and max(spilled) > 1  # really summed on disk, in several partitions
    assert whole_reads.count(True) == 0  # and never read back into one table
    assert on_disk == in_memory
    totals, charges, paid = on_disk
    # What the subsidies paid is exactly what the charges' billed sum lost, to the last decimal.
    billed_sum = sum((c[money.index("billed_cost")] for c in charges), Decimal(0))
    assert billed_sum == sum((t[2] for t in totals), Decimal(0))
    assert billed_sum + sum((amount for *_, amount in paid), Decimal(0)) == file_billed_sum(combined)
    startup = defaultdict(Decimal)
    for resource, _service, name, _recorded, _percent, amount in paid:
        if name == "Startup":
            startup[resource.split("-r")[0]] += amount
    assert startup and max(startup.values()) == Decimal("25")  # a cap reached, exactly
    assert any(row[2] == "College" for row in paid)
    # Each record keeps the subsidy's name and percent as they were.
    percents = {"Startup": Decimal("60"), "College": Decimal("10")}
    assert all(name == recorded and percent == percents[name] for _, _, name, recorded, percent, _ in paid)
    assert len({p for p, *_ in totals}) == (1 if period else 2)


def test_same_file_again_is_refused_and_writes_nothing(sources, synthetic):
    path, _ = synthetic(rows=500, seed=1)
    first = ingest(path)
    before = (Charge.objects.count(), PI.objects.count(), Import.objects.count(), ChargeFlag.objects.count())

    copy = path.with_name("aws_2025-01_copy.csv")
    copy.write_bytes(path.read_bytes())
    with pytest.raises(
        Refused, match=rf"^already imported as #{first.import_id} \(aws_2025-01.csv, aws 2025-01\)"
    ):
        ingest(copy)

    after = (Charge.objects.count(), PI.objects.count(), Import.objects.count(), ChargeFlag.objects.count())
    assert after == before
    assert Import.objects.get().status == Import.Status.COMPLETED


def redelivered(path: Path) -> Path:
    """The file moved to a folder of its own under the name `aws_2025-01.csv`: a file delivered again."""
    folder = path.parent / f"redelivered-{path.stem}"
    folder.mkdir()
    return path.rename(folder / "aws_2025-01.csv")


def test_changed_file_supersedes_atomically(sources, synthetic):
    first_path, _first_manifest = synthetic(rows=800, seed=1)
    second_path, second_manifest = synthetic(name="aws_2025-01_v2.csv", rows=600, seed=2)
    second_path = redelivered(second_path)  # the same file name again, other bytes
    first = ingest(first_path)
    old_charge_ids = set(Charge.objects.values_list("id", flat=True))

    second = ingest(second_path)

    assert second.supersedes == [first.import_id]
    old, new = Import.objects.get(pk=first.import_id), Import.objects.get(pk=second.import_id)
    assert old.status == Import.Status.SUPERSEDED
    assert new.status == Import.Status.COMPLETED and new.supersedes_id == old.pk
    assert not Charge.objects.filter(import_run=old).exists()
    assert not Charge.objects.filter(id__in=old_charge_ids).exists()
    assert ChargeFlag.objects.filter(charge__import_run=old).count() == 0
    assert_matches_manifest(second, second_path, second_manifest)
    summary = selectors.period_summary(selectors.period_get("2025-01"))
    assert summary.billed_total == file_billed_sum(second_path)
    assert summary.charges == new.charges_created


def _identity(charge: Charge) -> tuple:
    return (charge.sub_account_id, charge.resource_id, charge.service_name, charge.charge_category)


def test_review_decisions_carry_over_to_unchanged_charges(sources, synthetic):
    path, _ = synthetic(rows=1200, seed=3, untagged=0.2)
    first = ingest(path)
    flagged = list(Charge.objects.filter(review_state="flagged").order_by("id"))
    assert len(flagged) >= 5
    approved, rejected, changed = flagged[:2], flagged[2], flagged[3]
    services.charges_approve(
        charge_ids=[c.pk for c in [*approved, changed]], note="lab pays", actor_name="rev"
    )
    services.charges_reject(charge_ids=[rejected.pk], note="not ours", actor_name="rev")

    # The next file differs only in other rows: one tagged row and one row of `changed`.
    rows = read_rows(path)
    tagged_row = next(r for r in rows if "pi_email" in r["Tags"])
    tagged_row["BilledCost"] = str(D(tagged_row["BilledCost"]) + 1)
    changed_row = next(
        r
        for r in rows
        if "pi_email" not in r["Tags"]
        and (r["SubAccountId"], r["ResourceId"], r["ServiceName"], r["ChargeCategory"]) == _identity(changed)
    )
    changed_row["BilledCost"] = str(D(changed_row["BilledCost"]) + D("0.01"))
    second_path = redelivered(write_focus(path.with_name("aws_2025-01_v2.csv"), rows, header=list(rows[0])))

    second = ingest(second_path)

    assert second.supersedes == [first.import_id] and second.mode == "superseded"
    assert second.decisions_carried == 3
    assert Import.objects.get(pk=second.import_id).decisions_carried == 3
    new = {
        _identity(c): c
        for c in Charge.objects.filter(import_run_id=second.import_id, attribution_source="none")
    }
    assert [new[_identity(c)].review_state for c in approved] == ["approved", "approved"]
    assert new[_identity(rejected)].review_state == "rejected"
    assert new[_identity(changed)].review_state == "flagged"  # its amount changed: decided again
    # Flags stay recorded on carried charges; the state is what changed.
    assert new[_identity(approved[0])].flags.get().reason == "unattributed"

    carried = ReviewLog.objects.filter(action="carry_over").order_by("charge_id")
    assert [(log.charge_id, log.from_state, log.to_state) for log in carried] == sorted(
        [
            (new[_identity(approved[0])].pk, "flagged", "approved"),
            (new[_identity(approved[1])].pk, "flagged", "approved"),
            (new[_identity(rejected)].pk, "flagged", "rejected"),
        ]
    )
    assert {log.note for log in carried} == {
        f"carried over from import #{first.import_id} (charge #{c.pk})" for c in [*approved, rejected]
    }
    assert len({log.batch for log in carried}) == 1
    assert {log.billed_cost for log in carried} == {c.billed_cost for c in [*approved, rejected]}
    # The original decisions stay in the log, detached from the deleted charges.
    originals = ReviewLog.objects.filter(action__in=["approve", "reject"])
    assert originals.count() == 4 and set(originals.values_list("charge_id", flat=True)) == {None}
    assert billed(Charge.objects.all()) == file_billed_sum(second_path)


def test_force_imports_the_same_bytes_again(sources, synthetic):
    path, _ = synthetic(rows=300, seed=1)
    first = ingest(path)
    again = ingest(path, force=True)
    assert again.supersedes == [first.import_id]
    assert Import.objects.get(pk=first.import_id).status == "superseded"
    assert billed(Charge.objects.all()) == file_billed_sum(path)
    assert set(Charge.objects.values_list("import_run_id", flat=True)) == {again.import_id}


def test_queued_import_runs_once_and_a_failed_one_can_run_again(sources, tmp_path):
    services.period_open(period="2025-01")
    services.period_close(period="2025-01")
    path = write_focus(tmp_path / "aws_2025-01.csv", [focus_row()])
    record = services.import_create(path=path, source=sources["aws"], actor_name="web:upload")
    assert (record.status, record.original_name, record.size_bytes) == (
        "pending",
        "aws_2025-01.csv",
        path.stat().st_size,
    )

    with pytest.raises(Refused, match="is closed: it accepts no imports"):
        services.import_execute(import_id=record.pk, period="2025-01")
    assert Import.objects.get().status == "failed"
    assert_nothing_written()

    services.period_reopen(period="2025-01", reason="late file")
    outcome = services.import_execute(import_id=record.pk, period="2025-01")
    record.refresh_from_db()
    assert (outcome.status, record.status, record.error_message, record.charges_created) == (
        "completed",
        "completed",
        "",
        1,
    )
    assert record.started_at is not None and record.finished_at >= record.started_at
    with pytest.raises(Refused, match=rf"^import #{record.pk} is completed; it cannot run again$"):
        services.import_execute(import_id=record.pk)
    assert Charge.objects.count() == 1


def test_another_file_adds_and_replace_supersedes_every_import(sources, synthetic):
    first_path, first_manifest = synthetic(rows=400, seed=1)
    second_path, _ = synthetic(name="aws_2025-01_part2.csv", rows=300, seed=2)
    first = ingest(first_path)

    second = ingest(second_path)  # another file of the same source and month: added, as the original does

    assert (second.supersedes, second.mode) == ([], "added")
    assert set(Import.objects.values_list("status", flat=True)) == {"completed"}
    both = file_billed_sum(first_path) + file_billed_sum(second_path)
    assert billed(Charge.objects.all()) == both
    assert selectors.period_summary(selectors.period_get("2025-01")).billed_total == both
    assert billed(Charge.objects.filter(import_run_id=first.import_id)) == file_billed_sum(first_path)

    # --replace: a full file replaces everything the source delivered for the period.
    third_path, _ = synthetic(name="aws_2025-01_full.csv", rows=200, seed=3)
    third = ingest(third_path, replace=True)
    assert sorted(third.supersedes) == sorted([first.import_id, second.import_id])
    assert third.mode == "replaced" and Import.objects.get(pk=third.import_id).replace is True
    assert billed(Charge.objects.all()) == file_billed_sum(third_path)
    assert first_manifest["rows"] == 400


def test_same_name_supersedes_only_that_file(sources, synthetic, tmp_path):
    aws_path, _ = synthetic(rows=300, seed=1)
    part2_path, _ = synthetic(name="aws_2025-01_part2.csv", rows=200, seed=2)
    first, part2 = ingest(aws_path), ingest(part2_path)
    azure = write_focus(tmp_path / "aws_2025-01_copy.csv", [focus_row(ResourceId="az-1")])
    other_source = ingest(azure, source="azure")  # same name stem, another source: never superseded

    again_path, _ = synthetic(name="aws_2025-01_v2.csv", rows=250, seed=4)
    again = ingest(redelivered(again_path))

    assert (again.supersedes, again.mode) == ([first.import_id], "superseded")
    statuses = dict(Import.objects.values_list("id", "status"))
    assert statuses[first.import_id] == "superseded"
    assert (
        statuses[part2.import_id]
        == statuses[other_source.import_id]
        == statuses[again.import_id]
        == "completed"
    )
    aws = Charge.objects.filter(source__slug="aws")
    assert billed(aws) == file_billed_sum(part2_path) + file_billed_sum(
        tmp_path / "redelivered-aws_2025-01_v2" / "aws_2025-01.csv"
    )


def test_dry_run_writes_nothing_and_reports(sources, synthetic, settings):
    path, _manifest = synthetic(rows=700, seed=5)

    outcome = ingest(path, dry_run=True)

    assert outcome.dry_run is True and outcome.status == "dry-run" and outcome.import_id is None
    assert outcome.rows == 700 and outcome.period == "2025-01"
    assert outcome.billed_total == file_billed_sum(path)
    assert outcome.charges > 0 and outcome.flagged > 0
    assert outcome.supersedes == []
    assert Import.objects.count() == 0
    assert BillingPeriod.objects.count() == 0
    assert_nothing_written()
    assert not any(Path(settings.MEDIA_ROOT).rglob("*.csv"))

    # Then for real: the same figures. A dry run of a replacement reports what it would supersede.
    real = ingest(path)
    assert (real.rows, real.charges, real.flagged, real.billed_total) == (
        outcome.rows,
        outcome.charges,
        outcome.flagged,
        outcome.billed_total,
    )
    other, _ = synthetic(name="aws_2025-01_v2.csv", rows=100, seed=6)
    preview = ingest(redelivered(other), dry_run=True)
    assert preview.supersedes == [real.import_id] and preview.mode == "superseded"
    assert [(p.period, p.import_id) for p in preview.parts] == [("2025-01", None)]
    assert Import.objects.get().status == Import.Status.COMPLETED
    assert Charge.objects.count() == real.charges
    with pytest.raises(Refused, match=f"already imported as #{real.import_id}"):
        ingest(path, dry_run=True)


# --- quirks of real exports --------------------------------------------------------------------------------


def test_headers_any_case_and_order(sources, tmp_path):
    header = ["tags", "SERVICENAME", "billedcost", "ResourceID", "billingperiodstart", "LISTCOST"]
    path = write_focus(
        tmp_path / "aws.csv",
        [
            {
                "tags": tags(**ADA),
                "SERVICENAME": "S3",
                "billedcost": "1.25",
                "ResourceID": "bucket-1",
                "billingperiodstart": "2025-01-01",
                "LISTCOST": "2.50",
            }
        ],
        header=header,
    )
    outcome = ingest(path)
    (charge,) = charges_of(outcome)
    assert (charge.resource_id, charge.service_name, charge.pi_email) == ("bucket-1", "S3", "ada@uni.example")
    assert (charge.list_cost, charge.billed_cost) == (D("2.50"), D("1.25"))


def test_utf8_bom(sources, tmp_path):
    path = write_focus(tmp_path / "aws.csv", [focus_row(ResourceName="Überlingen-vm")])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (charge,) = charges_of(ingest(path))
    assert charge.resource_name == "Überlingen-vm"
    assert charge.billed_cost == D("8.50")


def test_gzip_detected_by_content_and_unsupported_types_refused(sources, tmp_path):
    gz = write_focus(tmp_path / "export.csv.gz", [focus_row(BilledCost="2.75")])
    renamed = tmp_path / "aws_2025-01.csv"  # gzip bytes without the suffix
    renamed.write_bytes(gz.read_bytes())
    (charge,) = charges_of(ingest(renamed))
    assert charge.billed_cost == D("2.75")

    sheet = tmp_path / "aws_2025-02.xlsx"
    sheet.write_bytes(b"PK\x03\x04 not a csv")
    with pytest.raises(
        IngestError,
        match=r"^aws_2025-02\.xlsx: unsupported file type; expected \.csv, \.csv\.gz or \.parquet$",
    ):
        ingest(sheet, period="2025-02")
    assert Import.objects.get(original_name="aws_2025-02.xlsx").status == "failed"
    assert Charge.objects.count() == 1


def test_null_literals_and_empty_cells(sources, tmp_path):
    path = write_focus(
        tmp_path / "aws.csv",
        [
            focus_row(ResourceId="r-1", ListCost="NULL", ResourceName="NULL", ChargePeriodEnd="null"),
            focus_row(ResourceId="r-2", ListCost="", SubAccountId="NULL", Tags="NULL", BilledCost="3"),
        ],
    )
    first, second = charges_of(ingest(path))
    assert (first.list_cost, first.billed_cost, first.resource_name) == (D("8.5"), D("8.5"), "")
    assert first.charge_period_end is None
    assert (second.list_cost, second.sub_account_id, second.tags) == (D(3), "", {})
    assert (second.review_state, second.flag_summary) == ("flagged", "unattributed")


# The shape of the FinOps Foundation's public FOCUS 1.0 sample (anonymised real exports): 44 columns,
# AWS, Azure and Oracle rows in one file, quoted NULL literals, "YYYY-MM-DD HH:MM:SS" timestamps,
# 12-digit accounts, amounts with many decimals, one row of the next billing period, and no PI tags.
FOCUS_10_COLUMNS = [
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription",
    "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart", "CommitmentDiscountCategory",
    "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice", "EffectiveCost",
    "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingCategory", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType",
    "ServiceCategory", "ServiceName", "SkuId", "SkuPriceId", "SubAccountId", "SubAccountName", "Tags",
    "x_ServiceCode",
]  # fmt: skip
FOCUS_10_PROVIDERS = [
    ("AWS", "Amazon EC2", "Compute", "012345678901", "us-east-1"),
    ("Microsoft", "Virtual Machines", "Compute", "1b2c3d4e-0000-4000-8000-0123456789ab", "eastus"),
    ("Oracle", "Block Storage", "Storage", "ocid1.tenancy.oc1..aaaa", "us-ashburn-1"),
]


def focus_10_sample(path: Path, rows: int = 1000) -> Path:
    """A file of the FOCUS 1.0 sample's shape, every value written as such exports write it."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, quoting=csv.QUOTE_ALL)  # the sample quotes every field, NULL too
        out.writerow(FOCUS_10_COLUMNS)
        for n in range(rows):
            provider, service, category, account, region = FOCUS_10_PROVIDERS[n % 3]
            month = "2024-10" if n == rows - 1 else "2024-09"  # one row of the next billing period
            row = dict.fromkeys(FOCUS_10_COLUMNS, "NULL")
            row.update(
                BilledCost=f"{(n % 97) * 0.0173 + 0.0000000001 * n:.10f}",
                ListCost=f"{(n % 97) * 0.02:.10f}",
                EffectiveCost=f"{(n % 97) * 0.0173:.10f}",
                BillingAccountId=account,
                BillingCurrency="USD",
                BillingPeriodStart=f"{month}-01 00:00:00",
                BillingPeriodEnd="2024-10-01 00:00:00" if month == "2024-09" else "2024-11-01 00:00:00",
                ChargePeriodStart=f"{month}-{1 + n % 28:02d} 00:00:00",
                ChargePeriodEnd=f"{month}-{1 + n % 28:02d} 01:00:00",
                ChargeCategory="Usage" if n % 10 else "Tax",
                ProviderName=provider,
                PublisherName=provider,
                InvoiceIssuerName=provider,
                RegionId=region,
                ResourceId=f"{provider.lower()}-res-{n % 40}",
                ServiceName=service,
                ServiceCategory=category,
                SubAccountId=account,
                ConsumedQuantity=str(n % 7),
                Tags='{"env": "prod", "team": "research"}' if n % 2 else "NULL",
            )
            out.writerow(row.values())
    return path


def test_focus_10_sample_shape_ingests_every_row(sources, tmp_path):
    path = focus_10_sample(tmp_path / "focus_sample.csv")
    exact = file_billed_sum(path)

    outcome = ingest(path, source="oracle", period=None, create_source=True)  # split by billing period

    assert outcome.source_created and outcome.rows == 1000
    assert [(p.period, p.rows) for p in outcome.parts] == [("2024-09", 999), ("2024-10", 1)]
    assert outcome.billed_total == exact == billed(Charge.objects.all())  # to the last decimal
    assert outcome.warnings == []
    # No PI tags: every cost kept, unattributed and flagged.
    assert outcome.flagged == outcome.charges == Charge.objects.count()
    assert set(Charge.objects.values_list("flag_summary", flat=True)) == {"unattributed"}
    assert set(Charge.objects.values_list("sub_account_id", flat=True)) == {p[3] for p in FOCUS_10_PROVIDERS}
    charge = Charge.objects.filter(charge_period_start__isnull=False).earliest("charge_period_start")
    assert charge.charge_period_start == dt.datetime(2024, 9, 1, tzinfo=UTC)


def test_focus_10_sample_shape_with_a_period_keeps_the_straggler(sources, tmp_path):
    path = focus_10_sample(tmp_path / "focus_sample.csv", rows=300)
    outcome = ingest(path, source="aws", period="2024-09")
    (part,) = outcome.parts
    assert (part.period, part.rows, part.mismatched_rows) == ("2024-09", 300, {"2024-10": 1})
    assert billed(Charge.objects.all()) == file_billed_sum(path)
    straggler = Charge.objects.get(flags__reason="period_mismatch")
    assert straggler.flag_summary == "unattributed, period_mismatch:2024-10"


def test_timestamp_forms(sources, tmp_path):
    forms = {
        "r-1": ("2025-01-01T00:00:00Z", "2025-01-02T03:04:05Z", dt.datetime(2025, 1, 2, 3, 4, 5)),
        "r-2": ("2025-01-01 00:00:00", "2025-01-02 03:04:05", dt.datetime(2025, 1, 2, 3, 4, 5)),
        "r-3": ("2025-01-01", "2025-01-02", dt.datetime(2025, 1, 2)),
        "r-4": ("2025-01-01T00:00Z", "2025-01-02T03:04", dt.datetime(2025, 1, 2, 3, 4)),
        "r-5": (
            "2025-01-01T00:00:00.000Z",
            "2025-01-02T03:04:05.250+00:00",
            dt.datetime(2025, 1, 2, 3, 4, 5),
        ),
        "r-6": ("2025-01-01 00:00:00 UTC", "2025-01-02T03:04:05", dt.datetime(2025, 1, 2, 3, 4, 5)),
    }
    rows = [
        focus_row(ResourceId=rid, BillingPeriodStart=period, ChargePeriodStart=start, ChargePeriodEnd=start)
        for rid, (period, start, _) in forms.items()
    ]
    outcome = ingest(write_focus(tmp_path / "aws.csv", rows), period=None)
    assert outcome.period == "2025-01"
    starts = {c.resource_id: c.charge_period_start for c in charges_of(outcome)}
    assert starts == {rid: expected.replace(tzinfo=UTC) for rid, (_, _, expected) in forms.items()}


def test_long_ids_stay_strings(sources, tmp_path):
    path = write_focus(
        tmp_path / "aws.csv",
        [focus_row(SubAccountId="012345678901", ResourceId="000000000042", ResourceName="0012")],
    )
    (charge,) = charges_of(ingest(path))
    assert (charge.sub_account_id, charge.resource_id, charge.resource_name) == (
        "012345678901",
        "000000000042",
        "0012",
    )


def test_ten_decimals_are_exact(sources, tmp_path):
    amounts = ["0.0000000001", "123456.1234567891", "-0.0000000003", "99999999.9999999999"]
    rows = [focus_row(BilledCost=a, ListCost=a) for a in amounts]  # one resource: summed into one charge
    rows.append(focus_row(ResourceId="i-0002", BilledCost="0.1234567890", ListCost="0.1234567891"))
    outcome = ingest(write_focus(tmp_path / "aws.csv", rows))
    first, second = charges_of(outcome)
    assert first.line_count == 4
    assert str(first.billed_cost) == "100123456.1234567888"
    assert first.list_cost == first.billed_cost
    assert (second.billed_cost, second.list_cost) == (D("0.1234567890"), D("0.1234567891"))
    record = Import.objects.get()
    assert record.billed_total == D("100123456.2469135778")
    assert record.list_total == D("100123456.2469135779")
    assert record.warnings == []


def test_more_than_ten_decimals_are_rounded_with_a_warning(sources, tmp_path):
    rows = [
        focus_row(ResourceId="r-1", BilledCost="0.12345678915", ListCost="1"),  # half-even: up to ...92
        focus_row(ResourceId="r-2", BilledCost="0.12345678925", ListCost="1"),  # half-even: stays ...92
        focus_row(ResourceId="r-3", BilledCost="1.00000000001", ListCost="1"),
    ]
    outcome = ingest(write_focus(tmp_path / "aws.csv", rows))
    assert [c.billed_cost for c in charges_of(outcome)] == [D("0.1234567892"), D("0.1234567892"), D("1")]
    record = Import.objects.get()
    assert record.status == "completed"
    assert record.billed_total == D("1.2469135784")
    assert len(record.warnings) == 1
    assert record.warnings[0].startswith("3 amounts had more than 10 decimal places and were rounded")
    assert outcome.warnings == record.warnings


def test_tags_with_provider_prefixes(sources, tmp_path):
    rows = [
        focus_row(
            ResourceId="r-1",
            Tags=json.dumps(
                {
                    "user:PI_Email": "Ada@Uni.Example",
                    "tag:project_id": "proj-ada",
                    "label:fund_org": "NSF-0001",
                    "user:grant_number": "G-17",
                    "user:request_id": "REQ-9",
                    "user:environment": "prod",
                }
            ),
        ),
        # Escaped JSON goes through the slow path and must give the same attribution.
        focus_row(
            ResourceId="r-2",
            Tags='{"user:pi_email": "ada@uni.example", "user:project_id": "proj-ada", '
            '"user:fund_org": "NSF-0001", "note": "caf\\u00e9"}',
        ),
    ]
    first, second = charges_of(ingest(write_focus(tmp_path / "aws.csv", rows)))
    assert (first.pi_email, first.project_code, first.fund_org) == ("ada@uni.example", "proj-ada", "NSF-0001")
    assert (first.reference_1, first.reference_2, first.review_state) == ("G-17", "REQ-9", "ok")
    assert first.tags["user:environment"] == "prod"
    assert (second.pi_email, second.project_code, second.fund_org) == (
        "ada@uni.example",
        "proj-ada",
        "NSF-0001",
    )
    assert second.tags["note"] == "café"
    assert first.pi_id == second.pi_id and first.project_id == second.project_id


def test_azure_tags_without_braces(sources, tmp_path):
    row = focus_row(Tags='"pi_email": "ada@uni.example", "project_id": "proj-ada", "fund_org": "NSF-0001"')
    (charge,) = charges_of(ingest(write_focus(tmp_path / "azure.csv", [row]), source="azure"))
    assert (charge.pi_email, charge.project_code, charge.review_state) == (
        "ada@uni.example",
        "proj-ada",
        "ok",
    )
    assert charge.tags == ADA


def test_missing_list_cost_counts_as_billed(sources, tmp_path):
    header = [h for h in HEADER if h != "ListCost"]
    rows = [focus_row(ResourceId="r-1", BilledCost="4.20"), focus_row(ResourceId="r-2", BilledCost="-1.05")]
    outcome = ingest(write_focus(tmp_path / "aws.csv", rows, header=header))
    assert [(c.list_cost, c.billed_cost) for c in charges_of(outcome)] == [
        (D("4.2"), D("4.2")),
        (D("-1.05"), D("-1.05")),
    ]
    assert outcome.list_total == outcome.billed_total == D("3.15")


def test_account_mapping_attributes_untagged_rows(sources, tmp_path):
    services.account_mapping_set(
        sub_account_id="012345678901",
        project_id="shared-lab",
        pi_email="grace@uni.example",
        fund_org="GEN-0001",
    )
    services.account_mapping_set(
        sub_account_id="012345678901",
        project_id="aws-lab",
        pi_email="alan@uni.example",
        fund_org="AWS-0002",
        source="aws",
    )
    rows = [
        focus_row(ResourceId="r-untagged", SubAccountId="012345678901", Tags=tags(environment="prod")),
        focus_row(ResourceId="r-tagged", SubAccountId="012345678901"),
        focus_row(ResourceId="r-unknown", SubAccountId="999999999999", Tags=""),
    ]
    aws = {c.resource_id: c for c in charges_of(ingest(write_focus(tmp_path / "aws.csv", rows)))}
    azure_rows = [{**row, "ResourceName": "azure-" + row["ResourceName"]} for row in rows]
    azure_file = write_focus(tmp_path / "azure.csv", azure_rows)
    azure = {c.resource_id: c for c in charges_of(ingest(azure_file, source="azure"))}

    # The aws-only mapping beats the global one for aws; azure falls back to the global mapping.
    mapped = aws["r-untagged"]
    assert (mapped.pi_email, mapped.project_code, mapped.fund_org) == (
        "alan@uni.example",
        "aws-lab",
        "AWS-0002",
    )
    assert (mapped.attribution_source, mapped.review_state) == ("mapping", "ok")
    assert mapped.project == Project.objects.get(project_id="aws-lab")
    fallback = azure["r-untagged"]
    assert (fallback.pi_email, fallback.project_code, fallback.fund_org) == (
        "grace@uni.example",
        "shared-lab",
        "GEN-0001",
    )
    # Tags win over mappings; no tags and no mapping stays unattributed.
    for charges in (aws, azure):
        assert (charges["r-tagged"].pi_email, charges["r-tagged"].attribution_source) == (
            "ada@uni.example",
            "tags",
        )
        assert (charges["r-unknown"].attribution_source, charges["r-unknown"].review_state) == (
            "none",
            "flagged",
        )
        assert charges["r-unknown"].flags.get().reason == "unattributed"


def test_tags_naming_only_a_known_project(sources, tmp_path):
    project = ProjectFactory(project_id="known-proj", pi__email="lin@uni.example", fund_org="DOE-7")
    rows = [
        focus_row(ResourceId="r-1", Tags=tags(project_id="known-proj")),
        focus_row(ResourceId="r-2", Tags=tags(project_id="unknown-proj")),
    ]
    known, unknown = charges_of(ingest(write_focus(tmp_path / "aws.csv", rows)))
    assert (known.pi, known.project, known.pi_email, known.fund_org) == (
        project.pi,
        project,
        "lin@uni.example",
        "DOE-7",
    )
    assert (known.attribution_source, known.review_state) == ("project", "ok")
    assert (unknown.pi, unknown.project_code, unknown.review_state) == (None, "unknown-proj", "flagged")
    assert not Project.objects.filter(project_id="unknown-proj").exists()


def test_pi_tag_that_is_not_an_email_names_nobody(sources, tmp_path):
    ProjectFactory(project_id="known-proj", pi__email="lin@uni.example", fund_org="DOE-7")
    services.account_mapping_set(
        sub_account_id="444455556666", project_id="mapped", pi_email="kim@uni.example", fund_org="NIH-3"
    )
    rows = [
        focus_row(ResourceId="r-1", Tags=tags(pi_email="n/a", project_id="known-proj")),
        focus_row(
            ResourceId="r-2", Tags=tags(pi_email="TBD", project_id="new-proj"), SubAccountId="444455556666"
        ),
        focus_row(ResourceId="r-3", Tags=tags(pi_email="unknown", project_id="new-proj", fund_org="X-1")),
    ]
    by_project, by_mapping, nobody = charges_of(ingest(write_focus(tmp_path / "aws.csv", rows)))
    # The payer still comes from the project or the mapping, but the bad PI tag is flagged.
    assert (by_project.pi_email, by_project.attribution_source, by_project.review_state) == (
        "lin@uni.example",
        "project",
        "flagged",
    )
    assert by_project.flag_summary == "invalid_pi_email"
    assert (by_mapping.pi_email, by_mapping.project_code, by_mapping.attribution_source) == (
        "kim@uni.example",
        "mapped",
        "mapping",
    )
    assert by_mapping.flag_summary == "invalid_pi_email"
    # Kept as found, unattributed and flagged; no PI "unknown" and no project under nobody.
    assert (nobody.pi, nobody.pi_email, nobody.project_code, nobody.review_state, nobody.flag_summary) == (
        None,
        "unknown",
        "new-proj",
        "flagged",
        "invalid_pi_email, unattributed",
    )
    assert set(PI.objects.values_list("email", flat=True)) == {"lin@uni.example", "kim@uni.example"}
    assert not Project.objects.filter(project_id="new-proj").exists()


def test_messages_name_the_file_given_not_its_stored_copy(sources, tmp_path):
    path = tmp_path / "aws_2025-01.csv"
    for attempt in range(2):
        write_focus(path, [focus_row(BilledCost=f"{attempt}x")])
        with pytest.raises(IngestError) as caught:
            ingest(path)
        assert caught.value.message == "aws_2025-01.csv: 1 bad row; nothing was imported"
    path.write_bytes(b"")
    with pytest.raises(IngestError, match=r"^aws_2025-01\.csv is empty"):
        ingest(path)
    # Each attempt keeps its own stored copy, under the name it was given.
    assert [Path(record.file.name).name for record in Import.objects.all()] == ["aws_2025-01.csv"] * 3
    assert len({record.file.name for record in Import.objects.all()}) == 3
    assert set(Import.objects.values_list("status", flat=True)) == {"failed"}


def test_charges_sum_rows_of_the_same_resource(sources, tmp_path):
    rows = [
        focus_row(
            ChargePeriodStart=f"2025-01-{day:02d}T00:00:00Z",
            ChargePeriodEnd=f"2025-01-{day:02d}T23:59:59Z",
            BilledCost="1.10",
            ListCost="2.00",
        )
        for day in range(1, 11)
    ]
    rows.append(focus_row(ResourceId="i-0001", ServiceName="Amazon EBS", BilledCost="0.5", ListCost="0.5"))
    storage, compute = sorted(
        charges_of(ingest(write_focus(tmp_path / "aws.csv", rows))), key=lambda c: c.service_name
    )
    assert (compute.service_name, compute.line_count, compute.billed_cost, compute.list_cost) == (
        "Amazon EC2",
        10,
        D("11.00"),
        D("20.00"),
    )
    assert compute.charge_period_start == dt.datetime(2025, 1, 1, tzinfo=UTC)
    assert compute.charge_period_end == dt.datetime(2025, 1, 10, 23, 59, 59, tzinfo=UTC)
    assert (storage.line_count, storage.billed_cost) == (1, D("0.5"))


# --- bad input: a clear message, a failed Import, nothing else ---------------------------------------------


def _csv_text(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


def _line(**overrides: str) -> list[str]:
    row = focus_row(**overrides)
    return [row[h] for h in HEADER]


BAD_FILES = {
    "missing column": (
        _csv_text([[h for h in HEADER if h != "BilledCost"], _line()[:5] + _line()[6:]]),
        r"aws_2025-01\.csv: missing required column BilledCost \(columns found: BillingPeriodStart,",
        [],
    ),
    "no resource column": (
        _csv_text([["BillingPeriodStart", "BilledCost"], ["2025-01-01", "1"]]),
        "no column identifies the resource; need one of ResourceId, ResourceName, ServiceName",
        [],
    ),
    "bad number": (
        _csv_text([HEADER, _line(), _line(BilledCost="12.3.4")]),
        r"^aws_2025-01\.csv: 1 bad row; nothing was imported$",
        [RowError(3, "BilledCost", "12.3.4", "not a number")],
    ),
    "empty billed cost": (
        _csv_text([HEADER, _line(), _line(), _line(BilledCost="")]),
        "1 bad row",
        [RowError(4, "BilledCost", "", "BilledCost is empty")],
    ),
    "bad date": (
        _csv_text([HEADER, _line(), _line(BillingPeriodStart="01/15/2025")]),
        "1 bad row",
        [
            RowError(
                3, "BillingPeriodStart", "01/15/2025", "not a date or timestamp (YYYY-MM-DD[THH:MM:SS][Z])"
            )
        ],
    ),
    "impossible date": (
        _csv_text([HEADER, _line(ChargePeriodStart="2025-02-30T00:00:00Z")]),
        "1 bad row",
        [RowError(2, "ChargePeriodStart", "2025-02-30T00:00:00Z", "no such date or time")],
    ),
    "empty file": (b"", r"^aws_2025-01\.csv is empty: no header line, no data$", []),
    "header only": (_csv_text([HEADER]), r"^aws_2025-01\.csv has a header but no data rows$", []),
    "semicolons": (
        ";".join(HEADER).encode() + b"\n" + ";".join(_line(Tags="{}")).encode() + b"\n",
        r"^aws_2025-01\.csv: the header is one column separated by semicolons; "
        "FOCUS CSV files must be comma-separated$",
        [],
    ),
    "latin-1 bytes": (
        _csv_text([HEADER, _line()])
        + _csv_text([_line(ResourceName="Müller-vm")]).decode().encode("latin-1"),
        r"aws_2025-01\.csv is not UTF-8 text: line 3, byte \d+ cannot be decoded; export it as UTF-8",
        [RowError(3, "", "", "invalid UTF-8")],
    ),
    "latin-1 header": (
        "BillingPeriodStart,BilledCost,ResourceId,Bemerkung\xe4\n2025-01-01,1,r\n".encode("latin-1"),
        r"aws_2025-01\.csv is not UTF-8 text \(line 1, byte \d+\); export it as UTF-8",
        [],
    ),
    "malformed tags": (
        _csv_text([HEADER, _line(), _line(Tags='{"pi_email": "ada@uni.example"')]),
        "1 bad row",
        [
            RowError(
                3,
                "Tags",
                '{"pi_email": "ada@uni.example"',
                "Tags is not valid JSON (Expecting ',' delimiter: line 1 column 31 (char 30))",
            )
        ],
    ),
    "tags not an object": (
        _csv_text([HEADER, _line(Tags="[1, 2]")]),
        "1 bad row",
        [RowError(2, "Tags", "[1, 2]", "Tags is not valid JSON (Tags is not a JSON object)")],
    ),
    "too many fields": (
        _csv_text([HEADER, _line(), [*_line(Tags="{}"), "extra"]]),
        "1 bad row",
        [RowError(3, "", ",".join([*_line(Tags="{}"), "extra"]), "expected 11 fields, found 12")],
    ),
    "too few fields": (
        _csv_text([HEADER, _line(), ["2025-01-01", "1"]]),
        "1 bad row",
        [RowError(3, "", "2025-01-01,1", "expected 11 fields, found 2")],
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_input_is_refused_and_nothing_written(sources, tmp_path, case):
    content, message, row_errors = BAD_FILES[case]
    path = tmp_path / "aws_2025-01.csv"
    path.write_bytes(content)

    with pytest.raises(IngestError, match=message) as caught:
        ingest(path)

    assert caught.value.errors == row_errors
    for error in row_errors:
        assert str(error) in caught.value.describe()
    the_failed_import(caught.value)
    assert_nothing_written()
    assert BillingPeriod.objects.count() == 0


def test_bad_rows_read_ahead_keep_their_lines(sources, tmp_path, settings, monkeypatch):
    """Past the first full batch the file is read a batch ahead in a thread of its own: rows the
    reader skips there (wrong number of fields) and rows the checks refuse later are reported at
    their own lines all the same, and nothing is written."""
    from billing.ingest import background

    settings.OPENCHARGEBACK_INGEST_BLOCK_BYTES = 2048  # a few rows a block
    monkeypatch.setattr(pipeline, "FIRST_TRANSFORM_ROWS", 20)
    monkeypatch.setattr(pipeline, "TRANSFORM_ROWS", 20)
    threads = []
    real = background.produced_in_background
    monkeypatch.setattr(
        pipeline,
        "produced_in_background",
        lambda items, ahead, name: threads.append(name) or real(items, ahead, name=name),
    )
    lines = [HEADER] + [_line(ResourceId=f"r-{n}") for n in range(300)]
    lines[150] = ["2025-01-01", "1"]  # line 151 of the file (the header is line 1)
    lines[220] = _line(BilledCost="12.3.4")
    lines[280] = [*_line(Tags="{}"), "extra"]
    path = tmp_path / "aws_2025-01.csv"
    path.write_bytes(_csv_text(lines))

    with pytest.raises(IngestError, match="3 bad rows") as caught:
        ingest(path)

    assert threads == ["focus-reader"]
    assert caught.value.errors == [
        RowError(151, "", "2025-01-01,1", "expected 11 fields, found 2"),
        RowError(221, "BilledCost", "12.3.4", "not a number"),
        RowError(281, "", ",".join([*_line(Tags="{}"), "extra"]), "expected 11 fields, found 12"),
    ]
    assert_nothing_written()

    # The same file without the bad rows imports whole, read ahead the same way.
    lines[150], lines[220], lines[280] = (_line(ResourceId=f"r-{n}") for n in (149, 219, 279))
    path.write_bytes(_csv_text(lines))
    assert ingest(path).rows == 300


def test_truncated_gzip_is_refused(sources, tmp_path):
    rows = [focus_row(ResourceId=f"r-{n}", BilledCost=str(n)) for n in range(5000)]
    whole = write_focus(tmp_path / "whole.csv.gz", rows).read_bytes()
    path = tmp_path / "aws_2025-01.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(IngestError) as caught:
        ingest(path)
    assert caught.value.message == (
        "aws_2025-01.csv.gz: the file could not be read to its end "
        "(Compressed file ended before the end-of-stream marker was reached)"
    )
    the_failed_import(caught.value)
    assert_nothing_written()


def test_bad_rows_are_all_reported_by_line(sources, tmp_path):
    lines = [HEADER, _line()]
    lines += [_line(BilledCost=f"x{n}") for n in range(60)]
    lines.append(_line(BillingPeriodStart="yesterday"))
    path = tmp_path / "aws_2025-01.csv"
    path.write_bytes(_csv_text(lines))
    with pytest.raises(IngestError, match=r"^aws_2025-01\.csv: 61 bad rows; nothing was imported$") as caught:
        ingest(path)
    errors = caught.value.errors
    assert len(errors) == IngestError.MAX_ROW_ERRORS
    assert errors[0] == RowError(3, "BilledCost", "x0", "not a number")
    assert [e.line for e in errors] == sorted(e.line for e in errors)
    assert "line 3, column BilledCost, value 'x0': not a number" in caught.value.describe()
    assert caught.value.describe().endswith("  ... and 11 more")
    the_failed_import(caught.value)
    assert_nothing_written()


def test_rows_of_another_month_than_the_period_are_kept_and_flagged(sources, tmp_path):
    """With -p, a straggler row stays in the period given, flagged (as the original does): nothing
    is refused. The same resource in both months stays two charges, each with its own flags."""
    rows = [
        focus_row(),
        focus_row(BillingPeriodStart="2025-02-01T00:00:00Z", BilledCost="1.25"),
        focus_row(BillingPeriodStart="2025-02-01", BilledCost="2.25", ResourceId="i-0002"),
        focus_row(BillingPeriodStart="2024-12-01", BilledCost="3.00", Tags=""),
    ]
    path = write_focus(tmp_path / "aws_2025-01.csv", rows)

    outcome = ingest(path, period="2025-01")

    assert (outcome.period, outcome.rows, outcome.charges, outcome.flagged) == ("2025-01", 4, 4, 3)
    (part,) = outcome.parts
    assert part.mismatched_rows == {"2024-12": 1, "2025-02": 2}
    assert outcome.billed_total == D("15.00") == file_billed_sum(path)
    assert list(BillingPeriod.objects.values_list("period", flat=True)) == ["2025-01"]
    by_billed = {c.billed_cost: c for c in Charge.objects.all()}
    assert by_billed[D("8.50")].review_state == "ok" and not by_billed[D("8.50")].flags.exists()
    flags = {
        amount: sorted((f.reason, f.detail) for f in by_billed[D(amount)].flags.all())
        for amount in ("1.25", "2.25", "3.00")
    }
    assert flags == {
        "1.25": [("period_mismatch", "billing period mismatch (row says 2025-02)")],
        "2.25": [("period_mismatch", "billing period mismatch (row says 2025-02)")],
        "3.00": [
            ("period_mismatch", "billing period mismatch (row says 2024-12)"),
            ("unattributed", "no PI in tags and no account mapping"),
        ],
    }
    assert by_billed[D("1.25")].flag_summary == "period_mismatch:2025-02"
    assert by_billed[D("3.00")].flag_summary == "unattributed, period_mismatch:2024-12"
    assert flag_labels(by_billed[D("3.00")].flag_summary) == [
        "Unattributed",
        "Billing period mismatch (row says 2024-12)",
    ]

    # The rules running again (a flag rule changed) keep the mismatch: it is a fact of the file.
    assert services.period_reevaluate_flags(period="2025-01") == 0
    assert by_billed[D("1.25")].flags.get().reason == "period_mismatch"
    assert Charge.objects.get(pk=by_billed[D("1.25")].pk).review_state == "flagged"
    # So does a corrected attribution.
    corrected = services.charge_correct_attribution(
        charge_id=by_billed[D("3.00")].pk,
        pi_email="ada@uni.example",
        project_id="proj-ada",
        fund_org="NSF-0001",
    )
    assert (corrected.review_state, sorted(corrected.flags.values_list("reason", flat=True))) == (
        "flagged",
        ["period_mismatch"],
    )


def test_file_spanning_two_months_without_period_is_split(sources, tmp_path):
    rows = [
        focus_row(),
        focus_row(ResourceId="i-0002", BilledCost="1.50"),
        focus_row(BillingPeriodStart="2025-02-01", BilledCost="2.00"),
    ]
    path = write_focus(tmp_path / "aws_2025-01.csv", rows)

    outcome = ingest(path, period=None)

    assert [(p.period, p.rows, p.charges, p.billed_total) for p in outcome.parts] == [
        ("2025-01", 2, 2, D("10.00")),
        ("2025-02", 1, 1, D("2.00")),
    ]
    assert outcome.period == "2025-01" and outcome.billed_total == D("12.00") == file_billed_sum(path)
    first, second = (Import.objects.get(pk=p.import_id) for p in outcome.parts)
    assert (first.period.period, first.part_of_id, first.rows_read, first.billed_total) == (
        "2025-01",
        None,
        2,
        D("10"),
    )
    assert (second.period.period, second.part_of_id, second.rows_read) == ("2025-02", first.pk, 1)
    assert second.file.name == first.file.name and second.sha256 == first.sha256
    assert {c.period.period: c.import_run_id for c in Charge.objects.filter(resource_id="i-0001")} == {
        "2025-01": first.pk,
        "2025-02": second.pk,
    }
    assert not ChargeFlag.objects.exists()
    # The same bytes again: refused, naming the file's first import and both of its periods.
    with pytest.raises(
        services.AlreadyImported,
        match=rf"^already imported as #{first.pk} \(aws_2025-01.csv, aws 2025-01, 2025-02\)",
    ):
        ingest(path, period=None)

    # The same file name again, now without the February row: the whole earlier file is superseded.
    fixed = redelivered(write_focus(tmp_path / "fixed.csv", rows[:2]))
    again = ingest(fixed, period=None)
    assert sorted(again.supersedes) == [first.pk, second.pk]
    assert not Charge.objects.filter(period__period="2025-02").exists()
    assert billed(Charge.objects.all()) == D("10.00")


def test_split_file_is_all_or_nothing(sources, tmp_path):
    """Every period of a split file must accept imports; otherwise nothing is written."""
    services.period_open(period="2025-02")
    services.period_close(period="2025-02")
    rows = [focus_row(), focus_row(BillingPeriodStart="2025-02-01", BilledCost="2.00")]
    path = write_focus(tmp_path / "aws_2025-01.csv", rows)
    with pytest.raises(Refused) as caught:
        ingest(path, period=None)
    assert str(caught.value).startswith("period 2025-02 is closed: it accepts no imports")
    the_failed_import(caught.value)
    assert_nothing_written()
    assert not BillingPeriod.objects.filter(period="2025-01").exists()


def test_superseding_a_split_file_needs_all_its_periods_open(sources, tmp_path):
    rows = [focus_row(), focus_row(BillingPeriodStart="2025-02-01", BilledCost="2.00")]
    first = ingest(write_focus(tmp_path / "aws_2025-01.csv", rows), period=None)
    services.period_close(period="2025-02")
    again = redelivered(write_focus(tmp_path / "v2.csv", [focus_row(BilledCost="9.00")]))
    with pytest.raises(Refused, match=r"also has rows in period 2025-02, which is closed: reopen it"):
        ingest(again, period=None)
    assert billed(Charge.objects.all()) == D("10.50")
    assert set(
        Import.objects.filter(pk__in=[p.import_id for p in first.parts]).values_list("status", flat=True)
    ) == {"completed"}


def test_period_from_the_data_when_not_given(sources, tmp_path):
    path = write_focus(tmp_path / "aws.csv", [focus_row(BillingPeriodStart="2025-03-01")])
    outcome = ingest(path, period=None)
    assert outcome.period == "2025-03"
    period = BillingPeriod.objects.get()
    assert (period.period, period.status) == ("2025-03", "open")
    assert period.transitions.get().note == "created by import"


def test_closed_period_refuses_imports(sources, tmp_path):
    services.period_open(period="2025-01")
    services.period_close(period="2025-01")
    path = write_focus(tmp_path / "aws_2025-01.csv", [focus_row()])
    with pytest.raises(Refused) as caught:
        ingest(path)
    assert str(caught.value) == (
        "period 2025-01 is closed: it accepts no imports; reopen it first (periods reopen 2025-01 --reason ...)"
    )
    the_failed_import(caught.value)
    assert_nothing_written()
    assert BillingPeriod.objects.get().status == "closed"


def test_finalized_period_refuses_imports(sources, tmp_path):
    services.period_open(period="2025-01")
    services.period_close(period="2025-01")
    services.period_finalize(period="2025-01")
    path = write_focus(tmp_path / "aws_2025-01.csv", [focus_row()])
    with pytest.raises(Refused) as caught:
        ingest(path)
    assert str(caught.value) == "period 2025-01 is finalized: it accepts no imports"
    the_failed_import(caught.value)
    assert_nothing_written()


def test_failed_import_leaves_earlier_import_untouched(sources, synthetic, tmp_path):
    path, _ = synthetic(rows=300, seed=1)
    first = ingest(path)
    before = list(Charge.objects.order_by("id").values_list("id", "billed_cost", "review_state"))
    bad = tmp_path / "aws_2025-01_fixed.csv"
    bad.write_bytes(_csv_text([HEADER, _line(BilledCost="abc")]))
    with pytest.raises(IngestError):
        ingest(bad)
    assert list(Charge.objects.order_by("id").values_list("id", "billed_cost", "review_state")) == before
    assert Import.objects.get(pk=first.import_id).status == "completed"
    assert Import.objects.exclude(pk=first.import_id).get().status == "failed"


def test_unknown_source_and_missing_file(sources, tmp_path):
    path = write_focus(tmp_path / "x.csv", [focus_row()])
    with pytest.raises(Refused, match=r"unknown source 'oracle' \(known: aws, azure, gcp, hpc\)"):
        ingest(path, source="oracle")
    with pytest.raises(IngestError, match="file not found"):
        ingest(tmp_path / "missing.csv")
    with pytest.raises(Refused, match="invalid period '2025-13'"):
        ingest(path, period="2025-13")
    assert Import.objects.count() == 0


# --- all or nothing when the import dies mid-write ----------------------------------------------------------


def test_writer_failing_midway_writes_nothing(sources, synthetic, monkeypatch):
    path, _ = synthetic(rows=1000, seed=4)
    real_write = writer.write_charges
    written = []

    def write_some_then_fail(rows, **options):
        written.append(real_write(itertools.islice(rows, 100), **options))
        assert Charge.objects.count() == 100  # really inserted, inside the import's transaction
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "write_charges", write_some_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(path)

    assert written == [100]
    record = Import.objects.get()
    assert (record.status, record.error_message) == ("failed", "internal error: disk full")
    assert_nothing_written()
    assert BillingPeriod.objects.count() == 0


def charge_indexes() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'billing_charge' "
            "AND sql IS NOT NULL ORDER BY name"
        )
        return cursor.fetchall()


@pytest.mark.skipif("os.environ.get('DATABASE_URL', '').startswith('postgres')")
def test_sqlite_indexes_are_rebuilt_after_a_bulk_insert_and_survive_a_failure(
    sources, synthetic, monkeypatch
):
    """An import larger than the table drops the charge indexes while it inserts and builds them
    again in its transaction; one that fails leaves them as they were; a small one keeps them."""
    monkeypatch.setattr(writer, "REBUILD_INDEXES_FROM_ROWS", 10)
    monkeypatch.setattr(writer, "SQLITE_BATCH", 50)
    before = charge_indexes()
    assert len(before) >= 5
    seen_while_inserting = []
    real_batches = writer._batches_in_background

    def batches(*args):
        for batch in real_batches(*args):
            seen_while_inserting.append(len(charge_indexes()))
            yield batch

    monkeypatch.setattr(writer, "_batches_in_background", batches)
    path, _ = synthetic(rows=1000, seed=5)
    outcome = ingest(path)
    assert seen_while_inserting and set(seen_while_inserting) == {0}
    assert charge_indexes() == before
    assert billed(Charge.objects.filter(period__period="2025-01")) == outcome.billed_total

    # Fewer rows than the table holds: the indexes stay while inserting.
    seen_while_inserting.clear()
    ingest(write_focus(path.with_name("aws_2025-01_small.csv"), [focus_row() for _ in range(20)]))
    assert set(seen_while_inserting) == {len(before)}

    # A failure after the drop: the transaction rolls the drop back too.
    def fail_in_second_batch(*args):
        for number, batch in enumerate(real_batches(*args)):
            if number == 1:
                raise RuntimeError("disk full")
            yield batch

    monkeypatch.setattr(writer, "_batches_in_background", fail_in_second_batch)
    Charge.objects.all().delete()
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(path, force=True)
    assert charge_indexes() == before
    assert Charge.objects.count() == 0


@pytest.mark.skipif("os.environ.get('DATABASE_URL', '').startswith('postgres')")
def test_sqlite_charges_go_in_many_to_a_statement_in_file_order(sources, synthetic, monkeypatch):
    """SQLite inserts charges by multi-row INSERT statements; where the statements and batches
    end changes nothing that is written, nor the order of the ids."""
    path, _ = synthetic(rows=600, seed=12)
    fields = (
        "pi_email", "project_code", "resource_id", "sku_id", "charge_period_start", "quantity",
        "billed_cost", "list_cost", "tags", "review_state", "flag_summary",
    )  # fmt: skip
    first = ingest(path)
    written = list(Charge.objects.filter(import_run_id=first.import_id).order_by("id").values_list(*fields))

    monkeypatch.setattr(writer, "SQLITE_ROWS_PER_STATEMENT", 7)
    monkeypatch.setattr(writer, "SQLITE_BATCH", 20)
    batch_rows: list[list[int]] = []  # rows of each statement, per batch
    real_batches = writer._batches

    def batches(*args):
        for batch in real_batches(*args):
            batch_rows.append([len(params) // len(writer.CHARGE_COLUMNS) for params in batch])
            yield batch

    monkeypatch.setattr(writer, "_batches", batches)
    second = ingest(path, force=True)
    again = Charge.objects.filter(import_run_id=second.import_id).order_by("id")
    ids = list(again.values_list("id", flat=True))
    assert list(again.values_list(*fields)) == written
    assert ids == list(range(ids[0], ids[0] + len(written)))
    assert sum(map(sum, batch_rows)) == len(written) == second.charges
    # Statements of 7 rows, the last of a batch (at most 20 rows) taking what is left.
    assert all(
        rows[:-1] == [7] * (len(rows) - 1) and 0 < rows[-1] <= 7 and sum(rows) <= 20 for rows in batch_rows
    )
    assert max(map(sum, batch_rows)) == 20
    assert billed(again) == second.billed_total == first.billed_total


@pytest.mark.skipif("os.environ.get('DATABASE_URL', '').startswith('postgres')")
def test_a_row_sqlite_refuses_raises_djangos_error_and_writes_nothing(db):
    """The writer inserts through the driver's own cursor; a refusal still comes as Django's error."""
    from django.db import IntegrityError

    values = dict.fromkeys(writer.CHARGE_COLUMNS, "")
    values.update(period_id=1, source_id=1, import_run_id=1, pi_id=None, project_id=None, quantity=None)
    values.update(list_cost=0, contracted_cost=0, billed_cost=0, effective_cost=0, line_count=1)
    values.update(charge_period_start=None, charge_period_end=None, tags="{}", review_state="bogus")
    with pytest.raises(IntegrityError, match="CHECK constraint failed"), transaction.atomic():
        writer.write_charges([tuple(values[name] for name in writer.CHARGE_COLUMNS)])
    assert Charge.objects.count() == 0


def test_tables_whose_columns_are_not_the_targets_are_refused_before_writing(db):
    """A table of rows to write must hold exactly the target's columns, in order: else its values
    would land in the wrong columns. Refused before anything is written, on either database."""
    import pyarrow as pa

    from billing.rating.ingest import SUBSIDY_COLUMNS
    from billing.rating.models import ChargeSubsidy

    swapped = pa.table({name: pa.array([1]) for name in reversed(SUBSIDY_COLUMNS)})
    with pytest.raises(ValueError, match="rows to write have columns"), transaction.atomic():
        writer.write_rows(ChargeSubsidy._meta.db_table, SUBSIDY_COLUMNS, writer.RowTables([swapped]))
    assert ChargeSubsidy.objects.count() == 0


def test_rows_given_as_tuples_are_grouped_into_statements():
    """Rows given one by one (not as tables) are flattened into statements of `per_statement` rows,
    `size` rows to a batch; the last statement takes what is left."""
    rows = [(n, f"r{n}") for n in range(11)]
    batches = list(writer._batches(iter(rows), 4, 2))
    assert [[len(params) // 2 for params in batch] for batch in batches] == [[2, 2], [2, 2], [2, 1]]
    assert [value for batch in batches for params in batch for value in params] == [
        v for row in rows for v in row
    ]


@pytest.mark.skipif("os.environ.get('DATABASE_URL', '').startswith('postgres')")
@pytest.mark.django_db(transaction=True)
def test_sqlite_indexes_are_built_again_sorting_on_disk(monkeypatch, tmp_path):
    """The connection keeps temporary storage in memory (settings), where SQLite's sorter holds
    every entry of an index it builds: the import builds the charge indexes again sorting to
    temporary files (memory then stops growing with its charges), inserts as before, and gives
    the setting back. The temporary database migrations leave open is closed before the import's
    transaction (SQLite refuses the change while one is open); one opened in a caller's
    transaction keeps the sort in memory, and the import goes on."""
    monkeypatch.setattr(writer, "REBUILD_INDEXES_FROM_ROWS", 1)
    services.source_create(slug="aws")
    real_execute = writer.CursorWrapper.execute
    inserting, building = [], []

    def temp_store(cursor) -> int:
        real_execute(cursor, "PRAGMA temp_store")
        return cursor.fetchone()[0]

    def execute(self, sql, params=None):
        if sql.startswith("CREATE INDEX"):
            building.append(temp_store(self))
        return real_execute(self, sql, params)

    real_write = pipeline.write_charges

    def write(rows, expected_rows=0):
        with connection.cursor() as cursor:
            inserting.append(temp_store(cursor))
        return real_write(rows, expected_rows)

    monkeypatch.setattr(writer.CursorWrapper, "execute", execute)
    monkeypatch.setattr(pipeline, "write_charges", write)
    with connection.cursor() as cursor:
        real_execute(cursor, "CREATE TEMP TABLE left_by_migrations (x)")  # a temporary database open
    path = write_focus(tmp_path / "aws.csv", [focus_row(), focus_row(ResourceId="i-0002")])
    outcome = ingest(path)
    assert outcome.charges == 2 and len(building) >= 5
    assert (set(building), inserting) == ({1}, [2])  # FILE while building, MEMORY otherwise
    with connection.cursor() as cursor:
        assert temp_store(cursor) == 2

    building.clear()
    Charge.objects.all().delete()
    with transaction.atomic(), connection.cursor() as cursor:
        real_execute(cursor, "CREATE TEMP TABLE scratch (x)")
        assert ingest(path, force=True).charges == 2
        assert temp_store(cursor) == 2
    assert building and set(building) == {2}


KILLED_IMPORT = """
import json, os, signal, sys
import django

django.setup()
from django.core.management import call_command
from django.db import connection

call_command("migrate", verbosity=0)
from billing import services
from billing.ingest import writer

services.source_create(slug="aws")
writer.SQLITE_BATCH = 50
batches = writer._batches_in_background


def die_after_first_batch(*args):
    for number, batch in enumerate(batches(*args)):
        if number == 1:  # batch 0 has been inserted, inside the import's transaction
            with connection.cursor() as cursor:
                seen = {}
                for table in ("billing_charge", "billing_pi", "billing_project"):
                    cursor.execute(f"SELECT COUNT(*) FROM {table}")
                    seen[table] = cursor.fetchone()[0]
            with open(sys.argv[2], "w") as fh:
                json.dump(seen, fh)
            os.kill(os.getpid(), signal.SIGKILL)
        yield batch


writer._batches_in_background = die_after_first_batch
services.import_file(path=sys.argv[1], source="aws", period="2025-01")
print("not killed")
"""


REIMPORT = """
import sys
import django

django.setup()
from billing import services

print(services.import_file(path=sys.argv[1], source="aws", period="2025-01").charges)
"""


@pytest.mark.slow
def test_reader_killed_halfway_leaves_nothing(synthetic, tmp_path):
    """A separate process on its own SQLite file is SIGKILLed after its first insert batch."""
    path, _ = synthetic(rows=2000, seed=8)
    data_dir = tmp_path / "instance"
    data_dir.mkdir()
    database = data_dir / "killed.sqlite3"
    script = tmp_path / "killed_import.py"
    script.write_text(textwrap.dedent(KILLED_IMPORT))
    marker = tmp_path / "seen.json"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCHARGEBACK_CONFIG", "MEDIA_ROOT")}
    env.update(
        DATABASE_URL=f"sqlite:///{database}",
        OPENCHARGEBACK_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="chargeback.settings",
        PYTHONPATH=str(ROOT),
    )

    proc = subprocess.run(
        [sys.executable, str(script), str(path), str(marker)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    seen = json.loads(marker.read_text())
    assert seen["billing_charge"] == 50 and seen["billing_pi"] > 0 and seen["billing_project"] > 0
    with sqlite3.connect(database) as db:
        count = lambda table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: E731
        assert count("billing_charge") == 0
        assert count("billing_chargeflag") == 0
        assert count("billing_pi") == 0
        assert count("billing_project") == 0
        assert count("billing_billingperiod") == 0
        # Only the import's own bookkeeping, written before its transaction, survives.
        assert db.execute("SELECT status, rows_read, charges_created FROM billing_import").fetchall() == [
            ("running", 0, 0)
        ]

    # The next import sees that the killed run's process is gone, marks it failed, and imports.
    again = subprocess.run(
        [sys.executable, "-c", REIMPORT, str(path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT status, error_message FROM billing_import ORDER BY id").fetchall()
        assert rows[0][0] == "failed" and rows[0][1].startswith("interrupted:")
        assert rows[1] == ("completed", "")
        assert db.execute("SELECT COUNT(*) FROM billing_charge").fetchone()[0] == int(again.stdout.strip())


# --- the per-PI view of a synthetic month --------------------------------------------------------------------


def test_period_project_totals_match_manifest_per_project(sources, synthetic):
    path, manifest = synthetic(rows=2000, seed=11, pis=20)
    ingest(path)
    period = selectors.period_get("2025-01")
    totals = defaultdict(Decimal)
    for row in selectors.period_project_totals(period):
        if row.pi_email:
            totals[row.project_code] += row.billed_total
    assert dict(totals) == {code: D(v) for code, v in manifest["billed_by_project"].items()}
    unattributed = [row for row in selectors.period_project_totals(period) if not row.pi_email]
    assert len(unattributed) == 1
    assert unattributed[0].flagged_count == unattributed[0].charges
    assert unattributed[0].flagged_billed == file_billed_sum(path) - D(manifest["billed_total"])


def test_tag_keys_come_from_billing_settings(sources, tmp_path):
    settings_obj = selectors.billing_settings_get()
    settings_obj.tag_pi_email, settings_obj.tag_project_id, settings_obj.tag_fund_org = (
        "owner",
        "proj",
        "account",
    )
    settings_obj.save()
    assert BillingSettings.objects.count() == 1
    row = focus_row(Tags=json.dumps({"user:Owner": "kim@uni.example", "proj": "p-9", "account": "F-9"}))
    (charge,) = charges_of(ingest(write_focus(tmp_path / "aws.csv", [row])))
    assert (charge.pi_email, charge.project_code, charge.fund_org, charge.review_state) == (
        "kim@uni.example",
        "p-9",
        "F-9",
        "ok",
    )
