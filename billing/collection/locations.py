"""Listing and fetching the files of a collection point, through fsspec: the local file system, S3
(s3fs), Azure Blob Storage (adlfs) and Google Cloud Storage (gcsfs) behind one interface.

Credentials are never stored: each library reads them from the environment as it does elsewhere
(AWS_ACCESS_KEY_ID / a profile / an instance role; AZURE_STORAGE_CONNECTION_STRING or
AZURE_STORAGE_ACCOUNT_NAME with a key or a service principal; GOOGLE_APPLICATION_CREDENTIALS or the
metadata server).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from chargeback.errors import Refused

from .. import selectors
from .models import CollectionPoint

Kind = CollectionPoint.Kind

# URL schemes accepted for each kind, and the fsspec protocol used.
SCHEMES: dict[str, tuple[str, ...]] = {
    Kind.LOCAL: ("file",),
    Kind.S3: ("s3",),
    Kind.AZURE: ("az", "abfs", "abfss"),
    Kind.GCS: ("gs", "gcs"),
}
PROTOCOLS: dict[str, str] = {Kind.LOCAL: "file", Kind.S3: "s3", Kind.AZURE: "az", Kind.GCS: "gs"}
# The library each kind needs, and how to install it.
LIBRARIES: dict[str, tuple[str, str]] = {
    Kind.S3: ("s3fs", "pip install s3fs"),
    Kind.AZURE: ("adlfs", "pip install 'openchargeback[azure]'"),
    Kind.GCS: ("gcsfs", "pip install 'openchargeback[gcs]'"),
}

# AWS Data Exports: .../BILLING_PERIOD=2025-01/...; Azure cost exports: .../20250101-20250131/...
_BILLING_PERIOD_SEGMENT = re.compile(r"^billing_period=(20\d{2})-?(0[1-9]|1[0-2])$", re.IGNORECASE)
_DATE_RANGE_SEGMENT = re.compile(r"^(20\d{2})(0[1-9]|1[0-2])\d{2}-20\d{6}$")


@dataclass(frozen=True)
class RemoteFile:
    """A file found at a collection point."""

    key: str  # the path as the file system names it (bucket/prefix/... for object stores)
    version: str  # ETag, generation, or mtime:size
    size: int
    modified: float | None  # seconds since the epoch, when known

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name


def root_of(kind: str, location: str) -> str:
    """The point's location as its file system names it (no scheme), checked against its kind."""
    location = (location or "").strip()
    if not location:
        raise Refused("a location is required")
    scheme, sep, rest = location.partition("://")
    if not sep:
        scheme, rest = "", location
    if kind == Kind.LOCAL:
        if scheme not in ("", "file"):
            raise Refused(f"a local folder is a path such as /srv/exports, not {location!r}")
        if not os.path.isabs(rest):
            raise Refused(f"a local folder must be an absolute path: {location!r}")
        return os.path.normpath(rest)
    if scheme.lower() not in SCHEMES[kind]:
        example = f"{SCHEMES[kind][0]}://bucket/prefix"
        raise Refused(f"a {Kind(kind).label} location is {example}, not {location!r}")
    rest = rest.strip("/")
    if not rest:
        raise Refused(f"{location!r} names no bucket or container")
    return rest


def library_problem(kind: str) -> str:
    """Why this kind cannot be used here (its library is not installed), or ''."""
    if kind not in LIBRARIES:
        return ""
    module, install = LIBRARIES[kind]
    if importlib.util.find_spec(module) is None:
        return f"{Kind(kind).label} needs the {module} library: {install}"
    return ""


def filesystem(point: CollectionPoint) -> Any:
    """A fresh fsspec file system for the point: no cached instance and no cached listing, so every
    run sees the versions delivered since the last one."""
    import fsspec

    problem = library_problem(point.kind)
    if problem:
        raise Refused(problem)
    options: dict[str, Any] = {"skip_instance_cache": True}
    if point.kind != Kind.LOCAL:
        options["use_listings_cache"] = False
    if point.kind == Kind.S3:
        endpoint = (
            point.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint:
            options["endpoint_url"] = endpoint
    return fsspec.filesystem(PROTOCOLS[point.kind], **options)


def version_of(info: dict[str, Any]) -> str:
    """What changes when a file is delivered again: the ETag (S3, Azure), the generation (GCS), else
    the modification time and size (local files)."""
    for key in ("ETag", "etag", "generation"):
        value = info.get(key)
        if value:
            return str(value).strip('"')
    return f"{modified_of(info) or 0:.6f}:{int(info.get('size') or 0)}"


def modified_of(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, int | float):
            return float(value)
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
    return None


def list_files(point: CollectionPoint, fs: Any) -> list[RemoteFile]:
    """Every file below the point's location whose name matches one of its patterns, by key."""
    root = root_of(point.kind, point.location)
    if point.kind == Kind.LOCAL and not os.path.isdir(root):
        raise Refused(f"folder {root} does not exist")
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        raise Refused(f"{point.location} does not exist") from None
    except PermissionError as exc:
        raise Refused(f"{point.location}: access denied ({exc})") from None
    patterns = [p.lower() for p in point.patterns]
    files = []
    for key, info in found.items():
        if info.get("type", "file") != "file":
            continue
        name = PurePosixPath(key).name
        if not any(fnmatch.fnmatchcase(name.lower(), p) for p in patterns):
            continue
        files.append(
            RemoteFile(
                key=key, version=version_of(info), size=int(info.get("size") or 0), modified=modified_of(info)
            )
        )
    return sorted(files, key=lambda f: f.key)


def period_of(key: str) -> str | None:
    """The billing period a delivered file belongs to: a `BILLING_PERIOD=YYYY-MM` folder (AWS Data
    Exports), a `YYYYMMDD-YYYYMMDD` folder (Azure exports), else a month in the file name; None
    lets the rows' own BillingPeriodStart decide."""
    parts = PurePosixPath(key).parts
    for segment in reversed(parts[:-1]):
        match = _BILLING_PERIOD_SEGMENT.match(segment) or _DATE_RANGE_SEGMENT.match(segment)
        if match:
            return f"{match.group(1)}-{match.group(2)}"
    return selectors.period_from_filename(parts[-1]) if parts else None


def fetch(point: CollectionPoint, fs: Any, remote: RemoteFile, into: Path) -> Path:
    """A local file with the remote file's bytes (a local file is read where it is)."""
    if point.kind == Kind.LOCAL:
        return Path(remote.key)
    target = into / remote.name
    fs.get_file(remote.key, str(target))
    return target
