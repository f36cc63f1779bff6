"""Imports of FOCUS files: `import_file` for the CLI, `import_create` + `import_execute` for queued imports."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage
from django.db import transaction
from django.utils import timezone

from chargeback.actors import actor_fields
from chargeback.errors import Refused
from chargeback.hashing import HashingReader

from .. import selectors
from ..ingest import pipeline
from ..ingest.errors import IngestError
from ..ingest.writer import sqlite_temp_storage_closed
from ..models import (
    Import,
    Source,
)

if TYPE_CHECKING:
    from ..rating.ingest import RatedImport
from ._common import logger
from .import_outcomes import (
    ImportOutcome,
    _BackgroundStore,
    _DuplicateImport,
    _refuse_duplicate,
)
from .import_runs import _mark_failed, _run_import, _runner, imports_fail_interrupted
from .reference import source_ensure


class _DryRunRollback(Exception):
    pass


def import_file(
    *,
    path: Path | str,
    source: str | Source,
    period: str | None = None,
    replace: bool = False,
    force: bool = False,
    dry_run: bool = False,
    actor: Any = None,
    actor_name: str = "",
    original_name: str | None = None,
    create_source: bool = False,
    rated: RatedImport | None = None,
    replaces: Iterable[int] | None = None,
) -> ImportOutcome:
    """Import one FOCUS file all or nothing. Raises Refused/IngestError; a real run that fails
    leaves only its failed Import record.

    - Periods: without `period` the rows go to their own billing periods (a file spanning several
      is split, one Import per period); with it every row goes there, rows of other months
      flagged "billing period mismatch".
    - Earlier imports of the source and period(s): a file of another name adds to them; the same
      file name again supersedes that file's earlier import; `replace` supersedes every one of them;
      `replaces` supersedes exactly those imports (a collection point's re-delivered object).
      The same bytes again are refused (AlreadyImported) unless `force`.
    - With `create_source` a source named for the first time is created (and kept, with the failed
      Import, if the file is refused); a dry run creates nothing.
    - `rated`: the file is rated usage (billing.rating), which says which imports it replaces and
      records how its charges were priced."""
    path = Path(path)
    replaces = list(replaces) if replaces is not None else None
    if period:
        period = selectors.validate_period(period)
    if isinstance(source, str) and create_source:
        selectors.source_slug(source)  # a bad name is refused before the file is read
    elif isinstance(source, str):
        source = selectors.source_get(source)
    if not path.is_file():
        raise IngestError(f"file not found: {path}")
    name = original_name or path.name
    if dry_run:
        return _import_dry_run(
            path, source, period, replace, force, pipeline.sha256_of(path), name, rated, replaces
        )
    source_obj, created = source_ensure(name=source) if isinstance(source, str) else (source, False)
    background = _BackgroundStore(path)
    record = import_create(
        path=path,
        source=source_obj,
        replace=replace,
        force=force,
        actor=actor,
        actor_name=actor_name,
        original_name=name,
        defer_hash=True,
        stored_by=background,
    )
    outcome = import_execute(
        import_id=record.pk,
        period=period,
        force=force,
        pending_sha256=background,
        rated=rated,
        replaces=replaces,
        # The file given is read, not its stored copy: that is being written in the background
        # (a data folder), or would be downloaded again (object storage).
        local_path=path,
    )
    outcome.source_created = created
    return outcome


def import_create(
    *,
    path: Path,
    source: Source,
    replace: bool = False,
    force: bool = False,
    actor: Any = None,
    actor_name: str = "",
    original_name: str | None = None,
    defer_hash: bool = False,
    stored_by: _BackgroundStore | None = None,
) -> Import:
    """Record a pending import with a stored copy of the file; refuses bytes imported before.

    With `defer_hash` (the CLI, which hashes in the background) the sha256 is left empty here and
    set, and checked against earlier imports, by import_execute before anything is written.
    `stored_by` (with `defer_hash`): the background hash that also writes the stored copy when the
    data folder is on this host; otherwise it only hashes, and the copy is stored here.
    """
    record = Import(
        source=source,
        original_name=original_name or path.name,
        size_bytes=path.stat().st_size,
        replace=replace,
        status=Import.Status.PENDING,
        **actor_fields(actor, actor_name),
    )
    # A folder of its own keeps the copy's name (no "_x7Gq2Lm" suffix on a name stored before), so
    # messages about the file name the file the user gave.
    unique = f"{uuid.uuid4().hex[:12]}/{Path(record.original_name).name}"
    storage = record.file.storage
    if defer_hash and isinstance(storage, FileSystemStorage):
        # The kernel copies a large file several times faster than a read/write loop in Python.
        name = storage.get_available_name(record.file.field.generate_filename(record, unique))
        destination = Path(storage.path(name))
        destination.parent.mkdir(parents=True, exist_ok=True)
        if stored_by is not None:
            stored_by.store_to(destination)
        else:
            shutil.copyfile(path, destination)
        record.file.name = name
    else:
        if stored_by is not None:
            stored_by.hash_only()  # while the copy goes to object storage
        with open(path, "rb") as fh:
            reader = HashingReader(fh)
            stream = File(reader, name=record.original_name)  # type: ignore[arg-type]
            record.file.save(unique, stream, save=False)
        if not defer_hash:
            record.sha256 = reader.digest.hexdigest()
            try:
                _refuse_duplicate(record.sha256, force)
            except Refused:
                record.file.delete(save=False)
                raise
    record.save()
    return record


def _import_dry_run(
    path: Path,
    source: Source | str,
    period: str | None,
    replace: bool,
    force: bool,
    sha: str,
    name: str,
    rated: RatedImport | None = None,
    replaces: Iterable[int] | None = None,
) -> ImportOutcome:
    _refuse_duplicate(sha, force)
    outcome = ImportOutcome(file_name=name, source="", dry_run=True)
    sqlite_temp_storage_closed()
    try:
        with transaction.atomic():
            if isinstance(source, str):
                source, outcome.source_created = source_ensure(name=source)
            outcome.source, outcome.source_name = source.slug, source.display_name
            record = Import.objects.create(
                source=source, original_name=name, sha256=sha, replace=replace, status=Import.Status.RUNNING
            )
            _run_import(record, period, outcome, path=path, rated=rated, replaces=replaces)
            raise _DryRunRollback
    except _DryRunRollback:
        pass
    outcome.import_id = None
    for part in outcome.parts:
        part.import_id = None
    outcome.status = "dry-run"
    return outcome


def import_execute(
    *,
    import_id: int,
    period: str | None = None,
    force: bool = False,
    pending_sha256: Any = None,
    rated: RatedImport | None = None,
    replaces: Iterable[int] | None = None,
    local_path: Path | None = None,
) -> ImportOutcome:
    """Run a pending import. On failure the Import is marked failed with its errors; nothing else stays.

    A duplicate found by a hash computed in the background removes the new Import altogether.
    `local_path`: a file on this host with the stored copy's bytes, read instead of the copy.
    """
    record = Import.objects.select_related("source").get(pk=import_id)
    if record.status not in (Import.Status.PENDING, Import.Status.FAILED):
        raise Refused(f"import #{record.pk} is {record.status}; it cannot run again")
    imports_fail_interrupted()
    Import.objects.filter(pk=record.pk).update(
        status=Import.Status.RUNNING, started_at=timezone.now(), runner=_runner()
    )
    outcome = ImportOutcome(
        file_name=record.original_name,
        source=record.source.slug,
        source_name=record.source.display_name,
        import_id=record.pk,
    )
    sqlite_temp_storage_closed()  # lets the import sort on disk (writer._sorting_on_disk)
    try:
        with transaction.atomic():
            if pending_sha256 is None:
                _refuse_duplicate(record.sha256, force, exclude=record.pk)
            _run_import(
                record,
                period,
                outcome,
                path=local_path,
                pending_sha256=pending_sha256,
                force=force,
                rated=rated,
                replaces=replaces,
            )
    except _DuplicateImport:
        record.file.delete(save=False)
        Import.objects.filter(pk=record.pk).delete()
        raise
    except IngestError as exc:
        _mark_failed(record, exc.message, [e.as_dict() for e in exc.errors])
        raise
    except Refused as exc:
        _mark_failed(record, str(exc), [])
        raise
    except Exception as exc:
        logger.exception("import #%s failed", record.pk)
        _mark_failed(record, f"internal error: {exc}", [])
        raise
    finally:
        if pending_sha256 is not None:
            pending_sha256.wait()
    outcome.status = Import.Status.COMPLETED
    return outcome
