"""Collecting exports from collection points: a local drop folder and an S3 prefix on a local S3
server (moto, in-process). A new key is imported and added, a key delivered again with new
contents supersedes exactly its earlier import (decisions carried over), an unchanged key is
skipped, and a file that fails is reported once per version and tried again only when it changes."""

from __future__ import annotations

import gzip
import io
import json
import os
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from auditlog.models import LogEntry
from django.conf import settings

from billing import selectors
from billing import services as billing_services
from billing.collection import locations, services
from billing.collection.services import Action
from billing.collection.tasks import collect_exports
from billing.models import Charge, CollectedObject, CollectionPoint, Import
from chargeback.celery import app as celery_app
from chargeback.errors import Refused
from tests.cli import run
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db

TAGS = '"{""pi_email"": ""ada@uni.edu"", ""project_id"": ""chem-md"", ""fund_org"": ""CHEM-01""}"'
HEADER = "BillingPeriodStart,BillingPeriodEnd,BilledCost,ListCost,ResourceId,ServiceName,Tags"


def focus(period: str, *amounts: str, prefix: str = "i-") -> bytes:
    """A FOCUS CSV of one month: one resource per amount, tagged to one PI and project."""
    lines = [HEADER] + [
        f"{period}-01,{period}-28,{a},{a},{prefix}{n},Amazon EC2,{TAGS}" for n, a in enumerate(amounts)
    ]
    return ("\n".join(lines) + "\n").encode()


def parquet(period: str, *amounts: str) -> bytes:
    table = pacsv.read_csv(
        io.BytesIO(focus(period, *amounts)), convert_options=pacsv.ConvertOptions(strings_can_be_null=False)
    )
    table = table.cast(pa.schema([pa.field(n, pa.string()) for n in table.column_names]))
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def billed(period: str) -> Decimal:
    return selectors.period_summary(selectors.period_get(period)).billed_total


@pytest.fixture(autouse=True)
def _no_settle(settings):
    settings.OPENCHARGEBACK_COLLECT_SETTLE_SECONDS = 0


@pytest.fixture
def aws(db):
    return SourceFactory(slug="aws")


@pytest.fixture
def drop(tmp_path, aws) -> tuple[CollectionPoint, Path]:
    folder = tmp_path / "drop"
    folder.mkdir()
    point = services.collection_point_save(name="drop", kind="local", source=aws, location=str(folder))
    return point, folder


def deliver(path: Path, data: bytes) -> Path:
    """Write a file as a provider would; a new delivery gets a later modification time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.stat().st_mtime if path.exists() else None
    path.write_bytes(data)
    if before is not None:  # a file system's clock may not tick between two writes of a test
        os.utime(path, (before + 5, before + 5))
    return path


def actions(report: services.CollectionReport) -> dict[str, str]:
    return {Path(f.key).name: f.action for p in report.points for f in p.files}


# --- a local drop folder ------------------------------------------------------------------------


def test_new_files_are_imported_and_unchanged_ones_skipped(drop):
    point, folder = drop
    deliver(folder / "aws_2025-01_part1.csv", focus("2025-01", "100.25", "50.00"))
    deliver(
        folder / "nested" / "aws_2025-01_part2.csv.gz", gzip.compress(focus("2025-01", "9.75", prefix="j-"))
    )
    deliver(folder / "README.txt", b"not an export")

    report = services.collection_run()
    assert actions(report) == {
        "aws_2025-01_part1.csv": Action.ADDED,
        "aws_2025-01_part2.csv.gz": Action.ADDED,
    }
    assert report.ok and report.counts == {Action.ADDED: 2}
    # Two keys of one month add up; each is its own import, made by the point.
    assert billed("2025-01") == Decimal("160.00")
    imports = Import.objects.filter(status="completed").order_by("id")
    assert [i.actor_name for i in imports] == ["collect:drop", "collect:drop"]
    assert all(not i.replace and i.period.period == "2025-01" for i in imports)
    objects = {Path(o.key).name: o for o in CollectedObject.objects.all()}
    assert objects["aws_2025-01_part1.csv"].status == "imported"
    assert objects["aws_2025-01_part1.csv"].version.endswith(f":{len(focus('2025-01', '100.25', '50.00'))}")
    point.refresh_from_db()
    assert point.last_run_at and point.running_since is None and point.last_error == ""

    again = services.collection_run()
    assert set(actions(again).values()) == {Action.UNCHANGED}
    assert Import.objects.count() == 2 and billed("2025-01") == Decimal("160.00")


def test_a_redelivered_file_supersedes_only_its_own_import_and_keeps_decisions(drop):
    _point, folder = drop
    deliver(folder / "aws_2025-01_a.csv", focus("2025-01", "100.00", "40.00"))
    deliver(folder / "aws_2025-01_b.csv", focus("2025-01", "7.00", prefix="b-"))
    services.collection_run()
    first_a = Import.objects.get(original_name="aws_2025-01_a.csv")
    b = Import.objects.get(original_name="aws_2025-01_b.csv")
    kept = Charge.objects.get(import_run=first_a, resource_id="i-0")
    billing_services.charges_reject(charge_ids=[kept.pk], note="not ours")

    # The provider rewrites the month's file: one amount changed.
    deliver(folder / "aws_2025-01_a.csv", focus("2025-01", "100.00", "45.50"))
    report = services.collection_run()
    assert actions(report) == {"aws_2025-01_a.csv": Action.SUPERSEDED, "aws_2025-01_b.csv": Action.UNCHANGED}
    line = next(f for p in report.points for f in p.files if f.action == Action.SUPERSEDED)
    assert line.supersedes == [first_a.pk]
    first_a.refresh_from_db()
    b.refresh_from_db()
    assert first_a.status == "superseded" and b.status == "completed"  # the other key stays
    new_a = Import.objects.get(pk=line.import_id)
    assert new_a.supersedes_id == first_a.pk and new_a.decisions_carried == 1
    assert Charge.objects.get(import_run=new_a, resource_id="i-0").review_state == "rejected"
    assert billed("2025-01") == Decimal("152.50")
    assert CollectedObject.objects.get(key__endswith="_a.csv").import_run_id == new_a.pk


def test_a_failing_file_is_reported_once_per_version_and_retried_when_it_changes(drop, capsys):
    _point, folder = drop
    deliver(folder / "aws_2025-01.csv", b"BillingPeriodStart,ResourceId\n2025-01-01,i-1\n")

    out = run("collect")
    assert out.code == 1 and "BilledCost" in out.err
    failed = CollectedObject.objects.get()
    assert failed.status == "failed" and "BilledCost" in failed.error
    assert failed.failed_import.status == "failed" and failed.import_run is None
    # Not again while the file is the same: exit 0, no new import.
    again = run("collect")
    assert again.code == 0, again.err
    assert "1 failed before" in again.out
    assert Import.objects.count() == 1

    deliver(folder / "aws_2025-01.csv", focus("2025-01", "12.00"))
    fixed = services.collection_run()
    assert actions(fixed) == {"aws_2025-01.csv": Action.ADDED}
    failed.refresh_from_db()
    assert failed.status == "imported" and failed.error == "" and failed.failed_import is None
    assert billed("2025-01") == Decimal("12.00")


def test_a_closed_or_finalized_period_refuses_what_is_delivered_for_it(drop):
    _point, folder = drop
    deliver(folder / "aws_2025-01.csv", focus("2025-01", "10.00"))
    services.collection_run()
    billing_services.period_close(period="2025-01")
    deliver(folder / "aws_2025-01.csv", focus("2025-01", "99.00"))
    report = services.collection_run()
    (line,) = [f for p in report.points for f in p.files]
    assert line.action == Action.FAILED and "closed" in line.error
    assert billed("2025-01") == Decimal("10.00")  # the import in force is untouched
    obj = CollectedObject.objects.get()
    assert obj.status == "failed" and obj.import_run.status == "completed"


def test_bytes_imported_before_are_linked_not_imported_twice(drop, tmp_path):
    _point, folder = drop
    data = focus("2025-01", "10.00")
    by_hand = tmp_path / "aws_2025-01.csv"
    by_hand.write_bytes(data)
    manual = billing_services.import_file(path=by_hand, source="aws")
    deliver(folder / "aws_2025-01.csv", data)
    report = services.collection_run()
    assert actions(report) == {"aws_2025-01.csv": Action.LINKED}
    assert CollectedObject.objects.get().import_run_id == manual.import_id
    # Delivered again with the same bytes (a new mtime): nothing to import.
    deliver(folder / "aws_2025-01.csv", data)
    assert actions(services.collection_run()) == {"aws_2025-01.csv": Action.UNCHANGED}
    # New contents supersede the import made by hand.
    deliver(folder / "aws_2025-01.csv", focus("2025-01", "11.00"))
    assert actions(services.collection_run()) == {"aws_2025-01.csv": Action.SUPERSEDED}
    assert billed("2025-01") == Decimal("11.00") and Import.objects.count() == 2


def test_dry_run_writes_nothing(drop):
    _point, folder = drop
    deliver(folder / "aws_2025-01.csv", focus("2025-01", "10.00"))
    services.collection_run()
    deliver(folder / "aws_2025-01.csv", focus("2025-01", "11.00"))
    deliver(folder / "aws_2025-02.csv", focus("2025-02", "5.00"))
    out = run("collect", "--dry-run", "--format", "json")
    doc = json.loads(out.out)
    assert doc["dry_run"] is True
    files = {Path(f["key"]).name: f for f in doc["points"][0]["files"]}
    assert files["aws_2025-01.csv"]["action"] == Action.WOULD_SUPERSEDE
    assert (
        files["aws_2025-02.csv"]["action"] == Action.WOULD_ADD
        and files["aws_2025-02.csv"]["period"] == "2025-02"
    )
    assert Import.objects.count() == 1 and CollectedObject.objects.count() == 1


def test_a_file_still_being_written_waits(drop, settings):
    settings.OPENCHARGEBACK_COLLECT_SETTLE_SECONDS = 300
    _point, folder = drop
    deliver(folder / "aws_2025-01.csv", focus("2025-01", "10.00"))
    assert actions(services.collection_run()) == {"aws_2025-01.csv": Action.WAITING}
    assert not Import.objects.exists() and not CollectedObject.objects.exists()


def test_a_point_held_by_another_run_is_skipped(drop):
    point, folder = drop
    deliver(folder / "aws_2025-01.csv", focus("2025-01", "10.00"))
    CollectionPoint.objects.filter(pk=point.pk).update(
        running_since=point.created_at.now(tz=point.created_at.tzinfo)
    )
    report = services.collection_run()
    assert report.points[0].busy and not Import.objects.exists()


def test_a_missing_folder_is_reported_and_the_other_points_still_run(drop, aws, tmp_path):
    _point, folder = drop
    deliver(folder / "aws_2025-01.csv", focus("2025-01", "10.00"))
    services.collection_point_save(name="gone", kind="local", source=aws, location=str(tmp_path / "gone"))
    out = run("collect")
    assert out.code == 1 and "gone" in out.err and "does not exist" in out.err
    assert billed("2025-01") == Decimal("10.00")
    assert "does not exist" in CollectionPoint.objects.get(name="gone").last_error


def test_named_points_and_unknown_names(drop, aws, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    deliver(other / "aws_2025-03.csv", focus("2025-03", "3.00"))
    services.collection_point_save(name="other", kind="local", source=aws, location=str(other), enabled=False)
    assert services.collection_run().counts == {}  # disabled: not collected by default
    assert services.collection_run(points=["other"]).counts == {Action.ADDED: 1}  # named: collected
    with pytest.raises(Refused, match="no collection point named 'nope'"):
        services.collection_run(points=["nope"])


# --- collection points ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "location", "message"),
    [
        ("local", "relative/folder", "absolute path"),
        ("local", "s3://bucket/x", "local folder"),
        ("s3", "/srv/exports", "s3://bucket/prefix"),
        ("s3", "s3://", "names no bucket"),
        ("gcs", "s3://bucket", "gs://bucket/prefix"),
        ("azure", "gs://bucket", "az://bucket/prefix"),
    ],
)
def test_a_location_that_does_not_fit_its_kind_is_refused(aws, kind, location, message):
    with pytest.raises(Refused, match=message):
        services.collection_point_save(name="p", kind=kind, source=aws, location=location)
    assert not CollectionPoint.objects.exists()


def test_point_rules(aws):
    with pytest.raises(Refused, match="endpoint URL applies to S3"):
        services.collection_point_save(
            name="p", kind="local", source=aws, location="/srv/x", endpoint_url="http://minio:9000"
        )
    services.collection_point_save(
        name="p", kind="local", source=aws, location="/srv/x", pattern="  *.csv   *.gz "
    )
    assert CollectionPoint.objects.get().patterns == ["*.csv", "*.gz"]
    with pytest.raises(Refused, match="already exists"):
        services.collection_point_save(name="p", kind="local", source="aws", location="/srv/y")


# --- where periods come from, versions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "period"),
    [
        ("bucket/exports/focus/data/BILLING_PERIOD=2025-01/focus-00001.csv.gz", "2025-01"),
        ("bucket/exports/focus/data/billing_period=202502/part-0.parquet", "2025-02"),
        ("container/costs/focus/20250301-20250331/run-id/part_0_0001.csv.gz", "2025-03"),
        ("/srv/drop/aws_2025-04.csv", "2025-04"),
        ("/srv/drop/export.csv", None),
    ],
)
def test_period_of_a_key(key, period):
    assert locations.period_of(key) == period


def test_versions_of_each_store():
    assert locations.version_of({"ETag": '"abc123"', "size": 5}) == "abc123"  # S3
    assert locations.version_of({"etag": "0x8DC2", "size": 5}) == "0x8DC2"  # Azure
    assert locations.version_of({"generation": "1712345678", "etag": "CJ", "size": 5}) == "CJ"  # GCS
    assert locations.version_of({"generation": 17, "size": 5}) == "17"
    assert locations.version_of({"mtime": 1700000000.25, "size": 42}) == "1700000000.250000:42"  # local


def test_azure_and_gcs_libraries_are_installed():
    for kind in ("s3", "azure", "gcs"):
        assert locations.library_problem(kind) == ""


def test_each_kind_gets_its_fsspec_file_system_with_credentials_from_the_environment(aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s3 = locations.filesystem(CollectionPoint(kind="s3", location="s3://b/p", source=aws))
    assert type(s3).__name__ == "S3FileSystem" and s3.endpoint_url == "http://127.0.0.1:9"
    own = locations.filesystem(
        CollectionPoint(kind="s3", location="s3://b/p", source=aws, endpoint_url="http://127.0.0.1:8")
    )
    assert own.endpoint_url == "http://127.0.0.1:8"
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
    )
    azure = locations.filesystem(CollectionPoint(kind="azure", location="az://c/p", source=aws))
    assert type(azure).__name__ == "AzureBlobFileSystem" and "AccountName=acct" in azure.connection_string
    local = locations.filesystem(CollectionPoint(kind="local", location="/srv", source=aws))
    assert type(local).__name__ == "LocalFileSystem"
    # GCS is not built here: without credentials gcsfs would ask the VM's metadata server.


def test_azure_and_gcs_points_list_and_fetch_through_fsspec(aws, monkeypatch):
    """adlfs and gcsfs are fsspec file systems: the same listing and fetching serve them. A memory
    file system stands in for the stores here, answering with their info fields."""
    from fsspec.implementations.memory import MemoryFileSystem

    class Store(MemoryFileSystem):
        def __init__(self, field: str) -> None:
            super().__init__(skip_instance_cache=True)
            self.store: dict = {}
            self.pseudo_dirs, self.field = [""], field

        def info(self, path, **kwargs):
            info = super().info(path, **kwargs)
            if info["type"] == "file":
                info[self.field] = str(hash(self.cat_file(path)))
            return info

        def find(self, path, detail=False, **kwargs):
            found = super().find(path, detail=True, **kwargs)
            return {k.lstrip("/"): self.info(k) for k in found} if detail else found

    for kind, scheme, field in (("azure", "az", "etag"), ("gcs", "gs", "generation")):
        fs = Store(field)
        fs.pipe(
            "/costs/focus/20250101-20250131/run/part_0_0001.csv.gz", gzip.compress(focus("2025-01", "8.00"))
        )
        monkeypatch.setattr(locations, "filesystem", lambda point, fs=fs: fs)
        services.collection_point_save(name=kind, kind=kind, source=aws, location=f"{scheme}://costs/focus")
        assert services.collection_run(points=[kind]).counts == {Action.ADDED: 1}
        assert services.collection_run(points=[kind]).counts == {Action.UNCHANGED: 1}
        fs.pipe(
            "/costs/focus/20250101-20250131/run/part_0_0001.csv.gz", gzip.compress(focus("2025-01", "9.00"))
        )
        assert services.collection_run(points=[kind]).counts == {Action.SUPERSEDED: 1}
        assert billed("2025-01") == Decimal("9.00")
        billing_services.charges_approve(period="2025-01")
        Import.objects.filter(status="completed").update(status="superseded")  # next kind starts afresh
        Charge.objects.all().delete()


# --- the local S3 server --------------------------------------------------------------------------


@pytest.fixture
def exports(s3_server, aws):
    """An S3 bucket laid out as AWS Data Exports writes FOCUS exports, and a point on its prefix."""
    bucket = s3_server.bucket()
    point = services.collection_point_save(
        name="aws-exports",
        kind="s3",
        source=aws,
        location=f"s3://{bucket}/exports/focus",
        endpoint_url=s3_server.endpoint,
    )

    def put(period: str, name: str, data: bytes) -> str:
        key = f"exports/focus/focus/data/BILLING_PERIOD={period}/{name}"
        s3_server.client.put_object(Bucket=bucket, Key=key, Body=data)
        return key

    return point, put


def test_s3_exports_are_collected_by_key_and_etag(exports):
    _point, put = exports
    put("2025-01", "focus-00001.csv.gz", gzip.compress(focus("2025-01", "100.00", "20.00")))
    put("2025-02", "focus-00001.parquet", parquet("2025-02", "30.00"))
    put("2025-02", "focus-Manifest.json", b"{}")

    report = services.collection_run()
    assert report.ok, report.failures
    assert sorted(f.period for p in report.points for f in p.files) == ["2025-01", "2025-02"]
    assert report.counts == {Action.ADDED: 2}
    assert billed("2025-01") == Decimal("120.00") and billed("2025-02") == Decimal("30.00")
    versions = dict(CollectedObject.objects.values_list("period", "version"))
    assert all(len(v) == 32 for v in versions.values())  # the objects' ETags (MD5)

    assert services.collection_run().counts == {Action.UNCHANGED: 2}

    # The provider rewrites January: a new ETag for the same key supersedes its import.
    put("2025-01", "focus-00001.csv.gz", gzip.compress(focus("2025-01", "100.00", "25.00")))
    report = services.collection_run()
    assert report.counts == {Action.SUPERSEDED: 1, Action.UNCHANGED: 1}
    assert billed("2025-01") == Decimal("125.00") and billed("2025-02") == Decimal("30.00")


def test_a_failing_s3_object_is_reported_once_and_retried_when_it_changes(exports):
    _point, put = exports
    put("2025-01", "focus-00001.csv.gz", b"not gzip at all")
    first = services.collection_run()
    assert first.counts == {Action.FAILED: 1} and not first.ok
    assert services.collection_run().counts == {Action.FAILED_BEFORE: 1}
    assert Import.objects.filter(status="failed").count() == 1
    put("2025-01", "focus-00001.csv.gz", gzip.compress(focus("2025-01", "5.00")))
    assert services.collection_run().counts == {Action.ADDED: 1}
    assert billed("2025-01") == Decimal("5.00")


def test_s3_collection_into_s3_media(exports, s3_media):
    """Exports collected on one host, media shared in object storage: the stored copy is there."""
    server, media_bucket = s3_media
    _point, put = exports
    data = gzip.compress(focus("2025-01", "42.00"))
    put("2025-01", "focus-00001.csv.gz", data)
    assert services.collection_run().counts == {Action.ADDED: 1}
    record = Import.objects.get()
    assert server.read(media_bucket, f"media/{record.file.name}") == data
    assert not Path(settings.MEDIA_ROOT).exists()


def test_a_bucket_that_does_not_exist_is_reported(s3_server, aws):
    services.collection_point_save(
        name="missing",
        kind="s3",
        source=aws,
        location="s3://no-such-bucket/x",
        endpoint_url=s3_server.endpoint,
    )
    report = services.collection_run()
    assert not report.ok and report.points[0].error


# --- schedule, task and admin -------------------------------------------------------------------


def test_beat_runs_the_collection_task():
    entry = settings.CELERY_BEAT_SCHEDULE["collect-exports"]
    assert entry["task"] == "billing.collect_exports" and entry["task"] in celery_app.tasks
    assert entry["schedule"].total_seconds() == settings.OPENCHARGEBACK_COLLECT_MINUTES * 60


def test_the_task_collects_and_reports(drop):
    _point, folder = drop
    deliver(folder / "aws_2025-01.csv", focus("2025-01", "10.00"))
    deliver(folder / "aws_2025-02.csv", b"BillingPeriodStart\n2025-02-01\n")
    result = collect_exports.delay().get()
    assert result["counts"] == {Action.ADDED: 1, Action.FAILED: 1}
    assert result["failed"][0].startswith("drop: ") and result["point_errors"] == {}


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_points_are_edited_in_the_admin_with_history(admin_client, aws, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    form = {
        "name": "drop",
        "kind": "local",
        "source": aws.pk,
        "location": str(folder),
        "pattern": "*.csv",
        "endpoint_url": "",
        "enabled": "on",
        "note": "",
    }
    response = admin_client.post("/admin/billing/collectionpoint/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    point = CollectionPoint.objects.get()
    assert point.actor_name == "admin"
    bad = admin_client.post(f"/admin/billing/collectionpoint/{point.pk}/change/", {**form, "location": "rel"})
    assert bad.status_code == 200 and "absolute path" in bad.content.decode()
    admin_client.post(f"/admin/billing/collectionpoint/{point.pk}/change/", {**form, "pattern": "*.csv.gz"})
    point.refresh_from_db()
    assert point.pattern == "*.csv.gz"
    assert LogEntry.objects.get_for_object(point).count() == 2  # created, then changed
    assert admin_client.get(f"/admin/billing/collectionpoint/{point.pk}/history/").status_code == 200


def test_collect_now_and_failures_on_the_imports_page(admin_client, drop):
    point, folder = drop
    deliver(folder / "aws_2025-01.csv", b"BillingPeriodStart\n2025-01-01\n")
    response = admin_client.post(
        "/admin/billing/collectionpoint/",
        {"action": "collect_now", "_selected_action": [point.pk]},
        follow=True,
    )
    assert "1 failed" in response.content.decode()
    page = admin_client.get("/admin/billing/import/").content.decode()
    assert "Collection problems" in page and "aws_2025-01.csv" in page and "BilledCost" in page
    listing = admin_client.get("/admin/billing/collectedobject/?status__exact=failed").content.decode()
    assert "aws_2025-01.csv" in listing
    points = admin_client.get("/admin/billing/collectionpoint/").content.decode()
    assert "1 failed" in points
