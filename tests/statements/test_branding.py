"""Branding of statements and emails: what the PDF shows (logo, organisation, address and contact,
accent colour, payment instructions, footer, the period's note, the PI's name beside the email),
what a logo may be, email templates from DATA_DIR/templates/ or edited in the admin, and that
branding never makes a new statement version."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from pypdf import PdfReader

from accounts import roles
from accounts.services import roles_ensure
from billing import branding as billing_branding
from billing import services as billing_services
from billing.models import PI, BillingPeriod, BillingSettings
from chargeback.errors import Refused
from statements import services, tasks
from statements.branding import logo_flowable, logo_load
from statements.models import Statement

from .conftest import generate_and_render, pdf_text

pytestmark = pytest.mark.django_db

ZORP = "zorp.blinkman@example.edu"
PAYMENT = "Pay by internal transfer to fund 10-2000 within 30 days."
NOTE = "Storage prices change from February 2025."


@pytest.fixture(autouse=True)
def _fresh_logo_cache():
    logo_load.cache_clear()
    yield
    logo_load.cache_clear()


def png_bytes(width: int = 240, height: int = 80, colour: str = "#c0392b") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


SVG_LOGO = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40" '
    b'viewBox="0 0 120 40"><rect x="0" y="0" width="120" height="40" fill="#123456"/>'
    b'<circle cx="20" cy="20" r="12" fill="#ffffff"/></svg>'
)


def brand(**extra) -> BillingSettings:
    changes = {
        "organization_name": "Northfield University Research Computing",
        "organization_address": "1 College Road\nNorthfield NF1 2AB",
        "contact_line": "Tel. +1 555 0100 · rc.northfield.example/billing",
        "contact_email": "billing@northfield.example",
        "accent_color": "#8E1B3A",
        "payment_instructions": PAYMENT,
        "statement_footer": "VAT no. GB 123 4567 89",
        **extra,
    }
    return billing_services.billing_settings_update(**changes)


def current_pdf(pi_email: str = ZORP) -> bytes:
    statement = (
        Statement.objects.filter(pi_email=pi_email).exclude(state="superseded").order_by("sequence")[0]
    )
    with statement.pdf.open("rb") as fh:
        return fh.read()


def page_content(data: bytes) -> bytes:
    streams = [page.get_contents() for page in PdfReader(io.BytesIO(data)).pages]
    return b"".join(stream.get_data() for stream in streams if stream is not None)


# --- the PDF ---------------------------------------------------------------------------------


def test_pdf_shows_the_branding_and_the_period_note(reference_month):
    PI.objects.filter(email=ZORP).update(name="Zorp Blinkman")
    brand()
    billing_branding.period_statement_note_set(period="2025-01", note=NOTE)
    generate_and_render("2025-01")
    data = current_pdf()
    text = " ".join(pdf_text(data).split())
    for expected in (
        "Northfield University Research Computing",
        "1 College Road",
        "Northfield NF1 2AB",
        "Tel. +1 555 0100",
        "Questions: billing@northfield.example",
        PAYMENT,
        "VAT no. GB 123 4567 89",
        f"Note for January 2025: {NOTE}",
        "Zorp Blinkman",
        ZORP,
    ):
        assert expected in text, expected
    # The name first, the email beside it.
    assert text.index("Zorp Blinkman") < text.index(ZORP)
    # The accent colour (#8e1b3a) fills the organisation's name and the amount due.
    assert b".556863 .105882 .227451 rg" in page_content(data)
    assert b".113725 .305882 .537255 rg" not in page_content(data)


def test_every_statement_of_the_period_carries_the_note_and_other_periods_do_not(reference_month):
    billing_branding.period_statement_note_set(period="2025-01", note=NOTE)
    generate_and_render("2025-01")
    statements = list(Statement.objects.all())
    assert len(statements) == 10
    for statement in statements:
        with statement.pdf.open("rb") as fh:
            assert NOTE in " ".join(pdf_text(fh.read()).split())
    billing_branding.period_statement_note_set(period="2025-01", note="")
    assert BillingPeriod.objects.get(period="2025-01").statement_note == ""


def test_a_png_logo_is_drawn_on_the_statement(reference_month):
    brand(logo=SimpleUploadedFile("logo.png", png_bytes(), content_type="image/png"))
    settings_obj = BillingSettings.objects.get()
    assert settings_obj.logo.name.startswith("branding/logo-") and settings_obj.logo.name.endswith(".png")
    assert default_storage.exists(settings_obj.logo.name)
    generate_and_render("2025-01")
    page = PdfReader(io.BytesIO(current_pdf())).pages[0]
    images = list(page.images)
    assert len(images) == 1
    assert images[0].image.size == (240, 80)


def test_an_svg_logo_is_drawn_as_vectors(reference_month):
    from reportlab.graphics.shapes import Drawing

    brand(logo=SVG_LOGO)
    logo = logo_load(BillingSettings.objects.get().logo.name)
    assert logo is not None and logo.kind == "svg"
    drawing = logo_flowable(logo, 200, 50)
    assert isinstance(drawing, Drawing)
    assert (round(drawing.width), round(drawing.height)) == (
        150,
        50,
    )  # scaled to the height, proportions kept
    generate_and_render("2025-01")
    data = current_pdf()
    assert list(PdfReader(io.BytesIO(data)).pages[0].images) == []  # nothing rasterized
    assert b".070588 .203922 .337255 rg" in page_content(data)  # the SVG's #123456 fill


def test_a_logo_in_s3_media_is_drawn(reference_month, s3_media):
    server, bucket = s3_media
    brand(logo=png_bytes(100, 100))
    name = BillingSettings.objects.get().logo.name
    assert any(key.endswith(name) for key in server.keys(bucket))
    generate_and_render("2025-01")
    assert len(list(PdfReader(io.BytesIO(current_pdf())).pages[0].images)) == 1


def test_a_logo_gone_from_storage_leaves_the_statement_without_it(reference_month, caplog):
    brand(logo=png_bytes())
    default_storage.delete(BillingSettings.objects.get().logo.name)
    generate_and_render("2025-01")
    data = current_pdf()
    assert list(PdfReader(io.BytesIO(data)).pages[0].images) == []
    assert "Northfield University Research Computing" in " ".join(pdf_text(data).split())
    assert "statement logo" in caplog.text


def test_branding_changes_never_make_a_new_version(reference_month):
    generate_and_render("2025-01")
    before = {s.pk: (s.version, s.pdf_sha256) for s in Statement.objects.all()}
    brand(logo=png_bytes())
    billing_branding.period_statement_note_set(period="2025-01", note=NOTE)
    outcome = services.statements_generate(period="2025-01")
    assert {s.status for s in outcome.statements} == {"unchanged"}
    assert outcome.to_render == []
    assert {s.pk: (s.version, s.pdf_sha256) for s in Statement.objects.all()} == before


def test_a_new_version_gets_the_branding_of_its_time(reference_month):
    from billing.models import Charge

    generate_and_render("2025-01")
    brand()
    billing_branding.period_statement_note_set(period="2025-01", note=NOTE)
    charge = Charge.objects.filter(pi_email=ZORP, review_state="ok").order_by("id")[0]
    billing_services.charges_reject(charge_ids=[charge.pk], note="not ours")
    generate_and_render("2025-01")
    revised = Statement.objects.get(pi_email=ZORP, project_code=charge.project_code, state="issued")
    old = revised.supersedes
    assert revised.version == 2
    with revised.pdf.open("rb") as fh:
        assert PAYMENT in " ".join(pdf_text(fh.read()).split())
    with old.pdf.open("rb") as fh:
        assert PAYMENT not in " ".join(pdf_text(fh.read()).split())


def test_a_finalized_periods_note_is_refused(reference_month):
    BillingPeriod.objects.filter(period="2025-01").update(status="finalized")
    with pytest.raises(Refused, match="finalized"):
        billing_branding.period_statement_note_set(period="2025-01", note=NOTE)


# --- what a logo may be ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"GIF89a" + b"\0" * 100, "not a PNG, JPEG or SVG"),
        (b"%PDF-1.7 not an image", "not a PNG, JPEG or SVG"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "not a readable PNG or JPEG"),
        (
            b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><script>alert(1)</script></svg>",
            "<script>",
        ),
        (
            b"<svg xmlns='http://www.w3.org/2000/svg' xmlns:xlink='http://www.w3.org/1999/xlink' width='9' "
            b"height='9'><image xlink:href='file:///etc/passwd' width='9' height='9'/></svg>",
            "<image>",
        ),
        (
            b"<svg xmlns='http://www.w3.org/2000/svg' width='9' height='9'><use href='http://evil.example/x.svg#a'/></svg>",
            "only refer to its own parts",
        ),
        (
            b"<?xml version='1.0'?><!DOCTYPE svg [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
            b"<svg xmlns='http://www.w3.org/2000/svg' width='9' height='9'><text>&x;</text></svg>",
            "DOCTYPE",
        ),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><rect width='1' height='1'/></svg>", "gives no size"),
        (b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><rect", "not a well-formed SVG"),
    ],
)
def test_a_logo_that_is_not_a_safe_image_is_refused(db, data, message):
    with pytest.raises(Refused, match=message):
        billing_branding.logo_inspect(data, name="logo.png")
    if data:  # an empty value given to the service removes the logo
        with pytest.raises(Refused, match=message):
            billing_services.billing_settings_update(logo=data)
    from billing.selectors import billing_settings_get

    assert not billing_settings_get().logo


def test_logo_limits_in_bytes_and_pixels(db, settings):
    settings.OPENCHARGEBACK_LOGO_MAX_PIXELS = 500
    with pytest.raises(Refused, match=r"600 × 100 pixels; a logo may be at most 500 pixels"):
        billing_branding.logo_inspect(png_bytes(600, 100))
    assert billing_branding.logo_inspect(png_bytes(500, 100)).kind == "png"
    settings.OPENCHARGEBACK_LOGO_MAX_BYTES = 1000
    big = bytes(1001)
    with pytest.raises(Refused, match="1,001 bytes; a logo may be at most 1,000 bytes"):
        billing_branding.logo_inspect(big)


def test_a_jpeg_is_judged_by_its_content_not_its_name(db):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (50, 20), "#336699").save(buffer, format="JPEG")
    info = billing_branding.logo_inspect(buffer.getvalue(), name="logo.svg")
    assert (info.kind, info.width, info.height, info.extension) == ("jpeg", 50.0, 20.0, "jpg")


@pytest.mark.parametrize("value", ["red", "#12345", "#1234567", "123456", "#gggggg", ""])
def test_an_accent_colour_must_be_hex(db, value):
    with pytest.raises(Refused, match="accent colour"):
        billing_services.billing_settings_update(accent_color=value)
    assert billing_services.billing_settings_update(accent_color="#ABCDEF").accent_color == "#abcdef"


# --- the admin's settings form ---------------------------------------------------------------


@pytest.fixture
def admin_client(db):
    groups = roles_ensure()
    user = get_user_model().objects.create_user("bella", "bella@u.example", "pw", is_staff=True)
    user.groups.add(groups[roles.BILLING_ADMIN])
    client = Client()
    client.force_login(user)
    return client


def settings_form_data(**changes) -> dict:
    obj = BillingSettings.objects.get(pk=1) if BillingSettings.objects.exists() else None
    from billing.selectors import billing_settings_get

    obj = obj or billing_settings_get()
    data = {
        f.name: getattr(obj, f.name)
        for f in BillingSettings._meta.concrete_fields
        if f.editable and f.name not in ("id", "logo")
    }
    data = {k: ("" if v is None else v) for k, v in data.items()}
    data.update(changes)
    return data


def test_the_settings_page_saves_branding_and_refuses_bad_input_clearly(admin_client):
    url = reverse("admin:billing_billingsettings_change", args=[1])
    assert admin_client.get(url).status_code == 200
    logo = SimpleUploadedFile("crest.png", png_bytes(), content_type="image/png")
    response = admin_client.post(
        url, settings_form_data(payment_instructions=PAYMENT, accent_color="#8e1b3a", logo=logo)
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    saved = BillingSettings.objects.get()
    assert saved.payment_instructions == PAYMENT and saved.accent_color == "#8e1b3a"
    assert saved.logo.name.startswith("branding/logo-")

    fake = SimpleUploadedFile("crest.png", b"this is text, not a picture", content_type="image/png")
    response = admin_client.post(url, settings_form_data(logo=fake))
    assert response.status_code == 200
    assert "not a PNG, JPEG or SVG image (judged by its content, not its name)" in response.content.decode()

    response = admin_client.post(url, settings_form_data(accent_color="crimson"))
    assert response.status_code == 200
    assert "use a hex colour such as #1d4e89" in response.content.decode()


@pytest.mark.parametrize(
    ("field", "source", "message"),
    [
        ("email_text_template", "Dear {{ pi_name|shout }}", "Invalid filter: &#x27;shout&#x27;"),
        ("email_html_template", "{% if %}<p>x</p>{% endif %}", "Template error"),
        ("email_subject_template", "{% for s in statements %}{{ s.label }}", "Template error"),
        ("email_text_template", "{% load no_such_library %}", "no_such_library"),
    ],
)
def test_an_invalid_admin_template_is_refused(admin_client, field, source, message):
    url = reverse("admin:billing_billingsettings_change", args=[1])
    response = admin_client.post(url, settings_form_data(**{field: source}))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert getattr(BillingSettings.objects.get(), field) == ""
    with pytest.raises(Refused):
        billing_services.billing_settings_update(**{field: source})


def test_the_period_note_is_edited_on_the_period_page(admin_client, reference_month):
    url = reverse("admin:billing_billingperiod_change", args=[reference_month.pk])
    page = admin_client.get(url).content.decode()
    assert 'name="statement_note"' in page
    response = admin_client.post(url, {"statement_note": NOTE})
    assert response.status_code == 302
    assert BillingPeriod.objects.get(pk=reference_month.pk).statement_note == NOTE
    BillingPeriod.objects.filter(pk=reference_month.pk).update(status="finalized")
    page = admin_client.get(url).content.decode()
    assert 'name="statement_note"' not in page and NOTE in page


# --- email templates ---------------------------------------------------------------------------


@pytest.fixture
def locmem(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox.clear()
    return mail.outbox


def send_all(period: str = "2025-01") -> None:
    queue = services.deliveries_queue(period=period)
    tasks.dispatch([], [d.pk for d in queue.to_send])


def message_to(outbox, recipient: str = ZORP):
    (message,) = [m for m in outbox if m.to == [recipient]]
    html = next(content for content, kind in message.alternatives if kind == "text/html")
    return message, message.body, html


def test_builtin_emails_carry_the_branding(reference_month, locmem):
    brand()
    billing_branding.period_statement_note_set(period="2025-01", note=NOTE)
    generate_and_render("2025-01")
    send_all()
    message, text, html = message_to(locmem)
    assert message.subject.startswith("Northfield University Research Computing: your statement")
    for body in (text, html):
        assert PAYMENT in body and NOTE in body and "VAT no. GB 123 4567 89" in body
        assert "Tel. +1 555 0100" in body
    assert "#8e1b3a" in html and "#1d4e89" not in html


def test_a_sites_template_files_in_data_dir_override_the_emails(reference_month, locmem, settings, tmp_path):
    site = tmp_path / "site-templates"
    folder = site / "statements" / "email"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Invoice {{ period }} for {{ pi_name }} & co: {{ total }}\n")
    (folder / "statements.txt").write_text(
        "SITE TEXT for {{ pi_email }}\n{% for s in statements %}{{ s.project }} {{ s.due }}\n{% endfor %}"
        "Pay: {{ payment_instructions }}\n"
    )
    (folder / "statements.html").write_text("<p>SITE HTML {{ pi_email }} &amp; {{ organization }}</p>")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [site, *settings.TEMPLATES[0]["DIRS"][1:]]}]
    brand()
    generate_and_render("2025-01")
    send_all()
    message, text, html = message_to(locmem)
    assert message.subject == "Invoice 2025-01 for zorp.blinkman@example.edu & co: $6,460.00"  # not escaped
    assert text.startswith(f"SITE TEXT for {ZORP}\n")
    assert "genomics-sequencing $2,307.75" in text and f"Pay: {PAYMENT}" in text
    assert html == "<p>SITE HTML zorp.blinkman@example.edu &amp; Northfield University Research Computing</p>"
    # The PDFs are still attached.
    assert len([a for a in message.attachments if a[2] == "application/pdf"]) == 2


def test_the_data_dir_templates_folder_is_searched_first(settings):
    assert settings.TEMPLATES[0]["DIRS"][0] == Path(settings.DATA_DIR) / "templates"


def test_templates_edited_in_the_admin_win_over_files(reference_month, locmem):
    billing_services.billing_settings_update(
        email_subject_template="{{ organization }} — {{ count }} statement{{ count|pluralize }} ({{ total }})",
        email_text_template="Hello {{ pi_name }}, you owe {{ total }}.{% if period_note %} {{ period_note }}{% endif %}",
        email_html_template="<b>{{ pi_name }}</b> owes {{ total }}",
    )
    billing_branding.period_statement_note_set(period="2025-01", note="Rates <fixed>.")
    generate_and_render("2025-01")
    send_all()
    message, text, html = message_to(locmem)
    assert message.subject == "Research Computing — 2 statements ($6,460.00)"
    assert text == f"Hello {ZORP}, you owe $6,460.00. Rates <fixed>."  # plain text: not escaped
    assert html == f"<b>{ZORP}</b> owes $6,460.00"
