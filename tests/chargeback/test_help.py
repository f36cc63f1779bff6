"""Help and polish of the admin: help pages linked from the header, the system page (billing admins
only), human titles and column headers, the app list ordered for finance, Statements and Journal in
the top navigation, the favicon, and the record of the last backup."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from accounts import roles
from accounts.services import roles_ensure
from billing import services as billing_services
from chargeback import system_status
from chargeback.help.views import TOPICS

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.fixture
def groups(db):
    return roles_ensure()


def _client(username: str, role: str | None, groups) -> Client:
    user = User.objects.create_user(username, f"{username}@university.example", "pw", is_staff=True)
    if role:
        user.groups.add(groups[role])
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ac(groups) -> Client:
    return _client("bella", roles.BILLING_ADMIN, groups)


@pytest.fixture
def rc(groups) -> Client:
    return _client("rita", roles.REVIEWER, groups)


@pytest.fixture
def vc(groups) -> Client:
    return _client("victor", roles.VIEWER, groups)


def _html(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


# --- help --------------------------------------------------------------------------------------


def test_help_is_linked_from_the_header_of_every_admin_page(vc):
    for url in (
        reverse("admin:index"),
        reverse("admin:billing_charge_changelist"),
        reverse("admin:statements_statement_changelist"),
    ):
        header = _html(vc, url).split('<div id="main"', 1)[0]
        assert f'href="{reverse("ocb_help")}"' in header, url


def test_every_help_topic_renders_for_a_viewer(vc):
    index = _html(vc, reverse("ocb_help"))
    for topic in TOPICS:
        url = reverse("ocb_help_topic", args=[topic.slug])
        assert f'href="{url}"' in index
        page = _html(vc, url)
        assert f"<h1>{topic.title}</h1>" in page
    expected = {
        "monthly-cycle",
        "review",
        "tags",
        "focus-exports",
        "usage",
        "periods",
        "journal",
        "statements",
        "cents",
    }
    assert {t.slug for t in TOPICS} == expected


def test_the_tag_specification_uses_the_sites_tag_keys(vc):
    billing_services.billing_settings_update(
        tag_pi_email="owner_email", tag_project_id="rc_project", organization_name="Northfield RC"
    )
    page = _html(vc, reverse("ocb_help_topic", args=["tags"]))
    spec = re.search(r'<pre class="ocb-spec">(.*?)</pre>', page, re.S).group(1)
    assert "Tagging cloud resources for Northfield RC billing" in spec
    assert "owner_email" in spec and "rc_project" in spec
    assert "pi_email" not in spec


def test_help_needs_a_staff_sign_in_and_unknown_topics_are_not_found(vc):
    response = Client().get(reverse("ocb_help"))
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert vc.get(reverse("ocb_help_topic", args=["nonsense"])).status_code == 404


# --- system page -------------------------------------------------------------------------------


def test_the_system_page_is_for_billing_admins_only(ac, rc, vc):
    assert rc.get(reverse("ocb_system")).status_code == 403
    assert vc.get(reverse("ocb_system")).status_code == 403
    assert f'href="{reverse("ocb_system")}"' not in _html(rc, reverse("admin:index"))
    page = _html(ac, reverse("ocb_system"))
    assert f'href="{reverse("ocb_system")}"' in _html(ac, reverse("admin:index"))
    assert f"OpenChargeback {system_status.app_version()}" in page
    assert "SQLite 3." in page or "PostgreSQL" in page
    assert "run in-process" in page  # the test settings have no broker
    assert "free of" in page  # disk use of the data folder
    assert "none recorded" in page


def test_the_system_page_shows_the_last_backup(ac, tmp_path, settings):
    # The backup command records it (tests/chargeback/test_backup.py checks that on a real backup).
    settings.DATA_DIR = tmp_path
    archive = tmp_path / "openchargeback-20261129-020000.tar.gz"
    system_status.backup_recorded(
        path=archive, size_bytes=123456, vendor="sqlite", files=42, created_at="2026-11-29T02:00:00Z"
    )
    record = system_status.last_backup()
    assert record is not None and record["path"] == str(archive) and record["size"] == "120.6 KB"
    page = _html(ac, reverse("ocb_system"))
    assert str(archive) in page and "2026-11-29 02:00" in page and "none recorded" not in page


def test_workers_are_pinged_when_a_broker_is_configured(settings, monkeypatch):
    settings.CELERY_BROKER_URL = "redis://user:secret@127.0.0.1:6390/5"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setattr("chargeback.health.broker_ok", lambda: True)

    class FakeInspect:
        def ping(self):
            return {"celery@worker-1": {"ok": "pong"}}

    from chargeback.celery import app

    monkeypatch.setattr(app.control, "inspect", lambda timeout: FakeInspect())
    checks = {c.name: c for c in system_status.broker_and_workers()}
    assert checks["Broker"].ok and checks["Broker"].value == "redis://user:***@127.0.0.1:6390/5"
    assert checks["Workers"].ok and checks["Workers"].detail == "celery@worker-1"
    monkeypatch.setattr(app.control, "inspect", lambda timeout: type("I", (), {"ping": lambda self: None})())
    checks = {c.name: c for c in system_status.broker_and_workers()}
    assert checks["Workers"].ok is False and checks["Workers"].value == "none answering"


# --- labels, titles, navigation, app order, favicon ---------------------------------------------


def _headers(html: str) -> list[str]:
    """The column headers of the list (the result table only)."""
    html = html.split('id="result_list"', 1)[1].split("</thead>", 1)[0]
    cells = re.findall(r'<th scope="col"[^>]*>(.*?)</th>', html, re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


def test_list_pages_are_titled_with_plain_names(vc):
    for url, title in (
        (reverse("admin:statements_statement_changelist"), "Statements"),
        (reverse("admin:statements_delivery_changelist"), "Deliveries"),
        (reverse("admin:billing_reviewlog_changelist"), "Review log"),
        (reverse("admin:billing_rerate_changelist"), "Re-ratings"),
        (reverse("admin:journals_journalexport_changelist"), "Journal exports"),
    ):
        html = _html(vc, url)
        assert f"<h1>{title}</h1>" in html, url
        assert "Select " not in html.split("<h1>", 1)[1].split("</h1>", 1)[0]
    from billing.models import CollectedObject

    assert CollectedObject._meta.verbose_name_plural == "collected files"


def test_the_statements_list_and_page_use_human_labels(vc, reference_month):
    from statements import services

    services.statements_generate(period="2025-01")
    html = _html(vc, reverse("admin:statements_statement_changelist"))
    headers = _headers(html)
    for label in ("Statement", "PI", "Amount due", "Held back", "State", "PDF"):
        assert label in headers, (label, headers)
    assert len(headers) <= 10  # nine columns and the selection box fit at 1280 px
    from statements.models import Statement

    statement = Statement.objects.first()
    page = _html(vc, reverse("admin:statements_statement_change", args=[statement.pk]))
    assert "PI email:" in page and "PDF checksum:" in page
    assert "Pi email" not in page and "Pdf sha256" not in page


def test_project_and_mapping_columns_read_as_words(vc):
    from tests.factories import ProjectFactory

    project = ProjectFactory()
    billing_services.account_mapping_set(
        sub_account_id="123456789012", project_id=project.project_id, pi_email=project.pi.email
    )
    headers = _headers(_html(vc, reverse("admin:billing_project_changelist")))
    assert "PI" in headers and "Active" in headers and "Pi" not in headers
    headers = _headers(_html(vc, reverse("admin:billing_accountmapping_changelist")))
    assert "Sub-account id" in headers and "Sub account id" not in headers


def test_statements_and_journal_are_in_the_top_navigation(vc):
    nav = re.search(r'<nav class="ocb-nav".*?</nav>', _html(vc, reverse("admin:index")), re.S).group(0)
    assert f'href="{reverse("admin:statements_statement_changelist")}">Statements<' in nav
    assert f'href="{reverse("admin:journals_journalexport_changelist")}">Journal<' in nav
    assert f'href="{reverse("ocb_help")}"' in nav


def test_the_admin_home_lists_billing_first_and_the_technical_apps_under_system(ac):
    html = _html(ac, reverse("admin:index"))
    captions = re.findall(r'<caption>\s*<a href="[^"]*" class="section"[^>]*>(.*?)</a>', html, re.S)
    captions = [c.strip() for c in captions]
    assert captions[0] == "Billing"
    assert captions.index("Statements") < captions.index("Journals") < captions.index("System")
    assert captions[-1] == "System"
    for technical in ("Authentication and Authorization", "Axes", "Auditlog"):
        assert technical not in captions
    system = html.split('class="section" title="Models in the System application"', 1)[1]
    for model in ("Users", "Access attempts"):
        assert model in system


def test_the_billing_models_come_in_the_order_of_the_month(ac):
    html = _html(ac, reverse("admin:index"))
    billing = html.split("Models in the Billing application", 1)[1].split("</table>", 1)[0]
    names = re.findall(r'<th scope="row" id="billing-[^"]*">\s*<a href="[^"]*"[^>]*>(.*?)</a>', billing)
    assert names[:3] == ["Billing periods", "Charges", "Review log"]
    assert names[-1] == "Billing settings"


def test_a_favicon_on_the_admin_and_the_portal(vc):
    admin_page = _html(vc, reverse("admin:index"))
    portal_page = Client().get(reverse("portal:login")).content.decode()
    for page in (admin_page, portal_page):
        assert re.search(r'<link rel="icon" href="[^"]*openchargeback/favicon\.svg"', page)
    static = Path(django_settings.BASE_DIR) / "static" / "openchargeback"
    assert (static / "favicon.svg").read_text().startswith("<svg")
    assert (static / "favicon-32.png").read_bytes().startswith(b"\x89PNG")
