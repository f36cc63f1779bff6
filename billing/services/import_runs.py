"""One import run: interrupted runs, the parts per period, superseded imports and carried decisions."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db.models import Q
from django.utils import timezone

from chargeback import storage
from chargeback.errors import Refused

from .. import charge_search, selectors
from ..ingest import pipeline
from ..ingest.errors import IngestError
from ..ingest.flagging import FlagContext
from ..models import (
    BillingPeriod,
    Charge,
    ChargeFlag,
    Import,
    ReviewLog,
)

if TYPE_CHECKING:
    from ..rating.ingest import RatedImport
from ._common import Status
from .import_outcomes import ImportOutcome, ImportPart, _DuplicateImport, _refuse_duplicate
from .periods import period_ensure_open
from .users import pi_users_ensure


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
    from ..rating import ingest as rating_ingest

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
    from ..rating.ingest import charge_details_delete

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
