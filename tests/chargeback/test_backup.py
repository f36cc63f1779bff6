"""Backup and restore: a populated installation round-trips exactly, and a damaged or unsuitable
archive is refused before anything changes.

The round trips run `openchargeback` in subprocesses against their own databases (SQLite files
under tmp_path, and scratch PostgreSQL databases when a server on 127.0.0.1:5432 lets user
`postgres` create them): pytest's own test database is in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chargeback.errors import Refused
from chargeback.operations import backup, backup_signing, restore
from tests.conftest import REFERENCE_DIR, SYNTH_TOOL

PG_SERVER = "postgres://postgres@127.0.0.1:5432"

# A month of every kind of state: the reference month (closed, a flag rule, approvals and a
# rejection), a synthetic month with 11-decimal amounts and untagged rows, a mapping, a user.
POPULATE = r"""
import sys
from pathlib import Path
import django
django.setup()
from django.contrib.auth import get_user_model
from billing import services
from billing.models import Charge

reference, synthetic = Path(sys.argv[1]), Path(sys.argv[2])
for slug in ["aws", "azure", "hpc", "it_storage", "storage"]:
    services.source_create(slug=slug, fund_org=f"IT-{slug.upper()}", account="54100")
for path in sorted(reference.glob("*.csv")):
    services.import_file(path=path, source=path.name.rsplit("_", 1)[0], period="2025-01", actor_name="test")
services.flag_rule_save(name="gpu", pattern="(?i)gpu", fields=["service_name", "resource_name"])
services.period_reevaluate_flags(period="2025-01", actor_name="test")
services.import_file(path=synthetic, source="aws", period="2025-02", actor_name="test")
for period in ("2025-01", "2025-02"):
    flagged = list(Charge.objects.filter(period__period=period, review_state="flagged").order_by("id").values_list("id", flat=True))
    if flagged:
        services.charges_reject(charge_ids=flagged[:1], note="not ours", actor_name="test")
        services.charges_approve(charge_ids=flagged[1:], note="checked", actor_name="test")
services.period_close(period="2025-01", actor_name="test")
services.account_mapping_set(sub_account_id="012345678901", project_id="mapped-project", pi_email="mapped@example.edu", fund_org="MAP-01")
get_user_model().objects.create_superuser("admin", "admin@example.edu", "correct horse battery staple")
print(Charge.objects.count())
"""

# Everything a restore must bring back: every row of every table (digest), the totals of every
# period (period_summary, exact), the media files, and the stored copies of the imports.
FINGERPRINT = r"""
import hashlib, json
from pathlib import Path
import django
django.setup()
from django.apps import apps
from billing import selectors
from chargeback import storage
from billing.models import BillingPeriod, Import

def digest(model):
    names = [f.attname for f in model._meta.concrete_fields]
    h = hashlib.sha256()
    for row in model._default_manager.order_by("pk").values_list(*names):
        h.update(repr(row).encode())
    return h.hexdigest()

models = [m for m in apps.get_models() if m._meta.managed and not m._meta.proxy]
out = {
    "rows": {m._meta.label: m._default_manager.count() for m in models},
    "digests": {m._meta.label: digest(m) for m in models},
    "periods": {},
    "media": {},
}
for period in BillingPeriod.objects.order_by("period"):
    s = selectors.period_summary(period)
    out["periods"][period.period] = {
        "status": period.status, "charges": s.charges, "pis": s.pis, "projects": s.projects,
        "flagged": s.flagged, "flagged_billed": str(s.flagged_billed), "rejected": s.rejected,
        "list_total": str(s.list_total), "billed_total": str(s.billed_total),
        "billable_total": str(s.billable_total), "discount": str(s.discount),
        "by_source": {k: str(v) for k, v in s.by_source.items()},
        "by_project": [[p.pi_email, p.project_code, p.fund_org, p.charges, str(p.list_total), str(p.billed_total),
                        p.flagged_count, str(p.flagged_billed)] for p in s.by_project],
    }
for name in storage.media_names():  # the local folder, or object storage
    with storage.media_storage().open(name, "rb") as fh:
        out["media"][name] = hashlib.sha256(fh.read()).hexdigest()
out["imports_readable"] = all(
    hashlib.sha256(i.file.open("rb").read()).hexdigest() == i.sha256 for i in Import.objects.exclude(file="")
)
print(json.dumps(out, sort_keys=True))
"""


class Installation:
    """One OpenChargeback installation: its own data dir and database, driven by subprocesses."""

    def __init__(self, base: Path, database_url: str | None = None) -> None:
        self.data_dir = base
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url or f"sqlite:///{base / 'openchargeback.sqlite3'}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("OPENCHARGEBACK_CONFIG", "CELERY_BROKER_URL")}
        env.update(
            OPENCHARGEBACK_DATA_DIR=str(self.data_dir),
            DATABASE_URL=self.database_url,
            DJANGO_SETTINGS_MODULE="chargeback.settings",
        )
        return env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "chargeback.cli", *args],
            cwd=self.data_dir,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def python(self, code: str, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=self.data_dir,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise AssertionError(result.stderr)
        return result.stdout

    def fingerprint(self) -> dict[str, Any]:
        return json.loads(self.python(FINGERPRINT))

    @property
    def key_file(self) -> Path:
        return self.data_dir / "backup.key"

    def trust(self, other: Installation) -> None:
        """Give this installation the backup key of another (as an admin copies it over)."""
        shutil.copyfile(other.key_file, self.key_file)

    @property
    def media(self) -> Path:
        return self.data_dir / "media"


def _synthetic(tmp: Path) -> Path:
    out = tmp / "aws_2025-02.csv"
    subprocess.run(
        [
            sys.executable,
            str(SYNTH_TOOL),
            str(out),
            "--rows",
            "3000",
            "--period",
            "2025-02",
            "--seed",
            "7",
            "--untagged",
            "0.05",
        ],
        check=True,
    )
    return out


def _populated(base: Path, database_url: str | None = None) -> Installation:
    source = Installation(base / "source", database_url)
    source.run("migrate", "-v", "0")
    source.python(POPULATE, str(REFERENCE_DIR), str(_synthetic(base)))
    return source


def _round_trip(base: Path, source: Installation, target: Installation) -> None:
    before = source.fingerprint()
    assert before["rows"]["billing.Charge"] > 100
    assert before["periods"]["2025-01"]["billed_total"] == "20227.0000000000"
    # POPULATE rejects the first flagged charge of the month and approves the others.
    assert (before["periods"]["2025-01"]["rejected"], before["periods"]["2025-01"]["flagged"]) == (1, 0)
    assert before["media"] and before["imports_readable"]

    archive = base / "site.tar.gz"
    first = source.run("backup", str(archive), "--format", "json")
    made = json.loads(first.stdout)
    assert made["path"] == str(archive)
    # The system page's "last backup" is recorded in the data folder.
    record = json.loads((source.data_dir / "last-backup.json").read_text())
    assert record["path"] == str(archive) and record["size_bytes"] == archive.stat().st_size
    assert made["periods"]["2025-01"]["billed"] == {"amount": "20227.0000000000", "cents": 2022700}
    # The first backup creates the signing key and prints it once.
    key = source.key_file.read_text().strip()
    assert made["new_key_file"] == str(source.key_file) and f"key: {key}" in first.stderr
    assert oct(source.key_file.stat().st_mode & 0o777) == "0o600"

    target.run("migrate", "-v", "0")  # a fresh installation, as `docker compose up` leaves it
    # Without the key the archive's signature cannot be checked: refused, unless --unsigned.
    refused = target.run("restore", str(archive), check=False)
    assert refused.returncode == 1 and "cannot verify the signature" in refused.stderr
    target.trust(source)
    restored = json.loads(target.run("restore", str(archive), "--format", "json").stdout)
    assert restored["restored"] is True and restored["signature"] == "verified"
    after = target.fingerprint()
    # Every row of every table, every period total, every media file: identical.
    assert after == before

    # The restored installation keeps working: new rows get fresh ids.
    target.run("sources", "add", "newsource")
    # And it now holds data: a second restore is refused, and changes nothing.
    again = target.run("restore", str(archive), check=False)
    assert again.returncode == 1
    assert "already holds data" in again.stderr


def test_round_trip_sqlite(tmp_path):
    source = _populated(tmp_path)
    _round_trip(tmp_path, source, Installation(tmp_path / "target"))


def _pg_admin() -> Any:
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3)
    except Exception as exc:
        pytest.skip(f"no PostgreSQL server for scratch databases: {exc.__class__.__name__}")


@pytest.fixture
def pg_databases() -> Any:
    """A factory of scratch PostgreSQL databases, dropped afterwards."""
    admin = _pg_admin()
    created: list[str] = []

    def make() -> str:
        name = f"oc_backup_test_{uuid.uuid4().hex[:10]}"
        try:
            admin.execute(f'CREATE DATABASE "{name}"')
        except Exception as exc:
            pytest.skip(f"cannot create a scratch database: {exc.__class__.__name__}")
        created.append(name)
        return f"{PG_SERVER}/{name}"

    yield make
    for name in created:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_round_trip_postgres(tmp_path, pg_databases):
    source = _populated(tmp_path, pg_databases())
    _round_trip(tmp_path, source, Installation(tmp_path / "target", pg_databases()))


# --- damaged and unsuitable archives (checked before anything changes) ---------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A small SQLite installation's backup (reference month only)."""
    base = tmp_path_factory.mktemp("archive")
    site = Installation(base / "site")
    site.run("migrate", "-v", "0")
    site.python(POPULATE.split("services.flag_rule_save")[0], str(REFERENCE_DIR), "unused")
    path = base / "site.tar.gz"
    site.run("backup", str(path))
    return path


@pytest.fixture
def archive_key(archive, settings) -> bytes:
    """The key that signed `archive`, made this installation's (as an admin sets it)."""
    key = (archive.parent / "site" / "backup.key").read_text().strip()
    settings.OPENCHARGEBACK_BACKUP_KEY = key
    return key.encode()


def rewrite(
    src: Path,
    dst: Path,
    *,
    member: Callable[[str, bytes], bytes | None] | None = None,
    manifest: Callable[[dict], None] | None = None,
    fix_checksums: bool = False,
    extra: tuple[tarfile.TarInfo, bytes] | None = None,
    key: bytes | None = None,
) -> Path:
    """Copy an archive, changing (or dropping: None) members and the manifest. The manifest keeps
    its bytes and signature unless it is changed; then it is signed again with `key` if given (as
    someone holding the key would), else it keeps the old signature (which no longer verifies)."""
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    doc: dict = {}
    original = signature = b""
    checksums: dict[str, dict] = {}
    with tarfile.open(src, "r:gz") as tar:
        for info in tar:
            data = tar.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == backup.MANIFEST:
                original, doc = data, json.loads(data)
                continue
            if info.name == backup_signing.SIGNATURE:
                signature = data
                continue
            if member is not None:
                changed = member(info.name, data)
                if changed is None:
                    continue
                if changed != data and fix_checksums:
                    checksums[info.name] = {
                        "sha256": hashlib.sha256(changed).hexdigest(),
                        "size": len(changed),
                    }
                data = changed
            members.append((info, data))
    doc["files"].update(checksums)
    if manifest is not None:
        manifest(doc)
    if extra is not None:
        members.append(extra)
    body = json.dumps(doc).encode()
    if body == json.dumps(json.loads(original)).encode():
        body = original
    elif key is not None:
        signature = backup_signing.sign(body, backup_signing.BackupKey(key, "test"))
    with tarfile.open(dst, "w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, data in ((backup.MANIFEST, body), (backup_signing.SIGNATURE, signature)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


def _unchanged(settings) -> Any:
    """Asserts, after a refused restore, that the (empty) test installation is as it was."""
    media = Path(settings.MEDIA_ROOT)
    media.mkdir(parents=True, exist_ok=True)
    (media / "keep.txt").write_text("still here")
    before = restore.installation_data()

    def check() -> None:
        assert restore.installation_data() == before == {}
        assert sorted(p.name for p in media.iterdir()) == ["keep.txt"]
        assert not list(media.parent.glob(".restore-*"))

    return check


def test_extract_a_good_archive(archive, archive_key, tmp_path):
    manifest = backup.extract_verified(archive, tmp_path)
    assert manifest["signature"] == "verified"
    assert (tmp_path / backup.SQLITE_MEMBER).is_file()
    assert manifest["format"] == backup.FORMAT
    assert manifest["stats"]["periods"]["2025-01"]["billed_total"] == "20227.0000000000"
    assert manifest["stats"]["tables"]["billing_charge"] == 59
    assert manifest["media"]["files"] == 5
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert manifest["migrations"]["billing"][0] == "0001_initial"


@pytest.mark.django_db
def test_checksum_mismatch_is_refused(archive, archive_key, tmp_path, settings):
    check = _unchanged(settings)

    def tamper(name: str, data: bytes) -> bytes:
        return data.replace(b"2025-01", b"2025-02") if name.startswith("media/") else data

    bad = rewrite(archive, tmp_path / "bad.tar.gz", member=tamper)
    with pytest.raises(Refused, match="checksum mismatch: media/"):
        restore.backup_restore(path=bad)
    check()


@pytest.mark.django_db
def test_missing_member_is_refused(archive, archive_key, tmp_path, settings):
    check = _unchanged(settings)
    bad = rewrite(archive, tmp_path / "bad.tar.gz", member=lambda n, d: None if n.startswith("media/") else d)
    with pytest.raises(Refused, match="missing from archive: media/"):
        restore.backup_restore(path=bad)
    check()


@pytest.mark.django_db
def test_unsafe_member_is_refused(archive, archive_key, tmp_path, settings):
    check = _unchanged(settings)
    info = tarfile.TarInfo("../../escape.txt")
    bad = rewrite(archive, tmp_path / "bad.tar.gz", extra=(info, b"x"))
    with pytest.raises(Refused, match="unsafe path"):
        restore.backup_restore(path=bad)
    check()
    assert not (tmp_path.parent / "escape.txt").exists()


@pytest.mark.django_db
def test_truncated_or_foreign_files_are_refused(archive, archive_key, tmp_path, settings):
    check = _unchanged(settings)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(Refused, match="cannot read backup"):
        restore.backup_restore(path=truncated)
    foreign = tmp_path / "foreign.tar.gz"
    with tarfile.open(foreign, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("hello.txt"), io.BytesIO(b""))
    with pytest.raises(Refused, match=r"no manifest\.json"):
        restore.backup_restore(path=foreign)
    with pytest.raises(Refused, match="not found"):
        restore.backup_restore(path=tmp_path / "nothing.tar.gz")
    check()


@pytest.mark.django_db
def test_backup_of_a_newer_version_is_refused(archive, archive_key, tmp_path, settings):
    check = _unchanged(settings)

    def newer(doc: dict) -> None:
        doc["migrations"]["billing"].append("9999_from_the_future")
        doc["app_version"] = "99.0"

    bad = rewrite(archive, tmp_path / "newer.tar.gz", manifest=newer, key=archive_key)
    with pytest.raises(Refused, match=r"newer version \(99.0\).*billing.9999_from_the_future"):
        restore.backup_restore(path=bad)
    check()


@pytest.mark.django_db
def test_other_database_vendor_is_refused(archive, archive_key, tmp_path, settings):
    from django.db import connection

    check = _unchanged(settings)
    other = "postgresql" if connection.vendor == "sqlite" else "sqlite"
    member = {"postgresql": backup.POSTGRES_MEMBER, "sqlite": backup.SQLITE_MEMBER}[other]

    def other_vendor(doc: dict) -> None:
        doc["files"][member] = doc["files"].pop(backup.SQLITE_MEMBER)
        doc["database"].update(vendor=other, member=member)

    renamed = tmp_path / "renamed.tar.gz"
    with tarfile.open(archive, "r:gz") as src, tarfile.open(renamed, "w:gz") as dst:
        for info in src:
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == backup.SQLITE_MEMBER:
                info.name = member
            dst.addfile(info, io.BytesIO(data))
    bad = rewrite(renamed, tmp_path / "other.tar.gz", manifest=other_vendor, key=archive_key)
    with pytest.raises(Refused, match=f"holds a {other} database"):
        restore.backup_restore(path=bad)
    check()


def test_damaged_database_with_matching_checksums_changes_nothing(archive, tmp_path):
    """A snapshot that passes the checksums (and the signature: made with the key) but not the
    figures is refused before it is applied."""
    site = Installation(tmp_path / "site")
    site.run("migrate", "-v", "0")
    key = (archive.parent / "site" / "backup.key").read_text().strip()
    site.key_file.write_text(key)

    def corrupt(name: str, data: bytes) -> bytes:
        if name != backup.SQLITE_MEMBER:
            return data
        import sqlite3

        path = tmp_path / "snapshot.sqlite3"
        path.write_bytes(data)
        conn = sqlite3.connect(path)
        conn.execute("DELETE FROM billing_chargeflag")
        conn.execute(
            "UPDATE billing_charge SET billed_cost = billed_cost + 1 WHERE id = (SELECT MIN(id) FROM billing_charge)"
        )
        conn.commit()
        conn.close()
        return path.read_bytes()

    bad = rewrite(archive, tmp_path / "bad.tar.gz", member=corrupt, fix_checksums=True, key=key.encode())
    result = site.run("restore", str(bad), check=False)
    assert result.returncode == 1
    assert "does not match its manifest" in result.stderr
    assert "money billing.charge.billed_cost" in result.stderr
    assert json.loads(site.python(FINGERPRINT))["rows"]["billing.Charge"] == 0
    assert not list(site.media.glob("**/*.csv"))


def test_restore_check_only(archive, tmp_path):
    site = Installation(tmp_path / "site")
    site.trust(Installation(archive.parent / "site"))
    result = json.loads(site.run("restore", "--check", str(archive), "--format", "json").stdout)
    assert result["verified"] is True and result["signature"] == "verified"
    assert result["periods"]["2025-01"]["billed"]["cents"] == 2022700
    assert not (site.data_dir / "media").exists() or not any((site.data_dir / "media").iterdir())


def test_backup_to_a_directory_and_no_overwrite(tmp_path):
    site = Installation(tmp_path / "site")
    site.run("migrate", "-v", "0")
    out = tmp_path / "backups"
    out.mkdir()
    made = json.loads(site.run("backup", str(out), "--format", "json").stdout)
    path = Path(made["path"])
    assert path.parent == out and path.name.startswith("openchargeback-") and path.name.endswith(".tar.gz")
    refused = site.run("backup", str(path), check=False)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    site.run("backup", str(path), "--overwrite")
    assert not list(out.glob(".backup-*"))  # no temporary files left behind


@pytest.mark.parametrize("damage", ["truncated", "bad_sql"])
def test_postgres_failure_midway_changes_nothing(tmp_path, pg_databases, damage):
    """pg_restore or psql failing half-way rolls the whole restore back: the target stays as it was."""
    source = Installation(tmp_path / "source", pg_databases())
    source.run("migrate", "-v", "0")
    source.python(POPULATE.split("services.flag_rule_save")[0], str(REFERENCE_DIR), "unused")
    archive = tmp_path / "site.tar.gz"
    source.run("backup", str(archive))

    plain = tmp_path / "uncompressed.pgdump"
    subprocess.run(
        ["pg_dump", "--format=custom", "--compress=0", f"--file={plain}", source.database_url], check=True
    )

    def corrupt(name: str, data: bytes) -> bytes:
        if name != backup.POSTGRES_MEMBER:
            return data
        if damage == "truncated":
            return data[: len(data) * 2 // 3]  # pg_restore stops with an error part-way
        # The schema loads, but a row of data does not (a tab splits a column): psql fails after
        # the drops and the first tables.
        dump = plain.read_bytes()
        assert b"zorp.blinkman@example.edu" in dump
        return dump.replace(b"zorp.blinkman@example.edu", b"zorp\tblinkman@example.edu")

    bad = rewrite(
        archive,
        tmp_path / "bad.tar.gz",
        member=corrupt,
        fix_checksums=True,
        key=source.key_file.read_bytes().strip(),
    )
    target = Installation(tmp_path / "target", pg_databases())
    target.trust(source)
    target.run("migrate", "-v", "0")
    target.run("sources", "add", "keepme")
    before = target.fingerprint()
    result = target.run("restore", str(bad), "--force", check=False)
    assert result.returncode == 1, result.stdout
    assert "nothing was changed" in result.stderr
    expected = "end of file" if damage == "truncated" else "extra data after last expected column"
    assert expected in result.stderr
    assert "NOTICE" not in result.stderr
    assert target.fingerprint() == before


# --- authenticity: a signed manifest, and only the archive's own members ----------------------


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_a_manifest_naming_a_path_outside_the_archive_is_refused(archive, tmp_path, where):
    """`database.member` naming a file outside the archive (even a perfect copy of the snapshot,
    signed with the key) is refused: nothing but the archive's own member is ever restored."""
    site = Installation(tmp_path / "site")
    site.run("migrate", "-v", "0")
    site.trust(Installation(archive.parent / "site"))
    with tarfile.open(archive, "r:gz") as tar:
        snapshot = tar.extractfile(backup.SQLITE_MEMBER).read()  # type: ignore[union-attr]
    planted = tmp_path / "planted.sqlite3"
    planted.write_bytes(snapshot)
    name = str(planted) if where == "absolute" else "../../planted.sqlite3"

    def plant(doc: dict) -> None:
        doc["database"]["member"] = name

    bad = rewrite(
        archive, tmp_path / "planted.tar.gz", manifest=plant, key=site.key_file.read_bytes().strip()
    )
    for args in (["--check"], [], ["--unsigned"]):
        result = site.run("restore", str(bad), *args, check=False)
        assert result.returncode == 1, (args, result.stdout)
        assert f"the manifest names {name!r} as the database" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert site.fingerprint()["rows"]["billing.Charge"] == 0


def _re_hashed(archive: Path, tmp_path: Path) -> Path:
    """The archive with one charge's billed cost changed and the manifest's checksum updated, by
    someone without the key."""

    def tamper(name: str, data: bytes) -> bytes:
        if name != backup.SQLITE_MEMBER:
            return data
        import sqlite3

        path = tmp_path / "snapshot.sqlite3"
        path.write_bytes(data)
        conn = sqlite3.connect(path)
        conn.execute(
            "UPDATE billing_charge SET billed_cost = 0 WHERE id = (SELECT MIN(id) FROM billing_charge)"
        )
        conn.commit()
        conn.close()
        return path.read_bytes()

    return rewrite(archive, tmp_path / "tampered.tar.gz", member=tamper, fix_checksums=True)


@pytest.mark.django_db
def test_a_re_hashed_tampered_database_fails_the_signature(archive, archive_key, tmp_path, settings):
    check = _unchanged(settings)
    bad = _re_hashed(archive, tmp_path)
    for attempt in (backup.backup_verify, restore.backup_restore):
        with pytest.raises(Refused, match="does not verify: the archive was changed after it was made"):
            attempt(path=bad)
    check()


@pytest.mark.django_db
def test_unsigned_and_foreign_key_archives_need_unsigned(archive, archive_key, tmp_path, settings):
    check = _unchanged(settings)
    unsigned = tmp_path / "unsigned.tar.gz"
    with tarfile.open(archive, "r:gz") as src, tarfile.open(unsigned, "w:gz") as dst:
        for info in src:
            if info.name != backup_signing.SIGNATURE:
                dst.addfile(info, src.extractfile(info))
    with pytest.raises(Refused, match=r"is not signed.*with --unsigned"):
        backup.backup_verify(path=unsigned)
    (tmp_path / "x").mkdir()
    verified = backup.extract_verified(unsigned, tmp_path / "x", unsigned=True)
    assert verified["signature"] == "not checked (--unsigned)"

    settings.OPENCHARGEBACK_BACKUP_KEY = "another installation's key"
    with pytest.raises(Refused, match="signed with another backup key"):
        restore.backup_restore(path=archive)
    settings.OPENCHARGEBACK_BACKUP_KEY = ""
    settings.OPENCHARGEBACK_BACKUP_KEY_FILE = tmp_path / "no-such.key"
    with pytest.raises(Refused, match="this installation has no backup key"):
        backup.backup_verify(path=archive)
    check()


def test_cli_refuses_a_tampered_archive_without_traceback(archive, tmp_path):
    site = Installation(tmp_path / "site")
    site.run("migrate", "-v", "0")
    site.trust(Installation(archive.parent / "site"))
    bad = _re_hashed(archive, tmp_path)
    for args in (["--check"], []):
        result = site.run("restore", str(bad), *args, "--format", "json", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "does not verify" in json.loads(result.stdout)["error"]
    assert site.fingerprint()["rows"]["billing.Charge"] == 0
    # A second backup uses the key it has and prints none.
    again = site.run("backup", str(tmp_path / "second.tar.gz"))
    assert "key:" not in again.stderr and "signed with backup key" in again.stdout
