"""The finance office's month in the browser only (issue 14): a billing admin uploads the
reference month, reviews it (approve, reject, correct), previews, issues and sends the statements
(emails received by a real SMTP server), exports the journal and finalizes, without a command.
A reviewer and a viewer are shown what they may not do."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from accounts import roles
from billing.models import BillingPeriod, Charge, ChargeFlag, FlagReason, Source
from journals.models import JournalExport
from statements.models import Delivery, Statement, StatementRun
from tests.conftest import REFERENCE_DIR

pytestmark = pytest.mark.django_db

PERIOD = "2025-01"
CREDIT = {
    "aws": "IT-CLOUD-AWS",
    "azure": "IT-CLOUD-AZURE",
    "hpc": "IT-HPC",
    "it_storage": "IT-STORAGE",
    "storage": "RC-STORAGE",
}


def _client(role: str) -> tuple[Client, User]:
    from accounts.services import roles_ensure

    groups = roles_ensure()
    name = roles.role_slug(role)
    user = User.objects.create_user(name, f"{name}@university.example", "pw", is_staff=True)
    user.groups.add(groups[role] if isinstance(groups, dict) else Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client, user


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def _period() -> BillingPeriod:
    return BillingPeriod.objects.get(period=PERIOD)


def _upload_reference_month(client: Client) -> None:
    for path in sorted(REFERENCE_DIR.glob("*.csv")):
        response = client.post(
            reverse("admin:billing_import_upload"),
            {
                "file": SimpleUploadedFile(path.name, path.read_bytes()),
                "source": path.name.rsplit("_", 1)[0],
                "period": PERIOD,
            },
            HTTP_ACCEPT="application/json",
        )
        assert response.status_code == 200, response.content
        result = response.json()["results"][0]
        assert result["ok"] and result["status"] == "completed", result.get("error") or result


def _set_up_sources(client: Client) -> None:
    """Credit fund/org and account of each source, through the Source admin."""
    for source in Source.objects.order_by("slug"):
        url = reverse("admin:billing_source_change", args=[source.pk])
        data = {
            "display_name": source.display_name or source.slug,
            "filename_pattern": source.filename_pattern,
            "fund_org": CREDIT[source.slug],
            "account": "",
        }
        response = client.post(url, data, follow=True)
        assert response.status_code == 200
        # Saved, with a warning: the journal needs an account too.
        assert any("journal needs them" in m for m in _messages(response)), _messages(response)
        data["account"] = "54000"
        response = client.post(url, data, follow=True)
        assert not any("journal needs them" in m for m in _messages(response))
    assert set(Source.objects.values_list("fund_org", flat=True)) == set(CREDIT.values())


def _flag(charge: Charge, reason: str) -> None:
    """A charge the reference month leaves clean, flagged as an import would have flagged it."""
    Charge.objects.filter(pk=charge.pk).update(review_state=Charge.ReviewState.FLAGGED)
    ChargeFlag.objects.create(charge=charge, reason=reason)


def _decide(client: Client, action: str, ids: list[int], note: str = "checked") -> tuple[str, list[str]]:
    url = reverse("admin:billing_charge_decide")
    query = {"action": action, "ids": ",".join(map(str, ids)), "next": reverse("admin:billing_charge_review")}
    page = client.get(url, query)
    assert page.status_code == 200
    response = client.post(url, {**query, "note": note}, follow=True)
    assert response.status_code == 200
    return page.content.decode(), _messages(response)


def test_the_month_in_the_browser(smtp_server, settings, tmp_path):
    settings.OPENCHARGEBACK_PDF_DIR = str(tmp_path / "pdfs")
    admin, _admin_user = _client(roles.BILLING_ADMIN)

    # 1. Upload the reference month.
    _upload_reference_month(admin)
    period = _period()
    assert Charge.objects.filter(period=period).count() == 59
    _set_up_sources(admin)

    # 2. Review. Three charges stand for what an import flags in a real month.
    exo = Charge.objects.filter(project_code="exoplanet-survey").order_by("pk")
    approved, rejected, misattributed = exo[0], exo[1], exo[2]
    for charge in (approved, rejected):
        _flag(charge, FlagReason.AMBIGUOUS_TAGS)
    _flag(misattributed, FlagReason.MISSING_FUND_ORG)
    Charge.objects.filter(pk=misattributed.pk).update(fund_org="")
    Charge.objects.filter(pk=misattributed.pk).update(project=None, project_code="")

    page, messages = _decide(admin, "approve", [approved.pk])
    assert "The journal will refuse" not in page
    assert any("Approved 1 charge" in m for m in messages)
    assert not any("must be regenerated" in m for m in messages)  # nothing issued yet
    _page, messages = _decide(admin, "reject", [rejected.pk], note="duplicate of another charge")
    assert any("Rejected 1 charge" in m for m in messages)

    # Approving the charge without a fund/org would not reach the ledger: the page says so and
    # offers the correction instead.
    page = admin.get(
        reverse("admin:billing_charge_decide"), {"action": "approve", "ids": str(misattributed.pk)}
    ).content.decode()
    assert "The journal will refuse 1 of these charge" in page
    correct_url = reverse("admin:billing_charge_correct", args=[misattributed.pk])
    assert correct_url in page
    response = admin.post(
        correct_url,
        {
            "pi_email": "plex.wombsworth@example.edu",
            "project_id": "exoplanet-survey",
            "fund_org": "NASA-EXOP-2024",
            "note": "tag lost in the export",
        },
        follow=True,
    )
    assert response.status_code == 200
    misattributed.refresh_from_db()
    assert misattributed.fund_org == "NASA-EXOP-2024"
    assert misattributed.review_state in (Charge.ReviewState.OK, Charge.ReviewState.APPROVED)

    # 3. Preview: what would be issued, with DRAFT PDFs; nothing is written.
    period_page = admin.get(reverse("admin:billing_billingperiod_change", args=[period.pk])).content.decode()
    for button in ("Preview statements", "Issue statements", "Send unsent", "Resend failed"):
        assert button in period_page
    preview = admin.post(reverse("admin:statements_statement_preview"), {"period": PERIOD})
    assert preview.status_code == 200
    html = preview.content.decode()
    assert "<strong>10 new</strong>" in html and "<strong>0 revised</strong>" in html
    assert not Statement.objects.exists()
    preview_run = StatementRun.objects.get()
    assert (preview_run.kind, preview_run.state, preview_run.requested_by_name) == (
        "preview",
        "done",
        "billing-admin",
    )
    assert preview_run.summary.startswith("10 current statement(s): 10 new, 0 revised")
    drafts = re.findall(r'href="(/admin/statements/statement/preview/2025-01/[^"]+\.pdf)"', html)
    assert len(drafts) == 10
    draft = admin.get(drafts[0])
    assert b"".join(draft.streaming_content).startswith(b"%PDF")
    assert admin.get("/admin/statements/statement/preview/2025-01/nope.pdf").status_code == 404
    assert admin.get("/admin/statements/statement/preview/2025-01/..%2Fsecret.pdf").status_code != 200

    # 4. Issue: a task with a progress page that lists what was issued.
    response = admin.post(reverse("admin:statements_statement_run", args=["issue"]), {"period": PERIOD})
    assert response.status_code == 302
    run_page = admin.get(response["Location"])
    assert run_page.status_code == 200
    html = run_page.content.decode()
    assert 'id="ocb-run"' in html and "ocb-progress-bar" in html and "Done." in html
    assert "2025-01-0001 v1" in html and html.count("<td>new</td>") == 10
    status = admin.get(response["Location"] + "status/").json()
    assert status["finished"] and status["state"] == "done"
    assert status["pdfs"] == {"rendered": 10, "total": 10, "failed": 0}
    # The run is a row: done, its PDFs counted, what it issued kept with it.
    issue_run = StatementRun.objects.get(kind="issue")
    assert response["Location"].endswith(f"/runs/{issue_run.pk}/")
    assert (issue_run.state, issue_run.pdfs_total, issue_run.pdfs_rendered, issue_run.pdfs_failed) == (
        "done",
        10,
        10,
        0,
    )
    assert len(issue_run.result["issued"]) == 10 and issue_run.requested_by.username == "billing-admin"
    assert issue_run.started_at <= issue_run.dispatched_at <= issue_run.finished_at
    current = Statement.objects.exclude(state=Statement.State.SUPERSEDED)
    assert current.count() == 10 and not current.filter(pdf="").exists()
    # The rejected charge is billed by nobody; the approved and corrected ones are.
    exo_statement = current.get(project_code="exoplanet-survey")
    assert exo_statement.billed_total == Decimal("5100.00") - rejected.billed_cost

    # Approving in a period that has statements: they must be issued again, and the message links there.
    another = Charge.objects.filter(project_code="labor-economics").order_by("pk").first()
    _flag(another, FlagReason.AMBIGUOUS_TAGS)
    _page, messages = _decide(admin, "approve", [another.pk])
    notice = next(m for m in messages if "must be regenerated" in m)
    assert reverse("admin:billing_billingperiod_change", args=[period.pk]) + "#ocb-statement-runs" in notice

    # 5. Send unsent: one email per PI, received by the SMTP server.
    response = admin.post(reverse("admin:statements_statement_run", args=["send"]), {"period": PERIOD})
    run = admin.get(response["Location"]).content.decode()
    assert "Sent" in run and "plex.wombsworth@example.edu" in run
    assert len(smtp_server.messages) == 7
    assert Delivery.objects.filter(state=Delivery.State.SENT).count() == 7
    send_run = StatementRun.objects.get(kind="send")
    assert (send_run.state, send_run.emails_total, send_run.emails_sent, send_run.emails_failed) == (
        "done",
        7,
        7,
        0,
    )
    assert (
        sorted(send_run.result["sent"]) == sorted(set(send_run.result["sent"]))
        and len(send_run.result["sent"]) == 7
    )
    recipients = sorted(to for _sender, tos in smtp_server.envelopes for to in tos)
    assert "zorp.blinkman@example.edu" in recipients
    # Nothing left to send; nothing failed to resend.
    response = admin.post(reverse("admin:statements_statement_run", args=["send"]), {"period": PERIOD})
    assert "0 email(s) to send" in admin.get(response["Location"]).content.decode()
    response = admin.post(reverse("admin:statements_statement_run", args=["resend"]), {"period": PERIOD})
    assert admin.get(response["Location"] + "status/").json()["emails"]["total"] == 0
    assert len(smtp_server.messages) == 7
    assert list(StatementRun.objects.order_by("id").values_list("kind", "state")) == [
        ("preview", "done"),
        ("issue", "done"),
        ("send", "done"),
        ("send", "done"),
        ("resend", "done"),
    ]

    # 6. Export the journal (balanced at the statements' total) and 7. finalize.
    response = admin.post(
        reverse("admin:journals_journalexport_run"), {"period": PERIOD, "format": "gl"}, follow=False
    )
    assert response.status_code == 302, _messages(admin.get(response["Location"]))
    export = JournalExport.objects.get()
    total = sum(s.billed_total for s in current)
    assert export.debit_total == export.credit_total == total
    response = admin.post(
        reverse("admin:billing_billingperiod_close", args=[period.pk]), {"note": "month end"}
    )
    assert response.status_code == 302
    response = admin.post(
        reverse("admin:billing_billingperiod_finalize", args=[period.pk]),
        {"confirm": "on", "note": ""},
        follow=True,
    )
    assert _period().status == BillingPeriod.Status.FINALIZED, _messages(response)
    # A finalized period has no statement runs.
    period_page = admin.get(reverse("admin:billing_billingperiod_change", args=[period.pk])).content.decode()
    assert "Issue statements" not in period_page


@pytest.fixture
def issued(reference_month):
    from statements.services import statements_generate

    statements_generate(period=PERIOD)
    return reference_month


@pytest.mark.parametrize("role", [roles.REVIEWER, roles.VIEWER])
def test_reviewers_and_viewers_cannot_run_statements(issued, role):
    client, _user = _client(role)
    period = _period()
    page = client.get(reverse("admin:billing_billingperiod_change", args=[period.pk])).content.decode()
    listing = client.get(reverse("admin:statements_statement_changelist")).content.decode()
    for html in (page, listing):
        assert "Issue statements" not in html and "Preview statements" not in html
        assert "Resend failed" not in html
    assert client.post(reverse("admin:statements_statement_preview"), {"period": PERIOD}).status_code == 403
    for kind in ("issue", "send", "resend"):
        assert (
            client.post(
                reverse("admin:statements_statement_run", args=[kind]), {"period": PERIOD}
            ).status_code
            == 403
        )
    assert client.get(reverse("admin:statements_statement_run_status", args=["x" * 32])).status_code == 403
    assert not Delivery.objects.exists()
    # Neither closes nor finalizes a period.
    assert client.post(reverse("admin:billing_billingperiod_close", args=[period.pk]), {}).status_code == 403
    assert (
        client.post(
            reverse("admin:billing_billingperiod_finalize", args=[period.pk]), {"confirm": "on"}
        ).status_code
        == 403
    )
    charge = Charge.objects.first()
    decide = reverse("admin:billing_charge_decide")
    if role == roles.VIEWER:
        # A viewer reviews nothing and exports no journal.
        assert client.post(decide, {"action": "reject", "ids": charge.pk, "note": "x"}).status_code == 403
        assert client.post(reverse("admin:journals_journalexport_run"), {"period": PERIOD}).status_code == 403
    else:
        # A reviewer decides charges but exports no journal.
        assert client.post(reverse("admin:journals_journalexport_run"), {"period": PERIOD}).status_code == 403


def test_runs_are_csrf_protected_and_audited(issued, caplog):
    client, _user = _client(roles.BILLING_ADMIN)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(_user)
    assert (
        strict.post(reverse("admin:statements_statement_run", args=["issue"]), {"period": PERIOD}).status_code
        == 403
    )
    assert client.get(reverse("admin:statements_statement_run", args=["issue"])).status_code == 405
    with caplog.at_level("INFO"):
        client.post(reverse("admin:statements_statement_run", args=["issue"]), {"period": PERIOD})
        client.post(reverse("admin:statements_statement_preview"), {"period": PERIOD})
    events = {(getattr(r, "event", ""), getattr(r, "actor", "")) for r in caplog.records}
    assert ("statements_run_started", "billing-admin") in events
    assert ("statements_run_dispatched", "billing-admin") in events
    assert ("statements_previewed", "billing-admin") in events


def test_issue_on_a_finalized_period_is_refused_on_the_run_page(issued):
    client, _user = _client(roles.BILLING_ADMIN)
    BillingPeriod.objects.filter(period=PERIOD).update(status=BillingPeriod.Status.FINALIZED)
    response = client.post(reverse("admin:statements_statement_run", args=["issue"]), {"period": PERIOD})
    page = client.get(response["Location"]).content.decode()
    assert "Refused: period 2025-01 is finalized" in page
    run = StatementRun.objects.get()
    assert (run.state, run.error, run.result) == (
        "failed",
        "period 2025-01 is finalized: its statements cannot be regenerated",
        {"refused": True},
    )
    assert run.finished_at is not None
    assert (
        client.post(
            reverse("admin:statements_statement_run", args=["issue"]), {"period": "1999-01"}
        ).status_code
        == 404
    )
