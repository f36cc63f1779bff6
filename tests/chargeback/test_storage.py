"""Media on S3-compatible object storage (OPENCHARGEBACK_STORAGE_URL=s3://bucket/prefix), against a
local S3 server (moto's server mode, started in-process by the `s3_server` fixture): stored imports,
usage files, statement PDFs and journals are objects in the bucket, read back through the
application, and nothing lands in the local media folder; a backup takes them from the bucket and
a restore puts them in another one (moving what was there aside)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tarfile
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import default_storage

from billing import selectors, services
from billing.models import Import
from billing.rating import services as rating
from billing.rating.models import UsageFile
from chargeback import storage
from journals.services import journal_export
from statements.models import Statement
from tests.chargeback.test_backup import POPULATE, REFERENCE_DIR, Installation
from tests.chargeback.test_backup import _synthetic as synthetic_month
from tests.factories import SourceFactory
from tests.journals.conftest import set_credit_funds
from tests.statements.conftest import generate_and_render

pytestmark = pytest.mark.django_db


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def streamed(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


# --- configuration ----------------------------------------------------------------------------


def test_storage_url_configures_s3_with_endpoint_and_region_from_the_environment():
    options = storage.storage_options_from_url(
        "s3://billing-media/openchargeback/prod/",
        {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-west-1"},
    )
    assert options["bucket_name"] == "billing-media"
    assert options["location"] == "openchargeback/prod"
    assert options["endpoint_url"] == "http://minio:9000"
    assert options["region_name"] == "eu-west-1"
    assert options["addressing_style"] == "path"  # an S3-compatible server
    assert options["file_overwrite"] is False  # a name in use gets a new one, as on disk
    # AWS itself: no endpoint, virtual-hosted requests; no prefix: media/.
    plain = storage.storage_options_from_url("s3://bucket", {"AWS_ENDPOINT_URL_S3": ""})
    assert (
        plain["location"] == "media" and plain["endpoint_url"] is None and plain["addressing_style"] is None
    )
    assert storage.storages_setting("", {}, "x")["default"]["BACKEND"].endswith("FileSystemStorage")


@pytest.mark.parametrize("url", ["file:///srv/media", "s3:///prefix", "/srv/media"])
def test_a_storage_url_that_is_not_s3_is_refused_at_start(url):
    with pytest.raises(ImproperlyConfigured, match="OPENCHARGEBACK_STORAGE_URL"):
        storage.storage_options_from_url(url, {})


def test_local_storage_is_the_default(tmp_path):
    assert storage.is_local()
    assert storage.media_location() == str(Path(settings.MEDIA_ROOT))


# --- imports ------------------------------------------------------------------------------------


def test_imports_are_stored_in_the_bucket_and_read_back_from_it(s3_media, reference_month, admin_client):
    server, bucket = s3_media
    assert not storage.is_local() and storage.media_location() == f"s3://{bucket}/media"
    keys = server.keys(bucket)
    imports = list(Import.objects.filter(status=Import.Status.COMPLETED))
    assert len(imports) == 5
    for record in imports:
        key = f"media/{record.file.name}"
        assert key in keys
        assert sha256(server.read(bucket, key)) == record.sha256
    assert selectors.period_summary(reference_month).billed_total == Decimal("20227")
    assert not Path(settings.MEDIA_ROOT).exists()  # nothing written to the local folder

    record = imports[0]
    response = admin_client.get(f"/admin/billing/import/{record.pk}/download/")
    assert response.status_code == 200
    assert streamed(response) == server.read(bucket, f"media/{record.file.name}")


def test_a_queued_import_reads_its_stored_copy_from_the_bucket(s3_media, reference_month, reference_dir):
    """The admin's upload path: the file is stored first, a worker (any host) imports the copy."""
    server, bucket = s3_media
    path = reference_dir / "aws_2025-01.csv"
    earlier = Import.objects.get(original_name=path.name)
    Import.objects.filter(pk=earlier.pk).update(sha256="0" * 64)  # so the same bytes may come again
    record = services.import_create(path=path, source=earlier.source)
    assert record.sha256 == earlier.sha256 or record.sha256 == sha256(path.read_bytes())
    assert sha256(server.read(bucket, f"media/{record.file.name}")) == record.sha256
    outcome = services.import_execute(import_id=record.pk, period="2025-01")
    assert outcome.supersedes == [earlier.pk]
    assert selectors.period_summary(reference_month).billed_total == Decimal("20227")


def test_an_import_whose_stored_copy_is_missing_fails_with_a_clear_message(s3_media, reference_dir, db):
    source = SourceFactory(slug="aws")
    record = services.import_create(path=reference_dir / "aws_2025-01.csv", source=source)
    default_storage.delete(record.file.name)
    with pytest.raises(FileNotFoundError):
        services.import_execute(import_id=record.pk, period="2025-01")
    record.refresh_from_db()
    assert record.status == Import.Status.FAILED and "internal error" in record.error_message


def test_usage_files_are_stored_in_the_bucket_and_re_rated_from_it(s3_media, tmp_path, admin_client):
    server, bucket = s3_media
    SourceFactory(slug="hpc")
    services.account_mapping_set(
        sub_account_id="phys", project_id="phys-lab", pi_email="bob@uni.edu", fund_org="F-2", source="hpc"
    )
    rating.rate_add(source="hpc", unit="core-hour", price="0.0200", effective_from="2025-07")
    sacct = tmp_path / "sacct_2025-09.txt"
    sacct.write_text(
        "1|bob|phys|cpu|normal|100|cpu=100|3600|2025-09-10T00:00:00|2025-09-10T01:00:00|COMPLETED\n"
    )
    after = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    outcome = rating.usage_rate(kind="slurm", path=sacct, period="2025-09", source="hpc", now=after)
    usage_file = UsageFile.objects.get(pk=outcome.usage_file_id)
    assert server.read(bucket, f"media/{usage_file.file.name}") == sacct.read_bytes()

    response = admin_client.get(f"/admin/billing/usagefile/{usage_file.pk}/download/")
    assert response.status_code == 200 and streamed(response) == sacct.read_bytes()

    rating.rate_add(source="hpc", unit="core-hour", price="0.0300", effective_from="2025-09")
    rerated = rating.usage_rerate(period="2025-09", reason="new rate", now=after)
    assert rerated.billed_before == Decimal("2") and rerated.billed_after == Decimal("3")


# --- statements and journals ----------------------------------------------------------------


def test_statement_pdfs_and_journals_are_objects_downloaded_through_the_application(
    s3_media, reference_month, admin_client
):
    server, bucket = s3_media
    generate_and_render("2025-01")
    statements = list(Statement.objects.all())
    assert len(statements) == 10
    keys = server.keys(bucket, "media/statements/")
    assert len(keys) == 10
    for statement in statements:
        data = server.read(bucket, f"media/{statement.pdf.name}")
        assert data.startswith(b"%PDF") and sha256(data) == statement.pdf_sha256
    first = statements[0]
    response = admin_client.get(f"/admin/statements/statement/{first.pk}/pdf/")
    assert response.status_code == 200
    assert sha256(streamed(response)) == first.pdf_sha256

    set_credit_funds()
    export = journal_export(period="2025-01", format="gl", actor_name="test")
    data = server.read(bucket, f"media/{export.file.name}")
    assert sha256(data) == export.sha256 and export.debit_total == Decimal("20227")
    response = admin_client.get(f"/admin/journals/journalexport/{export.pk}/download/")
    assert response.status_code == 200 and streamed(response) == data
    assert not Path(settings.MEDIA_ROOT).exists()


def test_local_copy_and_media_names_walk_the_bucket(s3_media, tmp_path):
    from django.core.files.base import ContentFile

    names = ["a/b/one.csv", "a/two.csv.gz", "three.pdf"]
    for name in names:
        assert default_storage.save(name, ContentFile(name.encode())) == name
    assert list(storage.media_names()) == ["three.pdf", "a/two.csv.gz", "a/b/one.csv"]

    class Stored:
        storage = default_storage
        name = "a/two.csv.gz"

    with storage.local_copy(Stored()) as path:
        assert path.read_bytes() == b"a/two.csv.gz" and path.name.endswith(".csv.gz")
    assert not path.exists()


# --- backup and restore through object storage -----------------------------------------------


class S3Installation(Installation):
    """An installation whose media are in a bucket of the local S3 server."""

    def __init__(self, base: Path, server, bucket: str) -> None:
        super().__init__(base)
        self.bucket = bucket
        self.server = server

    @property
    def env(self) -> dict[str, str]:
        return {
            **super().env,
            "OPENCHARGEBACK_STORAGE_URL": f"s3://{self.bucket}/media",
            "AWS_ENDPOINT_URL": self.server.endpoint,
            # The site's backup key goes with it to the new host (backups are signed).
            "OPENCHARGEBACK_BACKUP_KEY": "the-backup-key-of-this-site-for-the-storage-test",
        }


def test_backup_and_restore_round_trip_through_object_storage(tmp_path, s3_server):
    source = S3Installation(tmp_path / "source", s3_server, s3_server.bucket())
    source.run("migrate", "-v", "0")
    source.python(POPULATE, str(REFERENCE_DIR), str(synthetic_month(tmp_path)))
    source.run("generate", "-p", "2025-01")
    source.run("export-journal", "-p", "2025-01", "-f", "gl")
    before = source.fingerprint()
    kinds = {name.split("/")[0] for name in before["media"]}
    assert kinds == {"imports", "statements", "journals"}, kinds
    assert before["imports_readable"]
    assert before["periods"]["2025-01"]["billed_total"] == "20227.0000000000"
    assert not source.media.exists()  # every medium is in the bucket

    archive = tmp_path / "site.tar.gz"
    made = json.loads(source.run("backup", str(archive), "--format", "json").stdout)
    assert made["media_files"] == len(before["media"])
    with tarfile.open(archive) as tar:
        members = {m.name for m in tar.getmembers()}
    assert {f"media/{name}" for name in before["media"]} <= members

    target_bucket = s3_server.bucket()
    s3_server.client.put_object(Bucket=target_bucket, Key="media/stray.txt", Body=b"here before")
    target = S3Installation(tmp_path / "target", s3_server, target_bucket)
    target.run("migrate", "-v", "0")
    restored = json.loads(target.run("restore", str(archive), "--format", "json").stdout)
    assert restored["restored"] is True
    assert restored["previous_media"].startswith(f"s3://{target_bucket}/media.before-restore-")
    aside = restored["previous_media"].split("/", 3)[3]
    assert s3_server.keys(target_bucket, f"{aside}/") == [f"{aside}/stray.txt"]  # moved aside, kept
    after = target.fingerprint()
    assert after == before  # every row, every total, every medium, byte for byte
    assert sorted(s3_server.keys(target_bucket, "media/")) == sorted(f"media/{n}" for n in before["media"])
    assert not target.media.exists()
