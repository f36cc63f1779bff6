"""Every write of the billing domain. Each function is one transaction and enforces its rules,
so the CLI, the admin, tasks and tests get the same behaviour."""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import io
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from django.core.files import File
from django.core.files.storage import FileSystemStorage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.services import pi_users_ensure
from chargeback import storage
from chargeback.emails import is_plain_email
from chargeback.errors import Refused
from chargeback.regex import regex_problem

from . import charge_search, selectors
from .ingest import pipeline
from .ingest.errors import IngestError
from .ingest.flagging import Flag, FlagContext, summarize
from .models import (
    PI,
    AccountMapping,
    BillingPeriod,
    Charge,
    ChargeFlag,
    FlagReason,
    FlagRule,
    Import,
    PeriodTransition,
    Project,
    ReviewLog,
    Source,
)

if TYPE_CHECKING:
    from .rating.ingest import RatedImport

logger = logging.getLogger(__name__)
Status = BillingPeriod.Status


# --- actors -------------------------------------------------------------------------------


def actor_label(actor: Any = None, actor_name: str = "") -> str:
    """Who did it: the user's name, an explicit label, or `cli:<os user>`."""
    if actor is not None and getattr(actor, "is_authenticated", False):
        return actor.get_username()
    if actor_name:
        return actor_name
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _actor_fields(actor: Any, actor_name: str) -> dict[str, Any]:
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return {"actor": user, "actor_name": actor_label(actor, actor_name)}


# --- periods ------------------------------------------------------------------------------


def _record_transition(
    period: BillingPeriod, from_status: str, to_status: str, note: str, actor: Any, actor_name: str
) -> None:
    PeriodTransition.objects.create(
        period=period,
        from_status=from_status,
        to_status=to_status,
        note=note,
        **_actor_fields(actor, actor_name),
    )


def _locked_period(period: str) -> BillingPeriod:
    return BillingPeriod.objects.select_for_update().get(pk=selectors.period_get(period).pk)


@transaction.atomic
def period_open(*, period: str, actor: Any = None, actor_name: str = "", note: str = "") -> BillingPeriod:
    """Create an open period. An existing open period is returned as it is."""
    period = selectors.validate_period(period)
    existing = BillingPeriod.objects.select_for_update().filter(period=period).first()
    if existing:
        if existing.status == Status.OPEN:
            return existing
        hint = " (reopen it with a reason)" if existing.status == Status.CLOSED else ""
        raise Refused(f"period {period} is {existing.status}{hint}")
    created = BillingPeriod.objects.create(period=period, status=Status.OPEN)
    _record_transition(created, "", Status.OPEN, note or "opened", actor, actor_name)
    return created


def period_ensure_open(*, period: str, actor: Any = None, actor_name: str = "") -> BillingPeriod:
    """The period for an import: created open if new; refused when closed or finalized."""
    try:
        return period_open(period=period, actor=actor, actor_name=actor_name, note="created by import")
    except Refused:
        existing = selectors.period_get(period)
        if existing.status == Status.FINALIZED:
            raise Refused(f"period {period} is finalized: it accepts no imports") from None
        raise Refused(
            f"period {period} is closed: it accepts no imports; reopen it first "
            f"(periods reopen {period} --reason ...)"
        ) from None


@transaction.atomic
def period_close(*, period: str, actor: Any = None, actor_name: str = "", note: str = "") -> BillingPeriod:
    """Close an open period (no more imports). A closed one is returned as it is (a cron job may
    close it twice); a finalized one is refused."""
    obj = _locked_period(period)
    if obj.status == Status.CLOSED:
        return obj
    if obj.status != Status.OPEN:
        raise Refused(f"period {obj.period} is {obj.status}; only an open period can be closed")
    obj.status, obj.closed_at = Status.CLOSED, timezone.now()
    obj.save(update_fields=["status", "closed_at"])
    _record_transition(obj, Status.OPEN, Status.CLOSED, note, actor, actor_name)
    return obj


@transaction.atomic
def period_reopen(*, period: str, reason: str, actor: Any = None, actor_name: str = "") -> BillingPeriod:
    if not (reason or "").strip():
        raise Refused("a reason is required to reopen a period")
    obj = _locked_period(period)
    if obj.status != Status.CLOSED:
        raise Refused(f"period {obj.period} is {obj.status}; only a closed period can be reopened")
    obj.status, obj.closed_at = Status.OPEN, None
    obj.save(update_fields=["status", "closed_at"])
    _record_transition(obj, Status.CLOSED, Status.OPEN, reason.strip(), actor, actor_name)
    return obj


def period_finalize_problems(period: BillingPeriod) -> list[str]:
    """Why the period cannot be finalized yet (empty when it can)."""
    problems = []
    if period.status != Status.CLOSED:
        problems.append(f"period {period.period} is {period.status}; close it first")
    flagged = Charge.objects.filter(period=period, review_state=Charge.ReviewState.FLAGGED).count()
    if flagged:
        problems.append(
            f"{flagged} charge{'s' if flagged != 1 else ''} still flagged; approve or reject them"
        )
    from statements.selectors import period_statement_problems

    problems += period_statement_problems(period)
    return problems


@transaction.atomic
def period_finalize(*, period: str, actor: Any = None, actor_name: str = "", note: str = "") -> BillingPeriod:
    obj = _locked_period(period)
    if obj.status == Status.FINALIZED:
        raise Refused(f"period {obj.period} is already finalized")
    problems = period_finalize_problems(obj)
    if problems:
        raise Refused(f"period {obj.period} cannot be finalized: " + "; ".join(problems))
    obj.status, obj.finalized_at = Status.FINALIZED, timezone.now()
    obj.save(update_fields=["status", "finalized_at"])
    _record_transition(obj, Status.CLOSED, Status.FINALIZED, note, actor, actor_name)
    return obj


def _require_reviewable(period: BillingPeriod) -> None:
    if period.status == Status.FINALIZED:
        raise Refused(f"period {period.period} is finalized: no review changes")


# --- sources, PIs, projects, mappings -----------------------------------------------------


@transaction.atomic
def source_create(
    *, slug: str, display_name: str = "", filename_pattern: str = "", fund_org: str = "", account: str = ""
) -> Source:
    slug = selectors.source_slug(slug)
    if Source.objects.filter(slug=slug).exists():
        raise Refused(f"source {slug} already exists")
    return Source.objects.create(
        slug=slug,
        display_name=display_name or selectors.source_display_name(slug),
        filename_pattern=filename_pattern or f"{slug}_*",
        fund_org=fund_org,
        account=account,
    )


@transaction.atomic
def source_ensure(*, name: str) -> tuple[Source, bool]:
    """The source named (case-insensitive), created on first sight as the original does; returns
    it and whether it was created."""
    slug = selectors.source_slug(name)
    source, created = Source.objects.get_or_create(
        slug=slug,
        defaults={"display_name": selectors.source_display_name(slug), "filename_pattern": f"{slug}_*"},
    )
    return source, created


@transaction.atomic
def source_update(*, slug: str, **changes: str) -> Source:
    source = selectors.source_get(slug)
    allowed = {"display_name", "filename_pattern", "fund_org", "account"}
    unknown = set(changes) - allowed
    if unknown:
        raise Refused(f"cannot change {', '.join(sorted(unknown))} of a source")
    for name, value in changes.items():
        if value is not None:
            setattr(source, name, value)
    source.save()
    return source


def _pi_get_or_create(email: str) -> PI:
    email = (email or "").strip().lower()
    if not is_plain_email(email):
        raise Refused(f"invalid PI email {email!r}")
    pi, _ = PI.objects.get_or_create(email=email)
    return pi


@transaction.atomic
def account_mapping_set(
    *,
    sub_account_id: str,
    project_id: str,
    pi_email: str,
    fund_org: str = "",
    source: str | None = None,
    note: str = "",
) -> AccountMapping:
    """Map a provider sub-account to a project (created under the PI when new)."""
    sub_account_id = (sub_account_id or "").strip()
    project_id = (project_id or "").strip()
    if not sub_account_id:
        raise Refused("a sub-account id is required")
    if not project_id:
        raise Refused("a project id is required")
    pi = _pi_get_or_create(pi_email)
    project = Project.objects.filter(project_id=project_id).select_related("pi").first()
    if project is None:
        project = Project.objects.create(project_id=project_id, pi=pi, fund_org=fund_org)
    elif project.pi_id != pi.pk:
        raise Refused(f"project {project_id} belongs to {project.pi.email}, not {pi.email}")
    source_obj = selectors.source_get(source) if source else None
    mapping, _ = AccountMapping.objects.update_or_create(
        sub_account_id=sub_account_id,
        source=source_obj,
        defaults={"project": project, "fund_org": fund_org, "note": note},
    )
    return mapping


# --- imports ------------------------------------------------------------------------------


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
    sha256 = _BackgroundSha256(path)
    record = import_create(
        path=path,
        source=source_obj,
        replace=replace,
        force=force,
        actor=actor,
        actor_name=actor_name,
        original_name=name,
        defer_hash=True,
    )
    outcome = import_execute(
        import_id=record.pk,
        period=period,
        force=force,
        pending_sha256=sha256,
        rated=rated,
        replaces=replaces,
        # On object storage the file just stored is read here rather than downloaded again.
        local_path=None if storage.is_local(record.file.storage) else path,
    )
    outcome.source_created = created
    return outcome


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


class _HashingReader(io.RawIOBase):
    """Hashes a file while Django's storage copies it, so large files are read once for both."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self.digest.update(data)
        return data


class _BackgroundSha256:
    """sha256 of a file computed on another core while the import parses it (hashlib and file reads
    release the GIL); `result()` waits for it."""

    def __init__(self, path: Path) -> None:
        self._digest = ""
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="import-sha256", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._digest = pipeline.sha256_of(path)
        except BaseException as exc:  # re-raised by result() in the caller's thread
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest


class _DuplicateImport(AlreadyImported):
    """The bytes were imported before; the new Import record is removed, not kept as failed."""


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
) -> Import:
    """Record a pending import with a stored copy of the file; refuses bytes imported before.

    With `defer_hash` (the CLI, which hashes in the background) the sha256 is left empty here and
    set, and checked against earlier imports, by import_execute before anything is written.
    """
    record = Import(
        source=source,
        original_name=original_name or path.name,
        size_bytes=path.stat().st_size,
        replace=replace,
        status=Import.Status.PENDING,
        **_actor_fields(actor, actor_name),
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
        shutil.copyfile(path, destination)
        record.file.name = name
    else:
        with open(path, "rb") as fh:
            reader = _HashingReader(fh)
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


def _runner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def imports_fail_interrupted(*, older_than: dt.timedelta = dt.timedelta(hours=24)) -> int:
    """Mark imports whose process died mid-run (killed, machine restarted) as failed.

    Their transaction never committed, so they wrote nothing; only the Import row still said
    "running". A run of this host whose process is gone is interrupted; a run of another host is
    only presumed dead after `older_than`. Returns how many were marked.
    """
    host = socket.gethostname()
    stale = []
    for pk, runner, started_at in Import.objects.filter(status=Import.Status.RUNNING).values_list(
        "pk", "runner", "started_at"
    ):
        runner_host, _, pid = runner.rpartition(":")
        if runner_host == host and pid.isdigit():
            dead = not _process_alive(int(pid))
        else:
            dead = started_at is None or started_at < timezone.now() - older_than
        if dead:
            stale.append(pk)
    if stale:
        Import.objects.filter(pk__in=stale, status=Import.Status.RUNNING).update(
            status=Import.Status.FAILED,
            error_message="interrupted: the process running this import stopped before it finished; "
            "nothing was written",
            finished_at=timezone.now(),
        )
    return len(stale)


def _mark_failed(record: Import, message: str, errors: list[dict]) -> None:
    message = message.replace("\x00", "\u2400")  # a parser's message may quote a row with a NUL in it
    Import.objects.filter(pk=record.pk).update(
        status=Import.Status.FAILED, error_message=message, errors=errors, finished_at=timezone.now()
    )


def _run_import(
    record: Import,
    period: str | None,
    outcome: ImportOutcome,
    path: Path | None = None,
    pending_sha256: Any = None,
    force: bool = False,
    rated: RatedImport | None = None,
    replaces: Iterable[int] | None = None,
) -> None:
    """The work of an import, inside the caller's transaction."""
    from .rating import ingest as rating_ingest

    started = time.perf_counter()
    settings = selectors.billing_settings_get()
    with _file_to_read(record, path) as local_path:
        parsed = pipeline.parse_file(local_path, settings, record.original_name)
    outcome.timings["parse"] = time.perf_counter() - started
    if pending_sha256 is not None:
        # Hashed on the other core during the parse; checked before anything is written.
        record.sha256 = pending_sha256.result()
        # A duplicate found this late removes the new Import instead of leaving it failed.
        _refuse_duplicate(record.sha256, force, exclude=record.pk, error=_DuplicateImport)
    parts = pipeline.plan_periods(parsed, period)
    periods = {part.period: _period_for_import(part.period, record) for part in parts}
    # One Import per period: this one for the first part, one more for each other period.
    records = [record] + [_import_part_of(record) for _part in parts[1:]]
    # Rated usage replaces exactly the imports of its earlier rating, a collected object those of
    # its earlier versions; any other file follows its name (or `replace`).
    only = list(rated.replaces) if rated is not None else (list(replaces) if replaces is not None else None)
    replaced = _imports_replaced(record, [r.pk for r in records], list(periods.values()), only=only)
    outcome.mode = "replaced" if record.replace and replaced else "superseded" if replaced else "added"
    carried: dict[int, dict[tuple, list[pipeline.CarriedDecision]]] = {}
    if replaced:
        for period_id, *row in Charge.objects.filter(
            import_run__in=replaced,
            review_state__in=[Charge.ReviewState.APPROVED, Charge.ReviewState.REJECTED],
        ).values_list(
            "period_id", *pipeline.IDENTITY_FIELDS, "review_state", "billed_cost", "list_cost", "id"
        ):
            carried.setdefault(period_id, {}).setdefault(tuple(row[:-4]), []).append(
                pipeline.CarriedDecision(*row[-4:])
            )
        _delete_charges_of(replaced)

    context = FlagContext.load(settings)
    resolved = pipeline.resolve_attributions(parsed, record.source, context)
    outcome.timings["attribute"] = time.perf_counter() - started - sum(outcome.timings.values())
    warnings = []
    if parsed.stats.rounded_values:
        warnings.append(
            f"{parsed.stats.rounded_values} amounts had more than 10 decimal places and were rounded half-even"
        )
    outcome.warnings = list(warnings)
    now = timezone.now()
    for part, part_record in zip(parts, records, strict=True):
        period_obj = periods[part.period]
        # Cloud costs get the subsidies in effect in their own period (rated usage has its own).
        subsidised = (
            None
            if rated is not None
            else rating_ingest.subsidies_apply_to_parsed(
                parsed, resolved, source=record.source, period=part.period, row_periods=part.row_periods
            )
        )
        written = pipeline.build_and_write(
            parsed,
            part,
            period_id=period_obj.pk,
            source=record.source,
            import_id=part_record.pk,
            resolved=resolved,
            context=context,
            carried=carried.get(period_obj.pk, {}),
        )
        pipeline.write_flags(part_record.pk, written.flags)
        part_warnings = list(warnings)
        if rated is not None:
            rated.after_write(record=part_record, period=period_obj)
        elif subsidised is not None:
            subsidised.write(part_record.pk)
            part_warnings += subsidised.warnings(settings.currency_code)
            outcome.warnings += part_warnings[len(warnings) :]
        decisions = _log_carried_decisions(part_record, period_obj, written.carried, replaced)
        superseded_here = [r for r in replaced if r.period_id == period_obj.pk]
        part_record.period = period_obj
        part_record.status = Import.Status.COMPLETED
        part_record.supersedes = superseded_here[-1] if superseded_here else None
        part_record.rows_read = part.rows
        part_record.charges_created = written.charges
        part_record.charges_flagged = written.flagged
        part_record.decisions_carried = decisions
        part_record.list_total = written.list_total
        part_record.billed_total = written.billed_total
        part_record.warnings = part_warnings
        part_record.errors = []
        part_record.error_message = ""
        part_record.finished_at = now
        part_record.save()
        outcome.parts.append(
            ImportPart(
                period=part.period,
                import_id=part_record.pk,
                rows=part.rows,
                charges=written.charges,
                flagged=written.flagged,
                list_total=written.list_total,
                billed_total=written.billed_total,
                mismatched_rows={month: parsed.stats.periods[month] for month in part.mismatched},
            )
        )
        outcome.decisions_carried += decisions
    outcome.timings["write"] = time.perf_counter() - started - sum(outcome.timings.values())
    pi_users_ensure(pi_ids=resolved.pi_ids())  # inactive portal users of new PIs

    # No cost is ever dropped: the charges must add up to the file, exactly.
    written_billed = sum((p.billed_total for p in outcome.parts), Decimal(0))
    if written_billed != parsed.stats.billed_total:
        raise IngestError(
            f"internal check failed: charges sum to {written_billed}, the file to {parsed.stats.billed_total}"
        )
    Import.objects.filter(pk__in=[r.pk for r in replaced]).update(status=Import.Status.SUPERSEDED)

    outcome.period = parts[0].period
    outcome.rows = parsed.stats.rows
    outcome.charges = sum(p.charges for p in outcome.parts)
    outcome.flagged = sum(p.flagged for p in outcome.parts)
    outcome.list_total = sum((p.list_total for p in outcome.parts), Decimal(0))
    outcome.billed_total = written_billed
    outcome.supersedes = [r.pk for r in replaced]
    outcome.seconds = time.perf_counter() - started


def _period_for_import(period: str, record: Import) -> BillingPeriod:
    """The period, created open if new, locked for the import; refused unless open."""
    period_obj = period_ensure_open(period=period, actor=record.actor, actor_name=record.actor_name)
    period_obj = BillingPeriod.objects.select_for_update().get(pk=period_obj.pk)
    if period_obj.status != Status.OPEN:
        raise Refused(f"period {period} is {period_obj.status}: it accepts no imports")
    return period_obj


def _import_part_of(record: Import) -> Import:
    """Another Import of the same file, for one more of its billing periods (same stored copy)."""
    return Import.objects.create(
        source=record.source,
        original_name=record.original_name,
        file=record.file.name,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        status=Import.Status.RUNNING,
        replace=record.replace,
        part_of=record,
        actor=record.actor,
        actor_name=record.actor_name,
        started_at=timezone.now(),
        runner=_runner(),
    )


def _imports_replaced(
    record: Import, own_ids: list[int], periods: list[BillingPeriod], *, only: list[int] | None = None
) -> list[Import]:
    """The earlier imports this one supersedes: `only` those when given, else those of the same
    file name in its periods, or with `replace` all of the source's there. A file is superseded
    whole: the parts it has in other periods go with it, so those periods must be open too."""
    if only is not None:
        earlier = Import.objects.filter(pk__in=only, status=Import.Status.COMPLETED)
    else:
        earlier = Import.objects.filter(
            source=record.source, period__in=periods, status=Import.Status.COMPLETED
        )
        if not record.replace:
            earlier = earlier.filter(original_name=record.original_name)
    earlier = earlier.exclude(pk__in=own_ids)
    groups = {i.part_of_id or i.pk for i in earlier}
    if not groups:
        return []
    replaced = list(
        Import.objects.filter(Q(pk__in=groups) | Q(part_of__in=groups), status=Import.Status.COMPLETED)
        .exclude(pk__in=own_ids)
        .select_related("period")
        .order_by("id")
    )
    locked = {p.pk for p in periods}
    for other in replaced:
        if other.period_id is not None and other.period_id not in locked:
            status = BillingPeriod.objects.select_for_update().get(pk=other.period_id).status
            if status != Status.OPEN:
                raise Refused(
                    f"import #{other.pk} ({other.original_name}) also has rows in period {other.period}, "
                    f"which is {status}: reopen it to supersede that file"
                )
            locked.add(other.period_id)
    return replaced


@contextlib.contextmanager
def _file_to_read(record: Import, path: Path | None) -> Iterator[Path]:
    """The file the import reads: the path given, else the stored copy (downloaded from object storage)."""
    if path is not None:
        yield path
        return
    if not record.file:
        raise IngestError(f"import #{record.pk} has no stored file")
    with storage.local_copy(record.file) as local_path:
        yield local_path


def _delete_charges_of(imports: list[Import]) -> None:
    """Remove the charges of superseded imports; their review history stays (charge set to null)."""
    from .rating.ingest import charge_details_delete

    charges = Charge.objects.filter(import_run__in=imports)
    charge_details_delete(charges)
    ReviewLog.objects.filter(charge__in=charges).update(charge=None)
    ChargeFlag.objects.filter(charge__in=charges)._raw_delete(ChargeFlag.objects.db)  # type: ignore[attr-defined]
    with charge_search.bulk_writing(deleting=charges):  # the search index lets them go in one statement
        charges._raw_delete(charges.db)  # type: ignore[attr-defined]


def _log_carried_decisions(
    record: Import, period: BillingPeriod, carried: dict[tuple, int], replaced: list[Import]
) -> int:
    """One ReviewLog entry per decision carried over to an unchanged charge of the new import."""
    if not carried:
        return 0
    batch = uuid.uuid4()
    decided = {
        charge_id: (state, billed, "flagged" if summary else "ok")
        for charge_id, state, billed, summary in Charge.objects.filter(
            import_run=record, review_state__in=["approved", "rejected"]
        ).values_list("id", "review_state", "billed_cost", "flag_summary")
    }
    logs = [
        ReviewLog(
            charge_id=charge_id,
            period=period,
            action=ReviewLog.Action.CARRY_OVER,
            from_state=decided[charge_id][2],
            to_state=decided[charge_id][0],
            billed_cost=decided[charge_id][1],
            note=f"carried over from import #{replaced[-1].pk} (charge #{carried[ident]})",
            actor=record.actor,
            actor_name=record.actor_name or "import",
            batch=batch,
        )
        for charge_id, ident in pipeline.charge_identities(record.pk, id__in=list(decided))
        if ident in carried
    ]
    ReviewLog.objects.bulk_create(logs, batch_size=5000)
    return len(logs)


# --- review -------------------------------------------------------------------------------


@dataclass
class ReviewOutcome:
    action: str
    count: int
    billed_total: Decimal
    batch: uuid.UUID | None
    skipped: int = 0


def _review(
    *,
    charge_ids: Iterable[int] | None,
    period: str | None,
    action: str,
    to_state: str,
    note: str,
    actor: Any,
    actor_name: str,
    only_flagged: bool,
) -> ReviewOutcome:
    charges = Charge.objects.all()
    if charge_ids is not None:
        ids = sorted({int(i) for i in charge_ids})
        if not ids:
            raise Refused("no charges given")
        found = set(Charge.objects.filter(id__in=ids).values_list("id", flat=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise Refused(f"no charge with id {', '.join(map(str, missing[:10]))}")
        charges = charges.filter(id__in=ids)
    if period:
        charges = charges.filter(period=selectors.period_get(period))
    if charge_ids is None and not period:
        raise Refused("give charge ids or a period")
    finalized = (
        BillingPeriod.objects.filter(charges__in=charges, status=Status.FINALIZED)
        .values_list("period", flat=True)
        .distinct()
    )
    if finalized:
        raise Refused(f"period {', '.join(finalized)} is finalized: no review changes")
    if only_flagged:
        charges = charges.filter(review_state=Charge.ReviewState.FLAGGED)
    rows = list(
        charges.exclude(review_state=to_state).values_list("id", "review_state", "billed_cost", "period_id")
    )
    skipped = (len(ids) - len(rows)) if charge_ids is not None else 0
    batch = uuid.uuid4()
    fields = _actor_fields(actor, actor_name)
    ReviewLog.objects.bulk_create(
        [
            ReviewLog(
                charge_id=cid,
                period_id=pid,
                action=action,
                from_state=state,
                to_state=to_state,
                billed_cost=billed,
                note=note,
                batch=batch,
                **fields,
            )
            for cid, state, billed, pid in rows
        ],
        batch_size=5000,
    )
    changed_ids = [r[0] for r in rows]
    for start in range(0, len(changed_ids), 5000):
        Charge.objects.filter(id__in=changed_ids[start : start + 5000]).update(review_state=to_state)
    return ReviewOutcome(
        action=action,
        count=len(rows),
        billed_total=sum((r[2] for r in rows), Decimal(0)),
        batch=batch if rows else None,
        skipped=skipped,
    )


@transaction.atomic
def charges_approve(
    *,
    charge_ids: Iterable[int] | None = None,
    period: str | None = None,
    note: str = "",
    actor: Any = None,
    actor_name: str = "",
) -> ReviewOutcome:
    """Approve charges (by id, or every flagged charge of a period): they bill despite their flags."""
    return _review(
        charge_ids=charge_ids,
        period=period,
        action=ReviewLog.Action.APPROVE,
        to_state=Charge.ReviewState.APPROVED,
        note=note.strip(),
        actor=actor,
        actor_name=actor_name,
        only_flagged=charge_ids is None,
    )


@transaction.atomic
def charges_reject(
    *,
    charge_ids: Iterable[int] | None = None,
    period: str | None = None,
    note: str,
    actor: Any = None,
    actor_name: str = "",
) -> ReviewOutcome:
    """Reject charges: they never bill. A note saying why is required."""
    if not (note or "").strip():
        raise Refused("a note is required to reject charges")
    return _review(
        charge_ids=charge_ids,
        period=period,
        action=ReviewLog.Action.REJECT,
        to_state=Charge.ReviewState.REJECTED,
        note=note.strip(),
        actor=actor,
        actor_name=actor_name,
        only_flagged=charge_ids is None,
    )


@transaction.atomic
def charge_correct_attribution(
    *,
    charge_id: int,
    pi_email: str,
    project_id: str,
    fund_org: str = "",
    note: str = "",
    actor: Any = None,
    actor_name: str = "",
) -> Charge:
    """Correct who pays for a charge; the rules run again on the corrected values."""
    charge = Charge.objects.select_for_update().select_related("period", "source").get(pk=charge_id)
    _require_reviewable(charge.period)
    pi = _pi_get_or_create(pi_email)
    project_id = (project_id or "").strip()
    project = (
        Project.objects.filter(project_id=project_id).select_related("pi").first() if project_id else None
    )
    if project_id and project is None:
        project = Project.objects.create(project_id=project_id, pi=pi, fund_org=fund_org.strip())
    before = {"pi_email": charge.pi_email, "project_code": charge.project_code, "fund_org": charge.fund_org}
    charge.pi, charge.pi_email = pi, pi.email
    charge.project, charge.project_code = project, project_id
    charge.fund_org = fund_org.strip() or (project.fund_org if project else "")
    charge.attribution_source = "manual"
    old_state = charge.review_state
    flags = _flags_for_charge(charge, FlagContext.load(selectors.billing_settings_get()))
    ChargeFlag.objects.filter(charge=charge).delete()
    ChargeFlag.objects.bulk_create(
        [ChargeFlag(charge=charge, reason=f.reason, rule_id=f.rule_id, detail=f.detail[:300]) for f in flags]
    )
    charge.flag_summary = summarize(flags)
    if old_state in (Charge.ReviewState.OK, Charge.ReviewState.FLAGGED):
        charge.review_state = Charge.ReviewState.FLAGGED if flags else Charge.ReviewState.OK
    charge.save()
    ReviewLog.objects.create(
        charge=charge,
        period=charge.period,
        action=ReviewLog.Action.CORRECT,
        from_state=old_state,
        to_state=charge.review_state,
        billed_cost=charge.billed_cost,
        note=note,
        details={
            "before": before,
            "after": {"pi_email": charge.pi_email, "project_code": project_id, "fund_org": charge.fund_org},
        },
        **_actor_fields(actor, actor_name),
    )
    return charge


def _rule_values(charge: Charge) -> dict[str, str]:
    return {name: getattr(charge, name) or "" for name, _ in FlagRule.FIELD_CHOICES}


# Flags about what the file said, not about who pays now: a row of another billing period stays
# flagged so whatever happens; tags that named a payer field twice or an invalid PI email stay
# until a reviewer corrects the charge's attribution.
FILE_FLAG_REASONS = (FlagReason.PERIOD_MISMATCH, FlagReason.AMBIGUOUS_TAGS, FlagReason.INVALID_PI_EMAIL)


def _file_flags(charge: Charge) -> list[Flag]:
    reasons = (FlagReason.PERIOD_MISMATCH,) if charge.attribution_source == "manual" else FILE_FLAG_REASONS
    summary = charge.flag_summary or ""
    if len(summary) < 500 and not any(str(reason) in summary for reason in reasons):
        return []  # the summary names every reason unless it was cut short
    return [Flag(f.reason, f.detail) for f in charge.flags.filter(reason__in=reasons).order_by("id")]


def _flags_for_charge(charge: Charge, context: FlagContext, rule_flags: list[Flag] | None = None) -> list:
    """Every flag of a charge; `rule_flags` when the rules already ran over many charges at once."""
    if rule_flags is None:
        rule_flags = context.rule_flags(_rule_values(charge), charge.source_id)
    from_file = _file_flags(charge)
    if charge.attribution_source == "ambiguous":
        # Its tags named a payer field twice: it stays so until a reviewer corrects it.
        if not any(f.reason == FlagReason.AMBIGUOUS_TAGS for f in from_file):
            from_file.append(Flag(FlagReason.AMBIGUOUS_TAGS, "ambiguous tags"))
        return from_file + rule_flags
    owner = charge.project.pi.email if charge.project_id and charge.project else None
    flags = context.attribution_flags(
        has_pi=charge.pi_id is not None,
        project_code=charge.project_code,
        fund_org=charge.fund_org,
        project_owner_email=owner,
        pi_email=charge.pi_email,
    )
    return from_file + flags + rule_flags


@transaction.atomic
def period_reevaluate_flags(*, period: str, actor: Any = None, actor_name: str = "") -> int:
    """Run the rules again over the period's undecided (ok/flagged) charges; returns how many changed state."""
    period_obj = selectors.period_get(period)
    _require_reviewable(period_obj)
    context = FlagContext.load(selectors.billing_settings_get())
    changed = 0
    undecided = Charge.objects.filter(
        period=period_obj, review_state__in=[Charge.ReviewState.OK, Charge.ReviewState.FLAGGED]
    ).select_related("project__pi")
    batch = uuid.uuid4()
    fields = _actor_fields(actor, actor_name)
    for chunk in _chunks(undecided.iterator(chunk_size=5000), 5000):
        # The rules run over the whole chunk at once (RE2, column-wise).
        rule_values = [_rule_values(charge) for charge in chunk]
        rule_flags = context.rule_flags_many(
            {name: [v[name] for v in rule_values] for name, _ in FlagRule.FIELD_CHOICES},
            [charge.source_id for charge in chunk],
        )
        for charge, charge_rule_flags in zip(chunk, rule_flags, strict=True):
            flags = _flags_for_charge(charge, context, charge_rule_flags)
            changed += _reevaluate_one(charge, flags, period_obj, batch, fields)
    return changed


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _reevaluate_one(
    charge: Charge, flags: list, period_obj: BillingPeriod, batch: uuid.UUID, fields: dict[str, Any]
) -> int:
    """Record a charge's new flags; returns 1 when its state changed."""
    summary = summarize(flags)
    state = Charge.ReviewState.FLAGGED if flags else Charge.ReviewState.OK
    if summary == charge.flag_summary and state == charge.review_state:
        return 0
    ChargeFlag.objects.filter(charge=charge).delete()
    ChargeFlag.objects.bulk_create(
        [ChargeFlag(charge=charge, reason=f.reason, rule_id=f.rule_id, detail=f.detail[:300]) for f in flags]
    )
    Charge.objects.filter(pk=charge.pk).update(flag_summary=summary, review_state=state)
    if state == charge.review_state:
        return 0
    ReviewLog.objects.create(
        charge=charge,
        period=period_obj,
        action=ReviewLog.Action.REEVALUATE,
        from_state=charge.review_state,
        to_state=state,
        billed_cost=charge.billed_cost,
        note=summary,
        batch=batch,
        **fields,
    )
    return 1


@transaction.atomic
def flag_rule_save(
    *,
    name: str,
    pattern: str,
    fields: list[str],
    mode: str = FlagRule.Mode.FLAG_IF_MATCH,
    description: str = "",
    source: str | None = None,
    is_active: bool = True,
    rule_id: int | None = None,
) -> FlagRule:
    """Create or update a flag rule; an invalid regex or unknown field is refused with the reason."""
    problem = regex_problem(pattern)
    if problem:
        raise Refused(f"pattern {pattern!r}: {problem}")
    known = {name for name, _ in FlagRule.FIELD_CHOICES}
    unknown = [f for f in fields if f not in known]
    if not fields or unknown:
        raise Refused(
            f"unknown field(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(sorted(known))}"
        )
    values = {
        "name": name.strip(),
        "pattern": pattern,
        "fields": list(fields),
        "mode": mode,
        "description": description,
        "is_active": is_active,
        "source": selectors.source_get(source) if source else None,
    }
    try:
        if rule_id:
            FlagRule.objects.filter(pk=rule_id).update(**values)
            return FlagRule.objects.get(pk=rule_id)
        return FlagRule.objects.create(**values)
    except IntegrityError:
        raise Refused(f"a flag rule named {name!r} already exists") from None


# --- for the admin: decisions on many charges, settings, reference data --------------------

REVIEW_CHUNK = 10_000


@transaction.atomic
def charges_review(
    *,
    action: str,
    charge_ids: Iterable[int],
    note: str = "",
    actor: Any = None,
    actor_name: str = "",
) -> ReviewOutcome:
    """Approve or reject any number of charges in one transaction: charges_approve/charges_reject
    over chunks of ids small enough for every database's parameter limit (same rules, same log)."""
    if action not in (ReviewLog.Action.APPROVE, ReviewLog.Action.REJECT):
        raise Refused(f"unknown review action {action!r}: approve or reject")
    if action == ReviewLog.Action.REJECT and not (note or "").strip():
        raise Refused("a note is required to reject charges")
    ids = sorted({int(i) for i in charge_ids})
    if not ids:
        raise Refused("no charges given")
    total = ReviewOutcome(action=action, count=0, billed_total=Decimal(0), batch=None)
    for start in range(0, len(ids), REVIEW_CHUNK):
        chunk = ids[start : start + REVIEW_CHUNK]
        if action == ReviewLog.Action.APPROVE:
            outcome = charges_approve(charge_ids=chunk, note=note, actor=actor, actor_name=actor_name)
        else:
            outcome = charges_reject(charge_ids=chunk, note=note, actor=actor, actor_name=actor_name)
        total.count += outcome.count
        total.billed_total += outcome.billed_total
        total.skipped += outcome.skipped
        total.batch = total.batch or outcome.batch
    return total


@transaction.atomic
def billing_settings_update(**changes: Any) -> Any:
    """Change the installation's billing settings; a bad currency code or regex is refused."""
    from .models import BillingSettings

    obj = BillingSettings.objects.select_for_update().get(pk=selectors.billing_settings_get().pk)
    editable = {f.name for f in BillingSettings._meta.concrete_fields} - {"id", "updated_at"}
    unknown = set(changes) - editable
    if unknown:
        raise Refused(f"unknown setting(s): {', '.join(sorted(unknown))}")
    if "currency_code" in changes:
        code = (changes["currency_code"] or "").strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise Refused(
                f"invalid currency code {changes['currency_code']!r}: use an ISO 4217 code such as USD"
            )
        changes["currency_code"] = code
    if changes.get("fund_org_regex"):
        problem = regex_problem(changes["fund_org_regex"])
        if problem:
            raise Refused(f"fund/org regex {changes['fund_org_regex']!r}: {problem}")
    for key in ("tag_pi_email", "tag_project_id"):
        if key in changes and not (changes[key] or "").strip():
            raise Refused(f"the {key.removeprefix('tag_').replace('_', ' ')} tag key cannot be empty")
    for name, value in changes.items():
        setattr(obj, name, value.strip() if isinstance(value, str) else value)
    obj.save()
    return obj


@transaction.atomic
def pi_update(*, email: str, name: str | None = None, department: str | None = None) -> PI:
    """Edit a PI's name or department (the email identifies them and stays)."""
    pi = PI.objects.select_for_update().filter(email=(email or "").strip().lower()).first()
    if pi is None:
        raise Refused(f"no PI with email {email}")
    if name is not None:
        pi.name = name.strip()
    if department is not None:
        pi.department = department.strip()
    pi.save()
    return pi


PROJECT_EDITABLE = (
    "name",
    "fund_org",
    "cost_center",
    "reference_1",
    "reference_2",
    "gl_account",
    "is_active",
)


@transaction.atomic
def project_update(*, project_id: str, **changes: Any) -> Project:
    """Edit a project's details. Charges keep the attribution they were imported or corrected with."""
    project = Project.objects.select_for_update().filter(project_id=(project_id or "").strip()).first()
    if project is None:
        raise Refused(f"no project {project_id}")
    unknown = set(changes) - set(PROJECT_EDITABLE)
    if unknown:
        raise Refused(f"cannot change {', '.join(sorted(unknown))} of a project")
    for name, value in changes.items():
        setattr(project, name, value.strip() if isinstance(value, str) else value)
    project.save()
    return project


@transaction.atomic
def account_mapping_delete(*, mapping_id: int) -> None:
    """Remove a sub-account mapping; charges already imported keep their attribution."""
    deleted, _ = AccountMapping.objects.filter(pk=mapping_id).delete()
    if not deleted:
        raise Refused(f"no account mapping #{mapping_id}")
