"""What an import reports (ImportOutcome, ImportPart) and how the same bytes twice are found (AlreadyImported)."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from chargeback.errors import Refused

from .. import selectors
from ..ingest import pipeline
from ..models import (
    Import,
)


@dataclass
class ImportPart:
    """The charges an import wrote into one billing period (a file spanning several periods has
    one part, and one Import, per period)."""

    period: str
    import_id: int | None
    rows: int
    charges: int
    flagged: int
    list_total: Decimal
    billed_total: Decimal
    mismatched_rows: dict[str, int] = field(default_factory=dict)  # row month -> rows kept here, flagged


@dataclass
class ImportOutcome:
    """What an import did, or with dry_run what it would do. `period`, `import_id` and the totals
    are those of the whole file; `parts` has one entry per billing period it went to. `mode` says
    how it met earlier imports of its source and period(s): added (none superseded), superseded
    (an earlier import of the same file name) or replaced (every earlier import, --replace)."""

    file_name: str
    source: str
    period: str = ""
    mode: str = ""
    parts: list[ImportPart] = field(default_factory=list)
    dry_run: bool = False
    import_id: int | None = None
    status: str = ""
    rows: int = 0
    charges: int = 0
    flagged: int = 0
    list_total: Decimal = Decimal(0)
    billed_total: Decimal = Decimal(0)
    supersedes: list[int] = field(default_factory=list)
    decisions_carried: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    source_created: bool = False  # the source was new: created on first sight (or would be, dry run)
    source_name: str = ""


class AlreadyImported(Refused):
    """The same bytes were imported before and are still current: nothing to do (the CLI reports
    the file as skipped, so that a cron job run twice succeeds)."""

    def __init__(self, message: str, import_id: int) -> None:
        super().__init__(message)
        self.import_id = import_id


def _refuse_duplicate(
    sha: str, force: bool, *, exclude: int | None = None, error: type[AlreadyImported] = AlreadyImported
) -> None:
    """Refuse bytes already imported (completed), unless forced; `exclude` is the import checking."""
    duplicates = Import.objects.filter(sha256=sha, status=Import.Status.COMPLETED)
    if exclude is not None:
        duplicates = duplicates.exclude(pk=exclude)
    duplicate = duplicates.select_related("source", "period").order_by("-id").first()
    if duplicate and not force:
        first_id = duplicate.part_of_id or duplicate.pk  # a file split by period: name its first import
        periods = ", ".join(str(i.period) for i in selectors.imports_of_same_file(duplicate))
        raise error(
            f"already imported as #{first_id} ({duplicate.original_name}, {duplicate.source.slug} "
            f"{periods}); use --force to import it again",
            first_id,
        )


class _BackgroundStore:
    """The sha256 of a file, and its stored copy, made on another core while the import parses it
    (hashlib and file I/O release the GIL); `result()` waits for the hash.

    `store_to(destination)` writes the import's stored copy in the same pass (a data folder on this
    host), so copying no longer stands before the parse: the parse reads the original
    while the copy is made, and the copy is what is hashed. The copy is written under a temporary
    name and renamed when whole, so an interrupted import never leaves a truncated stored file
    that a later retry would read. `result()` also refuses an original that changed while it was
    read (size or modification time): then the rows parsed might not be the bytes stored.
    """

    def __init__(self, path: Path) -> None:
        """Nothing starts yet: `store_to` or `hash_only` says which work it is."""
        self._path = path
        self._stat = _identity(path)
        self._digest = ""
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def store_to(self, destination: Path) -> None:
        """Copy the file to `destination` and hash the copied bytes, in the background."""
        assert self._thread is None, "already hashing"
        self._start(destination)

    def hash_only(self) -> None:
        """Hash the file in the background (its copy is stored elsewhere, by the caller)."""
        if self._thread is None:
            self._start(None)

    def _start(self, destination: Path | None) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(destination,), name="import-sha256", daemon=True
        )
        self._thread.start()

    def _run(self, destination: Path | None) -> None:
        try:
            if destination is None:
                self._digest = pipeline.sha256_of(self._path)
            else:
                self._digest = _copy_and_hash(self._path, destination)
        except BaseException as exc:  # re-raised by result() in the caller's thread
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def result(self) -> str:
        self.hash_only()  # a caller that stored the copy itself may not have started the hash yet
        self.wait()
        if self._error is not None:
            raise self._error
        if _identity(self._path) != self._stat:
            raise Refused(
                f"{self._path.name} changed while it was being imported; nothing was imported, "
                "import it again once it is complete"
            )
        return self._digest


# Chunks of the background copy: large enough that Python's loop costs nothing beside the copy.
COPY_CHUNK_BYTES = 4 << 20


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _copy_and_hash(source: Path, destination: Path) -> str:
    """Copy `source` to `destination` (whole or not at all) and return the sha256 of the bytes copied."""
    digest = hashlib.sha256()
    partial = destination.with_name(f".partial-{destination.name}")
    try:
        with open(source, "rb") as src, open(partial, "wb") as out:
            while chunk := src.read(COPY_CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


class _DuplicateImport(AlreadyImported):
    """The bytes were imported before; the new Import record is removed, not kept as failed."""
