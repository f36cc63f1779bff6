"""Every write of the journals app: settings, custom formats, and exports (each one transaction).

An export is refused, with every reason at once, rather than written wrong: statements missing
or stale, a fund/org the split regex cannot split, an account code that fails validation or is
missing where the layout writes one, debits that do not equal credits (e.g. a source without a
credit fund/org).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from billing import selectors as billing_selectors
from billing.models import BillingPeriod
from chargeback.actors import actor_fields, actor_label
from chargeback.errors import Refused
from chargeback.logging import audit
from chargeback.settings_rows import settings_row_for_update

from . import selectors
from .entries import JournalRefused, Problem
from .format_checks import format_problems
from .formats import LayoutError, write_journal
from .models import JournalExport, JournalFormat, JournalSettings


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{name.replace('_', ' ')}: {' '.join(str(m) for m in messages)}"
            for name, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)


# --- settings and formats ---------------------------------------------------------------------


def _format_errors(fmt: JournalFormat) -> ValidationError | None:
    """Model.full_clean() with the format's own rules (`format_checks.format_problems`) in place of clean():
    the fields, then the sample journal, then uniqueness and constraints of the fields still valid."""
    errors: dict[str, Any] = {}
    try:
        fmt.clean_fields()
    except ValidationError as exc:
        errors = exc.update_error_dict(errors)
    for field_name, messages in format_problems(fmt).items():
        errors.setdefault(field_name, []).extend(messages)
    exclude = set(errors)
    for check in (fmt.validate_unique, fmt.validate_constraints):
        try:
            check(exclude=exclude)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
    return ValidationError(errors) if errors else None


@transaction.atomic
def journal_settings_update(**changes: Any) -> JournalSettings:
    """Change the journal settings; a bad regex, template or length is refused (nothing written)."""
    obj = settings_row_for_update(
        JournalSettings, selectors.journal_settings_get().pk, changes, "journal setting"
    )
    for name, value in changes.items():
        setattr(obj, name, value.strip() if isinstance(value, str) else value)
    try:
        obj.full_clean()
    except ValidationError as exc:
        raise Refused(f"journal settings refused: {_validation_message(exc)}") from None
    obj.save()
    return obj


@transaction.atomic
def journal_format_save(
    *,
    name: str,
    row_template: str,
    header_template: str = "",
    rows: str = JournalFormat.Rows.ENTRIES,
    delimiter: str = ",",
    description: str = "",
    is_active: bool = True,
    format_id: int | None = None,
) -> JournalFormat:
    """Create (format_id None) or change a custom format; it is validated by rendering a sample
    journal with awkward values (commas, quotes, formulas), and refused if that fails."""
    if format_id is None:
        fmt = JournalFormat()
    else:
        found = JournalFormat.objects.select_for_update().filter(pk=format_id).first()
        if found is None:
            raise Refused(f"no journal format #{format_id}")
        fmt = found
    fmt.name = (name or "").strip()
    fmt.description = (description or "").strip()
    fmt.rows = rows
    fmt.delimiter = delimiter
    fmt.header_template = header_template or ""
    fmt.row_template = row_template or ""
    fmt.is_active = is_active
    problems = _format_errors(fmt)
    if problems is not None:
        raise Refused(f"journal format {fmt.name!r} refused: {_validation_message(problems)}") from None
    fmt.save()
    return fmt


@transaction.atomic
def journal_format_delete(*, name: str) -> None:
    """Delete a custom format; its exports keep their files and the format's name."""
    deleted, _ = JournalFormat.objects.filter(name=name).delete()
    if not deleted:
        raise Refused(f"no custom journal format {name!r}")


# --- export -----------------------------------------------------------------------------------


def export_time() -> dt.datetime:
    """When an export is made (whole seconds: the only value allowed to differ between two exports)."""
    return timezone.now().replace(microsecond=0)


def journal_export(
    *, period: str, format: str = "gl", actor: Any = None, actor_name: str = ""
) -> JournalExport:
    """Build the journal of a period from its current statements, write it in the chosen format,
    and keep the file with its totals. Refused (JournalRefused, every reason listed) when the
    journal is not right; exporting twice gives the same bytes except a header timestamp."""
    period_obj = billing_selectors.period_get(period)
    spec = selectors.journal_format_get(format)
    fields = actor_fields(actor, actor_name)
    stored_name = ""
    try:
        with transaction.atomic():
            # The period row is the lock generate takes: no statements change under an export.
            period_obj = BillingPeriod.objects.select_for_update().get(pk=period_obj.pk)
            journal = selectors.journal_build_for(period_obj, spec)
            journal.refuse_if_problems()
            exported_at = export_time()
            with tempfile.TemporaryFile() as tmp:
                try:
                    written = write_journal(journal, spec, tmp, exported_at=exported_at)
                except LayoutError as exc:
                    raise JournalRefused(
                        period_obj.period, [Problem("format", f"format {spec.name}: {exc}")]
                    ) from None
                tmp.seek(0)
                export = JournalExport(
                    period=period_obj,
                    format_name=spec.name,
                    journal_format_id=spec.format_id,
                    sha256=written.sha256,
                    rows_sha256=written.rows_sha256,
                    size_bytes=written.size_bytes,
                    row_count=written.rows,
                    entry_count=len(journal.entries),
                    debit_total=journal.debit_total,
                    credit_total=journal.credit_total,
                    currency=journal.currency,
                    statement_count=len(journal.statements),
                    statements=sorted(s.label for s in journal.statements),
                    created_at=exported_at,
                    **fields,
                )
                name = selectors.export_filename(period_obj.period, spec.name, exported_at, spec.delimiter)
                export.file.save(name, File(tmp), save=False)
                stored_name = export.file.name or ""
                export.save()
    except BaseException:
        if stored_name:
            export.file.storage.delete(stored_name)
        raise
    audit(
        "journal_exported",
        actor=fields["actor_name"],
        export_id=export.pk,
        period=period_obj.period,
        format=spec.name,
        rows=export.row_count,
        debit=str(export.debit_total),
        credit=str(export.credit_total),
        sha256=export.sha256,
    )
    return export


def journal_export_save(*, export: JournalExport, directory: Path | None = None) -> Path:
    """A copy of a kept export in the journal folder (settings.OPENCHARGEBACK_JOURNAL_DIR), named
    journal_{period}_{YYYYmmdd_HHMMSS}.csv as the original names its journals; returns its
    absolute path. A name taken already (two exports in one second) gets a suffix."""
    folder = Path(directory or settings.OPENCHARGEBACK_JOURNAL_DIR).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = timezone.localtime(export.created_at).strftime("%Y%m%d_%H%M%S")
    suffix = Path(export.filename).suffix or ".csv"
    target = folder / f"journal_{export.period.period}_{stamp}{suffix}"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"journal_{export.period.period}_{stamp}_{n}{suffix}"
    with export.file.open("rb") as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out)
    return target


def journal_export_downloaded(*, export: JournalExport, actor: Any = None, actor_name: str = "") -> None:
    """Record a download of a kept export (audit log)."""
    from auditlog.signals import accessed

    accessed.send(sender=JournalExport, instance=export)
    audit(
        "journal_downloaded",
        actor=actor_label(actor, actor_name),
        export_id=export.pk,
        period=export.period.period,
        format=export.format_name,
        sha256=export.sha256,
    )
