"""PDFs of statements: the data a PDF shows, rendering and storing it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from billing import selectors as billing_selectors
from billing.models import BillingPeriod, BillingSettings

from ..branding import statement_branding
from ..drafts import DraftLine, StatementDraft
from ..models import Statement, StatementLine, statement_pdf_path
from ..pdf import LineData, StatementData, render_statement_pdf
from ._common import logger

# What statements_render_pdfs did with each statement (besides an error's text).
RENDERED = "rendered"
HAD_PDF = "had a PDF"
MISSING = "missing"


def statement_pdf_data(statement: Statement, org: BillingSettings | None = None) -> StatementData:
    return pdf_data(
        statement,
        number=statement.number,
        version=statement.version,
        period=statement.period,
        issued_at=statement.issued_at,
        lines=pdf_lines(statement.lines.all()),
        replaces=statement.supersedes.label if statement.supersedes_id and statement.supersedes else "",
        org=org,
    )


def pdf_lines(lines: Iterable[StatementLine | DraftLine]) -> list[LineData]:
    """The lines of a statement or of a draft, as the PDF shows them."""
    return [
        LineData(
            source_name=line.source_name,
            service_name=line.service_name,
            kind=line.kind,
            list_amount=line.list_amount,
            discount_amount=line.discount_amount,
            amount=line.amount,
            rating=line.rating or {},
        )
        for line in lines
    ]


def pdf_data(
    totals: Statement | StatementDraft,
    *,
    number: str,
    version: int,
    period: BillingPeriod,
    issued_at: Any,
    lines: list[LineData],
    replaces: str = "",
    org: BillingSettings | None = None,
    draft: bool = False,
) -> StatementData:
    """What a PDF shows of a statement, or of a draft (`draft`: a preview, marked DRAFT)."""
    org = org or billing_selectors.billing_settings_get()
    return StatementData(
        number=number,
        version=version,
        period=period.period,
        period_start=period.start_date,
        period_end=period.end_date,
        issued_at=issued_at,
        currency=totals.currency,
        organization=org.organization_name,
        contact_email=org.contact_email,
        pi_name=totals.pi_name,
        pi_email=totals.pi_email,
        pi_department=totals.pi_department,
        project_code=totals.project_code,
        project_name=totals.project_name,
        fund_org=totals.fund_org,
        cost_center=totals.cost_center,
        reference_1_label=org.reference_1_label,
        reference_1=totals.reference_1,
        reference_2_label=org.reference_2_label,
        reference_2=totals.reference_2,
        list_total=totals.list_total,
        discount_total=totals.discount_total,
        billed_total=totals.billed_total,
        held_back_count=totals.held_back_count,
        held_back_amount=totals.held_back_amount,
        lines=lines,
        details=totals.details,
        replaces=replaces,
        draft=draft,
        branding=statement_branding(org, period),
    )


def _statements_for_pdf():
    """Statements with what their PDF shows besides the billing settings: period, the version
    replaced, lines (prefetched: one query for a whole batch)."""
    return Statement.objects.select_related("period", "supersedes").prefetch_related("lines")


def statement_render_pdf(*, statement_id: int) -> bool:
    """Render and store a statement's PDF; returns False when it already had one. Idempotent: a
    repeated or concurrent render keeps the first stored file and removes its own."""
    statement = _statements_for_pdf().get(pk=statement_id)
    if statement.pdf:
        return False
    return _pdf_store(statement, render_statement_pdf(statement_pdf_data(statement)))


def statements_render_pdfs(*, statement_ids: Sequence[int]) -> dict[int, str]:
    """Render and store the PDFs of several statements, as statement_render_pdf does one by one,
    but reading their data in the same few queries whatever their number (the statements, their
    lines, the billing settings) and then one UPDATE per PDF stored. A statement that fails is
    left without PDF, with the error recorded on it, and the others are rendered. Returns what
    happened to each statement: RENDERED, HAD_PDF, MISSING or the error recorded."""
    statements = {s.pk: s for s in _statements_for_pdf().filter(pk__in=statement_ids)}
    org = billing_selectors.billing_settings_get() if statements else None
    outcome: dict[int, str] = {}
    for statement_id in statement_ids:
        statement = statements.get(statement_id)
        if statement is None:
            logger.warning("statement #%s no longer exists", statement_id)
            outcome[statement_id] = MISSING
            continue
        if statement.pdf:
            outcome[statement_id] = HAD_PDF
            continue
        try:
            stored = _pdf_store(statement, render_statement_pdf(statement_pdf_data(statement, org)))
        except Exception as exc:
            logger.exception("rendering statement #%s failed", statement_id)
            error = f"{type(exc).__name__}: {exc}"
            statement_record_render_error(statement_id=statement_id, error=error)
            outcome[statement_id] = error
            continue
        outcome[statement_id] = RENDERED if stored else HAD_PDF
    return outcome


def _pdf_store(statement: Statement, data: bytes) -> bool:
    """Store a rendered PDF unless another worker stored one first (then False, and this one is
    removed); a copy goes to the PDF folder when one is configured."""
    name = default_storage.save(statement_pdf_path(statement, statement.pdf_filename), ContentFile(data))
    stored = Statement.objects.filter(pk=statement.pk, pdf="").update(
        pdf=name,
        pdf_sha256=hashlib.sha256(data).hexdigest(),
        pdf_bytes=len(data),
        rendered_at=timezone.now(),
        render_error="",
    )
    if not stored:
        default_storage.delete(name)  # another worker stored it first
        return False
    if settings.OPENCHARGEBACK_PDF_DIR:
        pdf_file_write(Path(settings.OPENCHARGEBACK_PDF_DIR), statement.pdf_filename, data)
    return True


def pdf_file_write(folder: Path, name: str, data: bytes) -> Path:
    """A PDF written into a folder of files for people (output.pdf_dir, previews): complete or not
    at all (written beside, then renamed), replacing a file of that name."""
    folder = folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    partial = folder / f".{name}.partial"
    partial.write_bytes(data)
    partial.replace(target)
    return target


def statement_record_render_error(*, statement_id: int, error: str) -> None:
    Statement.objects.filter(pk=statement_id, pdf="").update(render_error=error[:2000])
