"""The journals admin: settings, a custom format edited through the admin, the export page
(preview, refusal, export and download) and the kept exports."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Permission

from journals.models import JournalExport, JournalFormat, JournalSettings
from tests.factories import UserFactory

from .conftest import REFERENCE_TOTAL, amount, parse, records, set_credit_funds

pytestmark = pytest.mark.django_db

EXPORT_PAGE = "/admin/journals/journalexport/export/"


def settings_form(**changes):
    data = {
        "fund_org_regex": "",
        "default_account": "",
        "account_tag": "account_code",
        "account_regex": "",
        "debit_description": "{source} {period} Research Computing Charges",
        "credit_description": "{source} {period} Research Computing Charges",
        "description_max_length": "35",
        "reference_template": "",
    }
    data.update(changes)
    return data


def format_form(**changes):
    data = {
        "name": "banner",
        "description": "Banner journal upload",
        "rows": "entries",
        "delimiter": ",",
        "header_template": "FUND,ORGN,ACCT,DR_AMT,CR_AMT,DESCRIPTION\n",
        "row_template": "{{ entry.fund }},{{ entry.orgn }},{{ entry.account }},{{ entry.debit }},"
        "{{ entry.credit }},{{ entry.description }}\n",
        "is_active": "on",
    }
    data.update(changes)
    return data


def download(client, response) -> bytes:
    assert response.status_code == 302
    assert "/download/" in response["Location"]
    file = client.get(response["Location"])
    assert file.status_code == 200
    assert file["Content-Disposition"].startswith("attachment;")
    return b"".join(file.streaming_content)


def test_settings_page_validates_and_saves(admin_client):
    response = admin_client.get("/admin/journals/journalsettings/")
    assert response.status_code == 302 and response["Location"].endswith("/journalsettings/1/change/")
    url = response["Location"]
    bad = admin_client.post(url, settings_form(fund_org_regex="(?P<colour>x)", debit_description="{oops}"))
    assert bad.status_code == 200
    html = bad.content.decode()
    assert "unknown named group(s) colour" in html and "unknown placeholder {oops}" in html
    assert JournalSettings.objects.get().fund_org_regex == ""
    good = admin_client.post(
        url, settings_form(fund_org_regex=r"(?P<orgn>[A-Z]+)-(?P<fund>.+)", default_account="54000")
    )
    assert good.status_code == 302
    saved = JournalSettings.objects.get()
    assert saved.fund_org_regex == r"(?P<orgn>[A-Z]+)-(?P<fund>.+)" and saved.default_account == "54000"


def test_custom_format_edited_in_the_admin_and_used_for_an_export(journal_month, admin_client):
    add = admin_client.get("/admin/journals/journalformat/add/")
    assert add.status_code == 200
    html = add.content.decode()
    assert "Fund,Orgn,Account,Program" in html  # a new format starts as the gl layout
    assert "amount_abs" in html and "exported_at" in html  # the variables are listed

    created = admin_client.post("/admin/journals/journalformat/add/", format_form())
    assert created.status_code == 302, created.content.decode()[:2000]
    fmt = JournalFormat.objects.get(name="banner")

    # Edit: a broken template is refused with the reason, nothing saved...
    change_url = f"/admin/journals/journalformat/{fmt.pk}/change/"
    broken = admin_client.post(change_url, format_form(row_template="{{ entry.fnud }},{{ entry.fund }}"))
    assert broken.status_code == 200
    assert "unknown variable(s) entry.fnud" in broken.content.decode()
    fmt.refresh_from_db()
    assert "fnud" not in fmt.row_template
    # ...a good edit is saved.
    edited = admin_client.post(
        change_url,
        format_form(
            header_template="FUND,ORGN,ACCT,DR_AMT,CR_AMT,DESCRIPTION,DC\n",
            row_template="{{ entry.fund }},{{ entry.orgn }},{{ entry.account }},{{ entry.debit }},"
            "{{ entry.credit }},{{ entry.description|upper }},{{ entry.dc }}\n",
        ),
    )
    assert edited.status_code == 302
    fmt.refresh_from_db()
    assert "entry.dc" in fmt.row_template
    assert LogEntry.objects.get_for_object(fmt).count() == 2

    # The format is offered on the export page and gives its layout.
    page = admin_client.get(f"{EXPORT_PAGE}?period=2025-01&format=banner")
    assert page.status_code == 200 and '<th scope="col">DR_AMT</th>' in page.content.decode()
    data = download(
        admin_client, admin_client.post(f"{EXPORT_PAGE}run/", {"period": "2025-01", "format": "banner"})
    )
    rows = records(data)
    assert parse(data)[0] == ["FUND", "ORGN", "ACCT", "DR_AMT", "CR_AMT", "DESCRIPTION", "DC"]
    assert sum(amount(r["DR_AMT"]) for r in rows) == sum(amount(r["CR_AMT"]) for r in rows) == REFERENCE_TOTAL
    assert (
        rows[0]["DESCRIPTION"] == "AWS 2025-01 RESEARCH COMPUTING" and rows[0]["DC"] == "D"
    )  # cut at a word
    export = JournalExport.objects.get()
    assert export.journal_format == fmt and export.format_name == "banner"


def test_export_page_previews_exports_and_downloads_again(journal_month, admin_client, admin_user):
    listing = admin_client.get("/admin/journals/journalexport/")
    assert listing.status_code == 200 and "Export a journal" in listing.content.decode()

    page = admin_client.get(EXPORT_PAGE)  # defaults: the latest closed period, gl
    assert page.status_code == 200
    html = page.content.decode()
    assert "Journal of 2025-01 · gl" in html
    assert "10 statements totalling <strong>$20,227.00</strong>" in html
    assert "4 credits <strong>$20,227.00</strong>" in html and "· balanced" in html
    assert "<td>ADNI-PILOT-2024</td>" in html and "(more follow)" not in html
    assert 'value="Export and download">' in html  # enabled

    summary = admin_client.get(f"{EXPORT_PAGE}?period=2025-01&format=summary").content.decode()
    assert "first 20 rows (more follow)" in summary

    data = download(
        admin_client, admin_client.post(f"{EXPORT_PAGE}run/", {"period": "2025-01", "format": "gl"})
    )
    export = JournalExport.objects.get()
    assert export.actor == admin_user and export.actor_name == admin_user.username
    assert export.debit_total == export.credit_total == REFERENCE_TOTAL
    with export.file.open("rb") as fh:
        assert fh.read() == data
    assert LogEntry.objects.filter(object_pk=str(export.pk), action=LogEntry.Action.ACCESS).count() == 1

    # Listed, with its file, and downloadable again (same bytes).
    listing = admin_client.get("/admin/journals/journalexport/").content.decode()
    assert export.filename in listing and f"/admin/journals/journalexport/{export.pk}/download/" in listing
    again = admin_client.get(f"/admin/journals/journalexport/{export.pk}/download/")
    assert b"".join(again.streaming_content) == data
    detail = admin_client.get(f"/admin/journals/journalexport/{export.pk}/change/").content.decode()
    assert "2025-01-0001 v1" in detail and export.sha256 in detail
    assert "Earlier exports of 2025-01" in admin_client.get(EXPORT_PAGE).content.decode()


def test_export_page_shows_why_a_journal_is_refused(reference_month, admin_client):
    page = admin_client.get(f"{EXPORT_PAGE}?period=2025-01&format=gl").content.decode()
    assert "Refused: this journal cannot be exported yet" in page
    assert "billable charges but no statement" in page
    assert 'value="Export and download" disabled>' in page
    response = admin_client.post(f"{EXPORT_PAGE}run/", {"period": "2025-01", "format": "gl"}, follow=True)
    assert "The journal of 2025-01 cannot be exported" in response.content.decode()
    assert not JournalExport.objects.exists()
    unknown = admin_client.get(f"{EXPORT_PAGE}?period=2025-01&format=nope").content.decode()
    assert "unknown journal format" in unknown


def test_export_page_refuses_an_empty_account_where_the_layout_writes_one(journal_month, admin_client):
    set_credit_funds(account="")
    page = admin_client.get(f"{EXPORT_PAGE}?period=2025-01&format=gl").content.decode()
    assert "Refused: this journal cannot be exported yet" in page
    assert (
        "no account code for debit of" in page and "set the default account in the journal settings" in page
    )
    assert 'value="Export and download" disabled>' in page
    response = admin_client.post(f"{EXPORT_PAGE}run/", {"period": "2025-01", "format": "gl"}, follow=True)
    assert "The journal of 2025-01 cannot be exported" in response.content.decode()
    assert not JournalExport.objects.exists()
    summary = admin_client.get(f"{EXPORT_PAGE}?period=2025-01&format=summary").content.decode()
    assert "Refused" not in summary and 'value="Export and download">' in summary


def test_viewers_preview_but_cannot_export(journal_month, client):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_journalexport"))
    client.force_login(viewer)
    page = client.get(EXPORT_PAGE)
    assert page.status_code == 200 and "Export and download" not in page.content.decode()
    assert client.post(f"{EXPORT_PAGE}run/", {"period": "2025-01", "format": "gl"}).status_code == 403
    assert not JournalExport.objects.exists()
