"""The statements admin: list with totals, versions, download, send, send all unsent, resend."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry

from billing import services as billing_services
from billing.models import Charge
from statements.models import Delivery, Statement

from .conftest import generate_and_render

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_changelist_shows_totals_and_send_form(generated, admin_client):
    response = admin_client.get("/admin/statements/statement/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "10 statements" in html and "due $20,227.00" in html
    assert "2025-01-0009 v1" in html and "$2,307.75" in html
    assert "Send unsent" in html and "Issue statements" in html  # the runs of a billing admin


def test_detail_lists_versions_and_downloads(reference_month, admin_client):
    generate_and_render("2025-01")
    charge = Charge.objects.filter(project_code="exoplanet-survey").first()
    billing_services.charges_reject(charge_ids=[charge.pk], note="duplicate")
    generate_and_render("2025-01")
    v1 = Statement.objects.get(project_code="exoplanet-survey", version=1)
    v2 = Statement.objects.get(project_code="exoplanet-survey", version=2)
    response = admin_client.get(f"/admin/statements/statement/{v2.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f"/admin/statements/statement/{v1.pk}/change/" in html and "Superseded" in html
    # The superseded list filter option shows old versions.
    listing = admin_client.get("/admin/statements/statement/?versions=all").content.decode()
    assert "2025-01-0005 v1" in listing and "2025-01-0005 v2" in listing
    current = admin_client.get("/admin/statements/statement/").content.decode()
    assert "2025-01-0005 v1" not in current and "2025-01-0005 v2" in current
    download = admin_client.get(f"/admin/statements/statement/{v1.pk}/pdf/")
    assert download.status_code == 200
    assert download["Content-Disposition"].endswith('filename="2025-01_plex.wombsworth_exoplanet-survey.pdf"')
    assert b"".join(download.streaming_content).startswith(b"%PDF")
    assert LogEntry.objects.filter(object_pk=str(v1.pk), action=LogEntry.Action.ACCESS).exists()


def test_send_action_and_send_all_unsent(generated, admin_client, smtp_server):
    ids = list(Statement.objects.filter(pi_email="zorp.blinkman@example.edu").values_list("pk", flat=True))
    response = admin_client.post(
        "/admin/statements/statement/",
        {"action": "send_selected", "_selected_action": ids[:1]},
        follow=True,
    )
    assert response.status_code == 200
    assert len(smtp_server.messages) == 1  # one email with both of the PI's statements
    assert len(list(smtp_server.messages[0].iter_attachments())) == 2

    response = admin_client.post(
        "/admin/statements/statement/send-unsent/", {"period": "2025-01"}, follow=True
    )
    assert response.status_code == 200
    assert "Sent 6 email(s)" in response.content.decode()
    assert len(smtp_server.messages) == 7
    assert Delivery.objects.filter(state="sent").count() == 7


def test_resend_failed_from_deliveries(generated, admin_client, smtp_server, settings):
    settings.EMAIL_PORT = 1
    admin_client.post("/admin/statements/statement/send-unsent/", {"period": "2025-01"})
    assert Delivery.objects.filter(state="failed").count() == 7
    listing = admin_client.get("/admin/statements/delivery/?state__exact=failed").content.decode()
    assert "failed" in listing.lower()
    settings.EMAIL_PORT = smtp_server.port
    failed = list(Delivery.objects.values_list("pk", flat=True))
    response = admin_client.post(
        "/admin/statements/delivery/", {"action": "resend", "_selected_action": failed}, follow=True
    )
    assert response.status_code == 200
    assert len(smtp_server.messages) == 7
    assert Delivery.objects.filter(state="sent").count() == 7


def test_statements_cannot_be_added_changed_or_deleted(generated, admin_client):
    statement = Statement.objects.first()
    assert admin_client.get("/admin/statements/statement/add/").status_code == 403
    assert admin_client.post(f"/admin/statements/statement/{statement.pk}/delete/").status_code == 403


def test_viewer_cannot_send(generated, client, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_statement"))
    client.force_login(viewer)
    assert client.get("/admin/statements/statement/").status_code == 200
    assert client.post("/admin/statements/statement/send-unsent/", {"period": "2025-01"}).status_code == 403
    assert not Delivery.objects.exists()
