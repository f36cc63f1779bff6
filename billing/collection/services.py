"""Collecting exports from collection points: every write of billing.collection.

`collection_run` lists each enabled point and, file by file, imports what is new through the
normal import service (billing.services.import_create + import_execute), so validation,
supersede, decisions carried over and the refusal of closed and finalized periods all hold:

- a new key is imported and added to its period;
- a key delivered again with a new version (ETag, generation, mtime:size) supersedes that key's
  earlier import (providers rewrite the month's export every day);
- an unchanged key is skipped; so is a version that failed before: it is reported once, and tried
  again only when the provider delivers a new version.

Each file is one transaction (its import); a run holds each point (`running_since`) so that two
runs (beat and a person at the command line) never import the same file twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chargeback import storage
from chargeback.actors import actor_label
from chargeback.errors import Refused

from .. import selectors as billing_selectors
from .. import services as billing_services
from ..ingest.pipeline import sha256_of
from ..models import Import, Source
from . import locations
from .models import CollectedObject, CollectionPoint

logger = logging.getLogger(__name__)

# A run that has held a point this long is presumed dead (its process was killed).
LEASE = dt.timedelta(hours=6)


class Action:
    """What happened to a file in a run (or, in a dry run, what would happen)."""

    ADDED = "added"  # a new key, imported and added to its period
    SUPERSEDED = "superseded"  # a new version of a key, replacing that key's earlier import
    LINKED = "linked"  # its bytes were imported before (by hand, or by a run that stopped)
    UNCHANGED = "unchanged"
    FAILED = "failed"  # this version failed now (reported once)
    FAILED_BEFORE = "failed before"  # this version failed in an earlier run: waits for a new one
    WAITING = "waiting"  # a local file still being written (modified in the last seconds)
    WOULD_ADD = "would add"
    WOULD_SUPERSEDE = "would supersede"


@dataclass
class CollectedFile:
    key: str
    action: str
    version: str
    period: str = ""
    size_bytes: int = 0
    import_id: int | None = None
    supersedes: list[int] = field(default_factory=list)
    charges: int = 0
    billed_total: Decimal | None = None
    error: str = ""


@dataclass
class PointReport:
    point: str
    kind: str
    location: str
    source: str
    files: list[CollectedFile] = field(default_factory=list)
    error: str = ""  # the location could not be listed
    busy: bool = False  # another run holds the point

    def count(self, action: str) -> int:
        return sum(1 for f in self.files if f.action == action)


@dataclass
class CollectionReport:
    dry_run: bool
    points: list[PointReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(f.action for p in self.points for f in p.files))

    @property
    def failures(self) -> list[tuple[PointReport, CollectedFile]]:
        """Files that failed in this run (a version that failed before is not reported again)."""
        return [(p, f) for p in self.points for f in p.files if f.action == Action.FAILED]

    @property
    def ok(self) -> bool:
        return not self.failures and not any(p.error for p in self.points)


# --- collection points --------------------------------------------------------------------

POINT_FIELDS = ("name", "kind", "source", "location", "pattern", "endpoint_url", "enabled", "note")


def _clean_point(values: dict[str, Any]) -> dict[str, Any]:
    name = (values.get("name") or "").strip()
    if not name:
        raise Refused("a collection point needs a name")
    kind = values.get("kind") or CollectionPoint.Kind.LOCAL
    if kind not in CollectionPoint.Kind.values:
        raise Refused(f"unknown kind {kind!r}: use one of {', '.join(CollectionPoint.Kind.values)}")
    source = values.get("source")
    if not isinstance(source, Source):
        source = billing_selectors.source_get(str(source or ""))
    location = (values.get("location") or "").strip()
    locations.root_of(kind, location)  # refuses a location that does not fit the kind
    problem = locations.library_problem(kind)
    if problem:
        raise Refused(problem)
    pattern = " ".join((values.get("pattern") or "").split()) or "*.csv *.csv.gz *.parquet"
    endpoint_url = (values.get("endpoint_url") or "").strip()
    if endpoint_url and kind != CollectionPoint.Kind.S3:
        raise Refused("an endpoint URL applies to S3 locations only")
    return {
        "name": name,
        "kind": kind,
        "source": source,
        "location": location,
        "pattern": pattern,
        "endpoint_url": endpoint_url,
        "enabled": bool(values.get("enabled", True)),
        "note": (values.get("note") or "").strip(),
    }


@transaction.atomic
def collection_point_save(
    *, point_id: int | None = None, actor: Any = None, actor_name: str = "", **values: Any
) -> CollectionPoint:
    """Create a collection point, or change one (every field is given). Its history is kept by
    auditlog; the files it collected stay remembered when its location changes."""
    unknown = set(values) - set(POINT_FIELDS)
    if unknown:
        raise Refused(f"unknown field(s) of a collection point: {', '.join(sorted(unknown))}")
    cleaned = _clean_point(values)
    clash = CollectionPoint.objects.filter(name=cleaned["name"])
    if point_id is not None:
        clash = clash.exclude(pk=point_id)
    if clash.exists():
        raise Refused(f"a collection point named {cleaned['name']!r} already exists")
    point = (
        CollectionPoint()
        if point_id is None
        else CollectionPoint.objects.select_for_update().get(pk=point_id)
    )
    for name, value in cleaned.items():
        setattr(point, name, value)
    point.actor = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    point.actor_name = actor_label(actor, actor_name)
    point.save()
    return point


# --- running ------------------------------------------------------------------------------


def _points_to_run(names: Sequence[str] | None) -> list[CollectionPoint]:
    points = CollectionPoint.objects.select_related("source").order_by("name")
    if not names:
        return list(points.filter(enabled=True))
    found = {p.name: p for p in points.filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise Refused(f"no collection point named {', '.join(map(repr, missing))}")
    return [found[n] for n in dict.fromkeys(names)]  # named: run even when disabled


def _claim(point: CollectionPoint) -> bool:
    """Hold the point for this run (one conditional UPDATE); False when another run holds it."""
    now = timezone.now()
    free = Q(running_since__isnull=True) | Q(running_since__lt=now - LEASE)
    return CollectionPoint.objects.filter(free, pk=point.pk).update(running_since=now) == 1


def _release(point: CollectionPoint, error: str) -> None:
    CollectionPoint.objects.filter(pk=point.pk).update(
        running_since=None, last_run_at=timezone.now(), last_error=error
    )


def collection_run(
    *,
    points: Sequence[str] | None = None,
    dry_run: bool = False,
    actor: Any = None,
    actor_name: str = "",
) -> CollectionReport:
    """Collect every enabled point (or the named ones). A point that cannot be listed is reported
    and the others still run; a file that fails is recorded and the next file goes on."""
    started = time.perf_counter()
    report = CollectionReport(dry_run=dry_run)
    for point in _points_to_run(points):
        point_report = PointReport(
            point=point.name, kind=point.kind, location=point.location, source=point.source.slug
        )
        report.points.append(point_report)
        if dry_run:
            _collect_point(point, point_report, dry_run=True, actor=actor)
            continue
        if not _claim(point):
            point_report.busy = True
            continue
        try:
            _collect_point(point, point_report, dry_run=False, actor=actor)
        finally:
            _release(point, point_report.error)
    report.seconds = time.perf_counter() - started
    if not dry_run:
        logger.info(
            "collection: %s",
            ", ".join(f"{n} {a}" for a, n in sorted(report.counts.items())) or "nothing found",
            extra={"event": "collection_run", "counts": report.counts, "failed": len(report.failures)},
        )
    return report


def _collect_point(point: CollectionPoint, report: PointReport, *, dry_run: bool, actor: Any) -> None:
    try:
        fs = locations.filesystem(point)
        files = locations.list_files(point, fs)
    except Refused as exc:
        report.error = str(exc)
    except Exception as exc:  # the store answered with an error: reported, the other points run
        logger.warning("collection point %s: cannot list %s: %s", point.name, point.location, exc)
        report.error = f"cannot list {point.location}: {exc.__class__.__name__}: {exc}"
    if report.error:
        return
    known = {o.key: o for o in CollectedObject.objects.filter(point=point).select_related("import_run")}
    settle = settings.OPENCHARGEBACK_COLLECT_SETTLE_SECONDS
    for remote in files:
        earlier = known.get(remote.key)
        period = locations.period_of(remote.key) or ""
        line = CollectedFile(
            key=remote.key, action="", version=remote.version, period=period, size_bytes=remote.size
        )
        report.files.append(line)
        if earlier is not None and earlier.version == remote.version:
            line.action = (
                Action.UNCHANGED
                if earlier.status == CollectedObject.Status.IMPORTED
                else Action.FAILED_BEFORE
            )
            line.import_id = earlier.import_run_id
            line.error = earlier.error
            continue
        if (
            settle
            and point.kind == CollectionPoint.Kind.LOCAL
            and time.time() - (remote.modified or 0) < settle
        ):
            line.action = Action.WAITING
            continue
        in_force = _in_force(earlier)
        if dry_run:
            line.action = Action.WOULD_SUPERSEDE if in_force else Action.WOULD_ADD
            line.supersedes = [in_force.pk] if in_force else []
            continue
        _collect_file(point, fs, remote, earlier, in_force, line, actor)


def _in_force(earlier: CollectedObject | None) -> Import | None:
    """The key's earlier import while it is still the one in force (completed, not superseded)."""
    if earlier is None or earlier.import_run is None:
        return None
    return earlier.import_run if earlier.import_run.status == Import.Status.COMPLETED else None


def _collect_file(
    point: CollectionPoint,
    fs: Any,
    remote: locations.RemoteFile,
    earlier: CollectedObject | None,
    in_force: Import | None,
    line: CollectedFile,
    actor: Any,
) -> None:
    """Fetch one file and import it; the outcome is remembered for its key and version."""
    record: Import | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="openchargeback-collect-") as work:
            path = locations.fetch(point, fs, remote, Path(work))
            sha = sha256_of(path)
            linked = _already_imported(point, remote, sha, in_force)
            if linked is not None:
                line.action = Action.UNCHANGED if linked == in_force else Action.LINKED
                line.import_id = linked.pk
                _remember(point, remote, line, import_run=linked)
                return
            record = billing_services.import_create(
                path=path,
                source=point.source,
                actor=actor,
                actor_name=f"collect:{point.name}",
                original_name=remote.name,
                defer_hash=True,
            )
            Import.objects.filter(pk=record.pk).update(sha256=sha)
            outcome = billing_services.import_execute(
                import_id=record.pk,
                period=line.period or None,
                replaces=[in_force.pk] if in_force else [],
                local_path=None if storage.is_local(record.file.storage) else path,
            )
    except Refused as exc:
        _failed(point, remote, line, str(exc), record, in_force)
        return
    except Exception as exc:
        logger.exception("collection point %s: %s failed", point.name, remote.key)
        _failed(point, remote, line, f"internal error: {exc.__class__.__name__}: {exc}", record, in_force)
        return
    line.action = Action.SUPERSEDED if outcome.supersedes else Action.ADDED
    line.import_id = outcome.import_id
    line.supersedes = outcome.supersedes
    line.period = outcome.period
    line.charges = outcome.charges
    line.billed_total = outcome.billed_total
    _remember(point, remote, line, import_run=record)


def _already_imported(
    point: CollectionPoint, remote: locations.RemoteFile, sha: str, in_force: Import | None
) -> Import | None:
    """The completed import that already holds these bytes, when the key may take it as its own:
    its own import (a new ETag, the same bytes), or one no other collected file claims (a file
    imported by hand before the point existed, or by a run that stopped before remembering it).
    Bytes that another key imported are left to the import service, which refuses them."""
    if in_force is not None and in_force.sha256 == sha:
        return in_force
    match = (
        Import.objects.filter(sha256=sha, source=point.source, status=Import.Status.COMPLETED)
        .order_by("-id")
        .first()
    )
    if (
        match is None
        or CollectedObject.objects.filter(import_run=match).exclude(point=point, key=remote.key).exists()
    ):
        return None
    return match


def _remember(
    point: CollectionPoint,
    remote: locations.RemoteFile,
    line: CollectedFile,
    *,
    import_run: Import | None,
    status: str = CollectedObject.Status.IMPORTED,
    failed_import: Import | None = None,
) -> None:
    CollectedObject.objects.update_or_create(
        point=point,
        key=remote.key,
        defaults={
            "version": remote.version,
            "size_bytes": remote.size,
            "period": line.period,
            "status": status,
            "import_run": import_run,
            "failed_import": failed_import,
            "error": line.error if status == CollectedObject.Status.FAILED else "",
            "collected_at": timezone.now(),
        },
    )


def _failed(
    point: CollectionPoint,
    remote: locations.RemoteFile,
    line: CollectedFile,
    message: str,
    record: Import | None,
    in_force: Import | None,
) -> None:
    """Remember the failed version (so it is reported once); the key's import in force stays."""
    line.action, line.error = Action.FAILED, message
    failed = Import.objects.filter(pk=record.pk).first() if record is not None else None
    line.import_id = failed.pk if failed is not None else None
    logger.warning(
        "collection point %s: %s failed: %s",
        point.name,
        remote.key,
        message,
        extra={"event": "collection_failed", "point": point.name, "key": remote.key},
    )
    _remember(
        point, remote, line, import_run=in_force, status=CollectedObject.Status.FAILED, failed_import=failed
    )
