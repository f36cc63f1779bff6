"""Where media live: stored imports, usage files, statement PDFs and journals.

By default a local folder (MEDIA_ROOT, under the data dir). With
`OPENCHARGEBACK_STORAGE_URL=s3://bucket/prefix` they go to S3-compatible object storage through
django-storages, so a web host and worker hosts share them. The endpoint, region and credentials
come from the environment as boto3 reads them (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile or an instance role).

Code that needs a file on disk (the ingest's pyarrow reader, the rating of usage files) asks for
`local_copy(field_file)`: the file itself on local storage, a temporary download otherwise. The
backup lists and reads media through `media_names` and the storage API; the restore puts them back
with `media_replace`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, default_storage

S3_BACKEND = "storages.backends.s3.S3Storage"
# Without a prefix in the URL media go under this one, so that a restore can move earlier media
# aside to a sibling prefix (`media.before-restore-…/`) outside the media themselves.
DEFAULT_PREFIX = "media"
# Objects larger than this are spooled to a temporary file rather than kept in memory when read.
SPOOL_BYTES = 16 * 1024 * 1024
COPY_CHUNK = 1024 * 1024


def storage_options_from_url(url: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """django-storages S3Storage options for `s3://bucket/prefix`, with the endpoint, region and
    addressing style from the environment (credentials are left to boto3's own lookup)."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ImproperlyConfigured(
            f"OPENCHARGEBACK_STORAGE_URL must be s3://bucket/prefix, not {url!r} "
            "(leave it unset to keep media in the data folder)"
        )
    if not parts.netloc:
        raise ImproperlyConfigured(f"OPENCHARGEBACK_STORAGE_URL {url!r} names no bucket")
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
    options: dict[str, Any] = {
        "bucket_name": parts.netloc,
        "location": prefix,
        "endpoint_url": endpoint,
        "region_name": environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
        # The same semantics as the local folder: a name in use gets a new one, never overwritten.
        "file_overwrite": False,
        "default_acl": None,  # private objects; downloads go through the application
        "max_memory_size": SPOOL_BYTES,
        # S3-compatible servers (MinIO, Ceph, moto) expect path-style requests.
        "addressing_style": environ.get("AWS_S3_ADDRESSING_STYLE") or ("path" if endpoint else None),
    }
    return options


def storages_setting(url: str, environ: Mapping[str, str], staticfiles_backend: str) -> dict[str, Any]:
    """The STORAGES setting: the local folder without a URL, S3 with one."""
    storages: dict[str, Any] = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": staticfiles_backend},
    }
    if url:
        storages["default"] = {"BACKEND": S3_BACKEND, "OPTIONS": storage_options_from_url(url, environ)}
    return storages


def media_storage() -> Storage:
    return default_storage


def is_local(storage: Storage | None = None) -> bool:
    """Media are files in a local folder (paths can be used directly)."""
    return isinstance(storage or media_storage(), FileSystemStorage)


def media_location() -> str:
    """Where media are, for people: the folder, or s3://bucket/prefix."""
    storage = media_storage()
    if is_local(storage):
        return str(Path(storage.location))  # type: ignore[attr-defined]
    bucket = getattr(storage, "bucket_name", "")
    prefix = getattr(storage, "location", "")
    return f"s3://{bucket}/{prefix}".rstrip("/")


@contextlib.contextmanager
def local_copy(field_file: Any) -> Iterator[Path]:
    """A path on this host with the stored file's bytes: the file itself on local storage, else a
    temporary download that is removed afterwards."""
    storage = field_file.storage
    if is_local(storage):
        yield Path(storage.path(field_file.name))
        return
    suffix = "".join(Path(field_file.name).suffixes[-2:])
    with tempfile.TemporaryDirectory(prefix="openchargeback-media-") as work:
        path = Path(work) / f"copy{suffix}"
        with storage.open(field_file.name, "rb") as source, path.open("wb") as target:
            shutil.copyfileobj(source, target, COPY_CHUNK)
        yield path


def media_names(storage: Storage | None = None) -> Iterator[str]:
    """Every stored name, depth first, in a stable order."""
    storage = storage or media_storage()
    pending = [""]
    while pending:
        folder = pending.pop()
        try:
            folders, files = storage.listdir(folder)
        except FileNotFoundError:
            continue
        for name in sorted(files):
            yield f"{folder}/{name}" if folder else name
        pending.extend(sorted((f"{folder}/{d}" if folder else d for d in folders), reverse=True))


def _s3_prefix(storage: Any) -> str:
    return storage.location.strip("/") + "/" if storage.location else ""


def media_move_aside(storage: Any, stamp: str) -> str | None:
    """Object storage: move every object under the media prefix to a sibling prefix
    `<prefix>.before-restore-<stamp>/` (server-side copies). Returns where, or None when empty."""
    prefix = _s3_prefix(storage)
    aside = f"{prefix.rstrip('/') or DEFAULT_PREFIX}.before-restore-{stamp}/"
    moved = 0
    for obj in storage.bucket.objects.filter(Prefix=prefix):
        target = aside + obj.key[len(prefix) :]
        storage.bucket.Object(target).copy_from(CopySource={"Bucket": storage.bucket_name, "Key": obj.key})
        obj.delete()
        moved += 1
    return f"s3://{storage.bucket_name}/{aside.rstrip('/')}" if moved else None


def media_upload_tree(storage: Storage, staged: Path) -> int:
    """Store every file under `staged` with its relative name (the namespace must be free)."""
    count = 0
    for path in sorted(p for p in staged.rglob("*") if p.is_file()):
        name = path.relative_to(staged).as_posix()
        with path.open("rb") as fh:
            stored = storage.save(name, File(fh, name=path.name))
        if stored != name:
            raise RuntimeError(f"media {name} was stored as {stored}: the storage was not empty")
        count += 1
    return count


def media_replace(staged: Path) -> str | None:
    """Object storage: put the staged media in place of the current ones (moved aside first).
    Returns where the earlier media went, or None when there were none."""
    storage = media_storage()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    previous = media_move_aside(storage, stamp)
    if staged.is_dir():
        media_upload_tree(storage, staged)
    return previous
