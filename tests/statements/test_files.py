"""Statements as the original's users know them: DRAFT previews of `generate --dry-run`, PDF files
named {period}_{pi}_{project}.pdf (also in output.pdf_dir), and emails that say where they go."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from pypdf import PdfReader

from billing import services as billing_services
from billing.models import BillingPeriod, Charge
from statements.models import Delivery, Statement, statement_pdf_name
from tests.conftest import REFERENCE_TOTALS

from .conftest import generate_and_render

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def pages_text(path: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(path).pages]


def expected_names(version_of: dict[str, int] | None = None) -> list[str]:
    return sorted(
        statement_pdf_name("2025-01", pi, project, (version_of or {}).get(project, 1))
        for pi, project in REFERENCE_TOTALS
    )


def test_pdf_names():
    assert statement_pdf_name("2025-01", "zorp.blinkman@example.edu", "genomics-sequencing") == (
        "2025-01_zorp.blinkman_genomics-sequencing.pdf"
    )
    assert statement_pdf_name("2025-01", "a@x.edu", "lab/alpha beta", 2) == "2025-01_a_lab-alpha-beta_v2.pdf"
    assert statement_pdf_name("2025-01", "a@x.edu", "") == "2025-01_a_no-project.pdf"


def test_dry_run_renders_draft_previews_and_stores_nothing(reference_month, settings, tmp_path):
    settings.OPENCHARGEBACK_PDF_DIR = str(tmp_path / "pdfs")
    out, _err = run("generate", "-p", "2025-01", "--dry-run")
    folder = tmp_path / "pdfs" / "preview" / "2025-01"
    assert out.splitlines()[-1] == f"Preview PDFs, marked DRAFT (nothing issued): 10 in {folder}"
    assert sorted(p.name for p in folder.iterdir()) == expected_names()
    genomics = pages_text(folder / "2025-01_zorp.blinkman_genomics-sequencing.pdf")
    assert all("DRAFT" in text for text in genomics)  # on every page
    assert "DRAFT of statement 2025-01-0009 v1: not issued" in genomics[-1]
    assert "2,307.75" in "".join(genomics)
    assert not Statement.objects.exists() and not Delivery.objects.exists()
    assert BillingPeriod.objects.get().status == "open"
    assert not list((tmp_path / "pdfs").glob("*.pdf"))  # previews only in their folder

    # A later dry run shows the period as it is now: earlier previews are replaced.
    (folder / "stale.pdf").write_bytes(b"%PDF old")
    doc = json.loads(run("generate", "-p", "2025-01", "--dry-run", "--format", "json")[0])
    assert doc["preview"] == {"folder": str(folder), "files": expected_names()}
    assert not (folder / "stale.pdf").exists()


def test_issued_pdfs_are_named_for_people_and_written_to_the_pdf_folder(reference_month, settings, tmp_path):
    settings.OPENCHARGEBACK_PDF_DIR = str(tmp_path / "pdfs")
    generate_and_render("2025-01")
    statement = Statement.objects.get(project_code="exoplanet-survey")
    assert statement.pdf.name == "statements/2025-01/2025-01_plex.wombsworth_exoplanet-survey.pdf"
    assert sorted(p.name for p in (tmp_path / "pdfs").glob("*.pdf")) == expected_names()
    with statement.pdf.open("rb") as fh:
        assert (tmp_path / "pdfs" / statement.pdf_filename).read_bytes() == fh.read()
    assert "DRAFT" not in "".join(pages_text(tmp_path / "pdfs" / statement.pdf_filename))

    # A change issues v2: a file of its own beside v1.
    charge = Charge.objects.filter(project_code="exoplanet-survey").first()
    billing_services.charges_reject(charge_ids=[charge.pk], note="duplicate")
    generate_and_render("2025-01")
    names = {p.name for p in (tmp_path / "pdfs").glob("*.pdf")}
    assert {
        "2025-01_plex.wombsworth_exoplanet-survey.pdf",
        "2025-01_plex.wombsworth_exoplanet-survey_v2.pdf",
    } <= names


def test_statements_of_an_open_period_are_sent(reference_month, smtp_server):
    out, err = run("generate", "-p", "2025-01")
    assert BillingPeriod.objects.get().status == "open"
    out, err = run("send", "-p", "2025-01")
    assert "Sent 7 emails of 7." in out and "warning" not in err
    attachments = sorted(
        part.get_filename() for message in smtp_server.messages for part in message.iter_attachments()
    )
    assert attachments == expected_names()


def test_emails_to_files_are_announced_loudly(reference_month, settings, tmp_path):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = tmp_path / "emails"
    out, err = run("generate", "-p", "2025-01", "--send")
    assert err.splitlines()[0] == (
        f"warning: emails are written as files in {tmp_path / 'emails'}, not sent to a mail server "
        "(dev_mode: true, or no smtp settings in config.yaml / EMAIL_URL)"
    )
    # Django's file backend ends each message with a line of 79 dashes; two connections opened in
    # the same second can share a file (its name is the time and the backend's id()).
    written = "".join(path.read_text() for path in (tmp_path / "emails").iterdir())
    assert "Sent 7 emails of 7." in out and written.count("\n" + "-" * 79 + "\n") == 7
    _out, err = run("send", "-p", "2025-01")  # nothing left to send: nothing to announce
    assert "warning" not in err
    Delivery.objects.all().delete()
    Statement.objects.update(state="issued")
    _out, err = run("send", "-p", "2025-01")
    assert err.startswith("warning: emails are written as files in ")
