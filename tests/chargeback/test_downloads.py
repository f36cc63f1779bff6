"""File names of downloads are safe in a Content-Disposition header: a project id, an uploaded
file's name or a statement's number with CR/LF, quotes or separators never breaks the header
(a 500 from BadHeaderError, or an injected header), in the portal, the admin and journal
downloads."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from chargeback.downloads import attachment_header, download_name
from tests.accounts.conftest import client_for, world  # noqa: F401  (fixture)

HOSTILE = 'evil\r\nSet-Cookie: session=1; x="y"\\..//\x00\u2028é.csv'


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("charges-2025-01-lab.csv", "charges-2025-01-lab.csv"),
        ("a\r\nb.csv", "a_b.csv"),
        ('say "hi".pdf', "say _hi_.pdf"),
        ("../../etc/passwd", "etc_passwd"),
        ("Müller ünd Söhne.csv", "Müller ünd Söhne.csv"),
        ("\x00\x1f", "fallback"),
        ("   ", "fallback"),
        ("x" * 300 + ".csv", "x" * 146 + ".csv"),
    ],
)
def test_download_name(name, safe):
    assert download_name(name, "fallback") == safe


def test_the_header_never_holds_a_line_break():
    header = attachment_header(HOSTILE)
    assert "\r" not in header and "\n" not in header and "\u2028" not in header
    assert header.startswith("attachment; filename")


@pytest.mark.django_db
def test_portal_csv_of_a_project_id_with_cr_lf(world, settings):  # noqa: F811
    world.a1.project_id = "lab\r\nSet-Cookie: stolen=1"
    world.a1.save()
    from billing.models import Charge

    Charge.objects.filter(project=world.a1).update(project_code=world.a1.project_id)
    response = client_for(world.user_a).get(reverse("portal:charges_csv", args=["2025-01", world.a1.pk]))
    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert disposition == 'attachment; filename="charges-2025-01-lab_Set-Cookie_ stolen=1.csv"'
    assert "Set-Cookie" not in {k for k, _ in response.items()}


@pytest.mark.django_db
def test_admin_downloads_of_hostile_names(world, settings):  # noqa: F811
    from django.contrib.auth import get_user_model

    from billing.models import Import
    from tests.factories import ImportFactory

    admin = get_user_model().objects.create_superuser("root", "root@example.edu", "x" * 20)
    stored = HOSTILE.replace("\x00", "")  # PostgreSQL stores no NUL, even in a name
    record = ImportFactory(original_name=stored)
    record.file.save("stored.csv", ContentFile(b"a,b\n"), save=True)
    response = client_for(admin).get(reverse("admin:billing_import_download", args=[record.pk]))
    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition and "Set-Cookie:" not in disposition
    assert Import.objects.get(pk=record.pk).original_name == stored  # the record keeps what was given

    statement = world.statements_a[-1]
    statement.project_code = "ada\r\ngenomics"  # a project id as hostile as a tag may make it
    statement.save(update_fields=["project_code"])
    for url in (
        reverse("admin:statements_statement_pdf", args=[statement.pk]),
        reverse("portal:statement_pdf", args=[statement.pk]),
    ):
        client = client_for(admin if "admin" in url else world.user_a)
        response = client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Disposition"] == 'attachment; filename="2025-01_ada_ada-genomics_v2.pdf"'
