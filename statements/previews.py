"""DRAFT previews of a period's statements (`generate --dry-run`): each statement as generate would
issue it, rendered from its draft, marked DRAFT on every page and written into a preview folder.
Nothing is stored in the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from billing import selectors as billing_selectors

from .models import statement_pdf_name
from .pdf import render_statement_pdf
from .services import GenerateOutcome, pdf_data, pdf_file_write, pdf_lines


@dataclass
class PreviewOutcome:
    folder: Path
    files: list[Path] = field(default_factory=list)


def preview_folder(period: str) -> Path:
    """`preview/{period}` in the PDF folder (output.pdf_dir), or in the data folder's output/pdfs."""
    base = settings.OPENCHARGEBACK_PDF_DIR or Path(settings.DATA_DIR) / "output" / "pdfs"
    return Path(base).expanduser().resolve() / "preview" / period


def statements_preview(*, outcome: GenerateOutcome, folder: Path | None = None) -> PreviewOutcome:
    """Render the drafts of a dry run (GenerateOutcome.drafts) as DRAFT PDFs named as the statements
    will be. The folder's earlier previews are removed first: it shows the period as it is now."""
    folder = (folder or preview_folder(outcome.period)).expanduser().resolve()
    if folder.is_dir():
        for old in folder.glob("*.pdf"):
            old.unlink()
    period = billing_selectors.period_get(outcome.period)
    org = billing_selectors.billing_settings_get()
    now = timezone.now()
    preview = PreviewOutcome(folder=folder)
    folder.mkdir(parents=True, exist_ok=True)
    for result, draft in sorted(outcome.drafts, key=lambda item: item[0].number):
        data = pdf_data(
            draft,
            number=result.number,
            version=result.version,
            period=period,
            issued_at=now,
            lines=pdf_lines(draft.lines),
            replaces=result.replaces,
            org=org,
            draft=True,
        )
        name = statement_pdf_name(period.period, draft.pi_email, draft.project_code, result.version)
        preview.files.append(pdf_file_write(folder, name, render_statement_pdf(data)))
    return preview
