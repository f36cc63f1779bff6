"""Emails to PIs through a real SMTP server (aiosmtpd): one per PI with all their PDFs, HTML and
text parts, subject from settings; never twice; failures recorded and resendable."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from billing import services as billing_services
from billing.models import Charge
from statements import services, tasks
from statements.models import Delivery, Statement

from .conftest import REFERENCE_PIS, generate_and_render, pdf_text

pytestmark = pytest.mark.django_db


def send_all(period: str = "2025-01", **kwargs) -> services.QueueOutcome:
    queue = services.deliveries_queue(period=period, **kwargs)
    tasks.dispatch([], [d.pk for d in queue.to_send])
    return queue


def test_seven_emails_each_with_that_pis_pdfs(generated, smtp_server):
    send_all()
    by_recipient = smtp_server.by_recipient()
    assert sorted(by_recipient) == REFERENCE_PIS
    assert all(len(messages) == 1 for messages in by_recipient.values())
    for recipient, (message,) in by_recipient.items():
        statements = list(Statement.objects.filter(pi_email=recipient).order_by("sequence"))
        attachments = [
            part for part in message.iter_attachments() if part.get_content_type() == "application/pdf"
        ]
        assert sorted(a.get_filename() for a in attachments) == sorted(s.pdf_filename for s in statements)
        for attachment, statement in zip(
            sorted(attachments, key=lambda a: a.get_filename()),
            sorted(statements, key=lambda s: s.pdf_filename),
            strict=True,
        ):
            data = attachment.get_content()
            assert data.startswith(b"%PDF")
            assert f"{statement.billed_total:,.2f}" in pdf_text(data)
        text = message.get_body(preferencelist=("plain",)).get_content()
        html = message.get_body(preferencelist=("html",)).get_content()
        for statement in statements:
            for figure in (statement.list_total, statement.discount_total, statement.billed_total):
                assert f"{figure:,.2f}" in text and f"{figure:,.2f}" in html
            assert statement.project_code in text and statement.project_code in html
        assert message["Subject"].startswith("Research Computing: your statement")
        assert message["Message-ID"]
    zorp = by_recipient["zorp.blinkman@example.edu"][0]
    body = zorp.get_body(preferencelist=("plain",)).get_content()
    assert "$2,720.00" in body and "$412.25 (15 %)" in body and "$2,307.75" in body
    assert "Total due for January 2025: $6,460.00" in body

    deliveries = Delivery.objects.all()
    assert deliveries.count() == 7
    assert all(d.state == "sent" and d.attempts == 1 and d.message_id and d.sent_at for d in deliveries)
    received_ids = {str(m["Message-ID"]) for m in smtp_server.messages}
    assert received_ids == {d.message_id for d in deliveries}
    assert set(Statement.objects.values_list("state", flat=True)) == {"sent"}


def test_repeated_send_and_repeated_task_never_email_twice(generated, smtp_server):
    send_all()
    assert len(smtp_server.messages) == 7
    # Again: nothing new to send.
    queue = send_all()
    assert queue.to_send == [] and sorted(queue.already_sent) == REFERENCE_PIS
    # The same task delivered again (a broker retry) finds the delivery claimed.
    for delivery in Delivery.objects.all():
        assert tasks.send_delivery.apply(args=[delivery.pk]).get() == "sent"
        assert services.delivery_send(delivery_id=delivery.pk) == "sent"
    assert len(smtp_server.messages) == 7
    assert set(Delivery.objects.values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_of_one_delivery_email_once(reference_month, smtp_server):
    if (connection.vendor == "sqlite" and connection.settings_dict["NAME"] in ("", ":memory:")) or (
        "mode=memory" in str(connection.settings_dict.get("NAME"))
    ):
        pytest.skip("threads cannot share an in-memory SQLite test database")
    generate_and_render("2025-01", pi_email="zorp.blinkman@example.edu")
    (delivery,) = services.deliveries_queue(period="2025-01", pi_email="zorp.blinkman@example.edu").queued
    results: list[str] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        results.append(services.delivery_send(delivery_id=delivery.pk))
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(smtp_server.messages) == 1
    delivery.refresh_from_db()
    assert delivery.state == "sent" and delivery.attempts == 1


def test_a_claimed_delivery_is_not_sent_again(generated, smtp_server):
    (delivery,) = services.deliveries_queue(period="2025-01", pi_email="tarn.voxley@example.edu").queued
    Delivery.objects.filter(pk=delivery.pk).update(state="sending", claimed_at=timezone.now())
    assert services.delivery_send(delivery_id=delivery.pk) == "sending"
    assert smtp_server.messages == []
    # Left "sending" past the stale limit (its worker died): failed, never re-sent by itself.
    Delivery.objects.filter(pk=delivery.pk).update(claimed_at=timezone.now() - dt.timedelta(hours=1))
    assert services.deliveries_mark_interrupted() == 1
    delivery.refresh_from_db()
    assert delivery.state == "failed" and "may have been delivered" in delivery.error
    assert smtp_server.messages == []


def test_failure_is_recorded_and_resendable(generated, smtp_server, settings):
    settings.EMAIL_PORT = smtp_server.port + 1 if smtp_server.port < 65535 else 1  # nobody listens there
    send_all()
    failed = Delivery.objects.filter(state="failed")
    assert failed.count() == 7
    assert all(d.attempts == 1 and d.error and d.failed_at for d in failed)
    assert set(Statement.objects.values_list("state", flat=True)) == {"issued"}
    # Not re-sent without asking.
    settings.EMAIL_PORT = smtp_server.port
    queue = send_all()
    assert queue.to_send == [] and len(queue.failed_before) == 7
    assert smtp_server.messages == []
    # Resend failed (the CLI's --resend-failed).
    queue = send_all(resend_failed=True)
    assert queue.requeued == 7
    assert len(smtp_server.messages) == 7
    assert all(d.state == "sent" and d.attempts == 2 for d in Delivery.objects.all())


def test_revised_statement_sends_a_new_email_with_current_versions(generated, smtp_server):
    send_all()
    charge = Charge.objects.filter(project_code="protein-folding-ml").first()
    billing_services.charges_reject(charge_ids=[charge.pk], note="not ours")
    generate_and_render("2025-01")
    send_all()
    assert len(smtp_server.messages) == 8
    last = smtp_server.messages[-1]
    assert str(last["To"]) == "zorp.blinkman@example.edu"
    names = sorted(a.get_filename() for a in last.iter_attachments())
    assert names == [
        "2025-01_zorp.blinkman_genomics-sequencing.pdf",
        "2025-01_zorp.blinkman_protein-folding-ml_v2.pdf",
    ]
    assert "revised" in last.get_body(preferencelist=("plain",)).get_content()


def test_statements_out_of_date_are_not_sent(generated, smtp_server):
    charge = Charge.objects.filter(project_code="exoplanet-survey").first()
    billing_services.charges_reject(charge_ids=[charge.pk], note="duplicate")
    from chargeback.errors import Refused

    with pytest.raises(Refused, match="out of date"):
        services.deliveries_queue(period="2025-01")
    assert smtp_server.messages == []


def test_a_delivery_superseded_before_sending_fails_instead(generated, smtp_server):
    (delivery,) = services.deliveries_queue(period="2025-01", pi_email="plex.wombsworth@example.edu").queued
    charge = Charge.objects.filter(project_code="exoplanet-survey").first()
    billing_services.charges_reject(charge_ids=[charge.pk], note="duplicate")
    generate_and_render("2025-01")
    assert services.delivery_send(delivery_id=delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert "superseded before sending" in delivery.error
    assert smtp_server.messages == []
    send_all(pi_email="plex.wombsworth@example.edu")
    assert len(smtp_server.messages) == 1


def test_subject_comes_from_the_settings_template(generated, smtp_server, settings):
    settings.OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT = (
        "[{{ period }}] {{ pi_name }}: {{ count }} statement(s), {{ total }}"
    )
    send_all(pi_email="zorp.blinkman@example.edu")
    (message,) = smtp_server.messages
    assert message["Subject"] == "[2025-01] zorp.blinkman@example.edu: 2 statement(s), $6,460.00"


def test_subject_and_text_are_not_html_escaped(generated, smtp_server, settings):
    from billing.models import PI

    settings.OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT = "Statements for {{ pi_name }}"
    PI.objects.filter(email="tarn.voxley@example.edu").update(name="Tarn O'Voxley & Co")
    # The name is part of what a statement says: a new version.
    assert generate_and_render("2025-01").count("revised") == 1
    send_all(pi_email="tarn.voxley@example.edu")
    (message,) = smtp_server.messages
    assert message["Subject"] == "Statements for Tarn O'Voxley & Co"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "Dear Tarn O'Voxley & Co," in text
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "Tarn O&#x27;Voxley &amp; Co" in html


def test_send_renders_missing_pdfs_first(reference_month, smtp_server):
    from statements import services as s

    s.statements_generate(period="2025-01")  # no PDFs rendered
    call_command("send", "-p", "2025-01", "--pi", "tarn.voxley@example.edu", verbosity=0)
    (message,) = smtp_server.messages
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content().startswith(b"%PDF")
    assert Statement.objects.get(pi_email="tarn.voxley@example.edu").pdf


def test_file_backend_by_default(generated, settings, tmp_path):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = tmp_path / "mail"
    send_all(pi_email="frin.bumberly@example.edu")
    files = list((tmp_path / "mail").iterdir())
    assert len(files) == 1
    assert "frin.bumberly@example.edu" in files[0].read_text()
