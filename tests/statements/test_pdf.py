"""PDF statements: the figures, long values wrapping without overlap, detail across pages with
repeated headers, page x of y, credits, unicode names, idempotent rendering."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from pypdf import PdfReader
from reportlab.pdfbase.pdfmetrics import stringWidth

from billing.models import BillingSettings
from statements import pdf, services
from statements.models import Statement
from tests.factories import ChargeFactory, PeriodFactory, PIFactory, ProjectFactory, SourceFactory

from .conftest import generate_and_render, pdf_text

pytestmark = pytest.mark.django_db


def read(statement: Statement) -> bytes:
    with statement.pdf.open("rb") as fh:
        return fh.read()


def text_runs(data: bytes) -> list[list[tuple[float, float, float, float, str]]]:
    """Per page: (x0, x1, y, size, text) of every text run, from the content stream."""
    pages = []
    for page in PdfReader(io.BytesIO(data)).pages:
        runs: list[tuple[float, float, float, float, str]] = []

        def visit(text, cm, tm, font_dict, font_size, runs=runs):
            if not text.strip() or font_dict is None:
                return
            scale = tm[0] * cm[0] or 1
            size = font_size * scale
            x = tm[4] * cm[0] + cm[4]
            y = tm[5] * cm[3] + cm[5]
            base = str(font_dict.get("/BaseFont", "/Helvetica")).lstrip("/")
            font = base if base.startswith("Helvetica") else "Helvetica"
            runs.append((x, x + stringWidth(text, font, size), y, size, text))

        page.extract_text(visitor_text=visit)
        pages.append(runs)
    return pages


def assert_no_overlap(data: bytes) -> None:
    for number, runs in enumerate(text_runs(data), start=1):
        for i, a in enumerate(runs):
            for b in runs[i + 1 :]:
                same_line = abs(a[2] - b[2]) < min(a[3], b[3]) * 0.8
                overlap = min(a[1], b[1]) - max(a[0], b[0])
                assert not (same_line and overlap > 1.0), f"page {number}: {a[4]!r} overlaps {b[4]!r}"


def test_reference_pdf_shows_list_discount_percent_and_due(generated):
    statement = Statement.objects.get(
        pi_email="zorp.blinkman@example.edu", project_code="genomics-sequencing"
    )
    text = pdf_text(read(statement))
    assert "2,720.00" in text
    assert "412.25" in text
    assert "15 %" in text
    assert "2,307.75" in text
    for expected in (
        statement.number,
        "version 1",
        "2025-01",
        "zorp.blinkman@example.edu",
        "genomics-sequencing",
        "BIO-2024-001",
        "NSF-BIO-2024-1234567",  # grant number (reference 1)
        "REQ-2024-00142",
        "Research Computing",
        "Page 1 of 1",
        "Generated ",
        "genomics-compute-01",
    ):
        assert expected in text, expected
    assert_no_overlap(read(statement))


def test_every_reference_pdf_has_its_due_amount(generated):
    for statement in Statement.objects.all():
        text = pdf_text(read(statement))
        assert f"{statement.billed_total:,.2f}" in text, statement.label


def test_long_values_wrap_and_detail_flows_over_pages_with_headers(db, settings):
    BillingSettings.objects.update_or_create(
        pk=1,
        defaults={
            "organization_name": "Research Computing and Data Services of the Very Long Institutional Name University",
            "contact_email": "research-computing-billing-and-chargeback-office@very-long-department.example.edu",
        },
    )
    period = PeriodFactory(period="2025-02", status="closed")
    source = SourceFactory(slug="aws", display_name="Amazon Web Services (research master payer)")
    pi = PIFactory(
        email="a.very.long.email.address.for.a.principal.investigator@subdomain.department.example.edu",
        name="Professor Maximiliana Konstantinopoulou-Vanderbilt-Featherstonehaugh III",
        department="Department of Computational and Experimental Astrophysics and Planetary Sciences",
    )
    project = ProjectFactory(
        project_id="an-extremely-long-project-identifier-" + "x" * 120,
        pi=pi,
        fund_org="FUND-" + "9" * 60 + "-ORG-" + "A" * 30,
    )
    for n in range(160):
        ChargeFactory(
            period=period,
            source=source,
            project=project,
            service_name=f"Amazon Elastic Compute Cloud with a rather long service name {n % 3}",
            resource_id=f"arn:aws:ec2:us-east-1:123456789012:instance/i-{n:017x}" + "z" * (n % 4) * 30,
            resource_name=f"resource-{n}-" + "long-name-" * (n % 5),
            reference_1="GRANT-" + "1234567890" * 8,
            quantity=Decimal("744.5"),
            unit="Hours",
        )
    ChargeFactory(
        period=period,
        source=source,
        project=project,
        service_name="Amazon Elastic Compute Cloud with a rather long service name 0",
        charge_category="Credit",
        list_cost=Decimal("-40.00"),
        billed_cost=Decimal("-40.00"),
    )
    generate_and_render("2025-02")
    statement = Statement.objects.get()
    data = read(statement)
    pages = PdfReader(io.BytesIO(data)).pages
    assert len(pages) >= 4
    texts = [page.extract_text() for page in pages]
    for number, text in enumerate(texts, start=1):
        assert f"Page {number} of {len(pages)}" in text
    # The detail header repeats on each page the table reaches.
    detail_pages = [t for t in texts if "Resource" in t and "Source · service" in t]
    assert len(detail_pages) == len(pages)
    assert all("(continued)" in t for t in texts[1:])
    full = "".join(t.replace("\n", "") for t in texts)
    assert "resource-159-" in full
    assert "(credit)" in full and "-$40.00" in full
    assert project.fund_org in full.replace(" ", "")
    assert_no_overlap(data)


def test_unicode_names_use_an_embedded_font(db):
    if pdf._unicode_fonts() is None:
        pytest.skip("no DejaVu Sans font on this machine")
    period = PeriodFactory(period="2025-02", status="closed")
    pi = PIFactory(email="lukasz@university.example", name="Łukasz Żółć-Nguyễn")
    ChargeFactory(period=period, project=ProjectFactory(pi=pi, project_id="ścisłe-obliczenia"))
    generate_and_render("2025-02")
    text = pdf_text(read(Statement.objects.get()))
    assert "Łukasz Żółć-Nguyễn" in text
    assert "ścisłe-obliczenia" in text


def test_rendering_is_idempotent(generated):
    statement = Statement.objects.first()
    assert statement is not None and statement.pdf
    name, digest = statement.pdf.name, statement.pdf_sha256
    assert services.statement_render_pdf(statement_id=statement.pk) is False
    statement.refresh_from_db()
    assert (statement.pdf.name, statement.pdf_sha256) == (name, digest)
    assert (
        name == f"statements/2025-01/2025-01_{statement.pi_email.split('@')[0]}_{statement.project_code}.pdf"
    )


def test_revised_statement_says_what_it_replaces(reference_month):
    from billing import services as billing_services
    from billing.models import Charge

    generate_and_render("2025-01")
    charge = Charge.objects.filter(project_code="exoplanet-survey").first()
    billing_services.charges_reject(charge_ids=[charge.pk], note="duplicate")
    generate_and_render("2025-01")
    v2 = Statement.objects.get(project_code="exoplanet-survey", version=2)
    text = pdf_text(read(v2))
    assert f"replaces {v2.number} v1" in text
    assert "version 2" in text
