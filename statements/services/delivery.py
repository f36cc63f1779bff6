"""Emailing statements: queueing deliveries, the message, sending and resending."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection, make_msgid
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.selectors import portal_link
from billing import selectors as billing_selectors
from billing.models import BillingPeriod, BillingSettings
from chargeback.actors import actor_fields
from chargeback.emails import is_plain_email
from chargeback.errors import Refused
from chargeback.money import ZERO, format_money
from chargeback.percent import discount_percent_text

from .. import email_templates, selectors
from ..models import Delivery, Statement
from ._common import _pi_email, logger
from .rendering import statement_render_pdf


@dataclass
class QueueOutcome:
    period: str
    queued: list[Delivery] = field(default_factory=list)  # new or re-queued, to send now
    pending: list[Delivery] = field(default_factory=list)  # already queued/sending before
    requeued: int = 0
    already_sent: list[str] = field(default_factory=list)  # PI emails with nothing new to send
    failed_before: list[Delivery] = field(default_factory=list)  # failed, not requeued
    interrupted: int = 0  # 'sending' too long: marked failed (outcome unknown)

    @property
    def to_send(self) -> list[Delivery]:
        return self.queued + self.pending


def _set_key(statement_ids: Iterable[int]) -> str:
    return hashlib.sha256(",".join(str(i) for i in sorted(statement_ids)).encode()).hexdigest()


def deliveries_mark_interrupted(*, period: BillingPeriod | None = None) -> int:
    """Deliveries left in 'sending' longer than OPENCHARGEBACK_SENDING_STALE_SECONDS (the worker
    died mid-send): marked failed, never re-sent automatically, since the message may have gone."""
    qs = Delivery.objects.filter(
        state=Delivery.State.SENDING, claimed_at__lt=selectors.sending_stale_before()
    )
    if period is not None:
        qs = qs.filter(period=period)
    return qs.update(
        state=Delivery.State.FAILED,
        failed_at=timezone.now(),
        error="interrupted while sending: the message may have been delivered (see its message id); "
        "check the mail log before resending",
    )


def deliveries_queue(
    *,
    period: str,
    pi_email: str | None = None,
    resend_failed: bool = False,
    actor: Any = None,
    actor_name: str = "",
) -> QueueOutcome:
    """Queue one delivery per PI whose current statements include unsent ones: a single email with
    all of the PI's current statements of the period. A PI whose statements were all sent gets
    nothing; a failed delivery is queued again only with `resend_failed`. Statements must be up
    to date (generate first)."""
    period_obj = billing_selectors.period_get(period)
    email = _pi_email(pi_email)
    changes = selectors.statement_changes(period_obj, pi_email=email)
    if not changes.up_to_date:
        stale = len(changes.new) + len(changes.changed) + len(changes.withdrawn)
        raise Refused(
            f"the statements of {period_obj.period} are out of date for {stale} PI × project"
            f"{'' if stale == 1 else 's'} (charges changed since generating); run generate first"
        )
    outcome = QueueOutcome(period=period_obj.period)
    fields = actor_fields(actor, actor_name)
    now = timezone.now()
    with transaction.atomic():
        outcome.interrupted = deliveries_mark_interrupted(period=period_obj)
        current = list(selectors.current_statements(period_obj, pi_email=email).select_related("pi"))
        by_pi: dict[int, list[Statement]] = defaultdict(list)
        for statement in current:
            by_pi[statement.pi_id].append(statement)
        current_ids = {s.pk for s in current}

        if resend_failed:
            failed = Delivery.objects.filter(period=period_obj, state=Delivery.State.FAILED)
            if email:
                failed = failed.filter(pi__email=email)
            for delivery in failed.prefetch_related("statements"):
                if {s.pk for s in delivery.statements.all()} <= current_ids and (
                    Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.FAILED).update(
                        state=Delivery.State.QUEUED, queued_at=now, error="", **fields
                    )
                ):
                    delivery.refresh_from_db()
                    outcome.queued.append(delivery)
                    outcome.requeued += 1

        requeued_pis = {d.pi_id for d in outcome.queued}
        for pi_id, statements in sorted(by_pi.items(), key=lambda item: item[1][0].pi.email):
            if pi_id in requeued_pis:
                continue
            pi = statements[0].pi
            if all(s.state == Statement.State.SENT for s in statements):
                outcome.already_sent.append(pi.email)
                continue
            key = _set_key(s.pk for s in statements)
            existing = Delivery.objects.filter(
                period=period_obj, pi_id=pi_id, set_key=key, resend_of__isnull=True
            ).first()
            if existing is not None:
                if existing.state in (Delivery.State.QUEUED, Delivery.State.SENDING):
                    outcome.pending.append(existing)
                elif existing.state == Delivery.State.FAILED:
                    outcome.failed_before.append(existing)
                else:
                    outcome.already_sent.append(pi.email)
                continue
            delivery = Delivery.objects.create(
                period=period_obj,
                pi_id=pi_id,
                recipient=pi.email,
                set_key=key,
                state=Delivery.State.QUEUED,
                queued_at=now,
                **fields,
            )
            delivery.statements.set(statements)
            outcome.queued.append(delivery)
    return outcome


def delivery_resend(*, delivery_id: int, actor: Any = None, actor_name: str = "") -> Delivery:
    """Send a delivery again on request: a failed one is queued again; a sent one is copied into a
    new delivery (the PI asked for it again). Statements superseded since are refused."""
    fields = actor_fields(actor, actor_name)
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        statements = list(delivery.statements.all())
        outdated = [s.label for s in statements if s.state == Statement.State.SUPERSEDED]
        if outdated:
            raise Refused(
                f"delivery #{delivery.pk} carries superseded statements ({', '.join(outdated)}); "
                "send the current ones instead"
            )
        if delivery.state == Delivery.State.FAILED:
            Delivery.objects.filter(pk=delivery.pk).update(
                state=Delivery.State.QUEUED, queued_at=timezone.now(), error="", **fields
            )
            delivery.refresh_from_db()
            return delivery
        if delivery.state != Delivery.State.SENT:
            raise Refused(f"delivery #{delivery.pk} is {delivery.state}; it is on its way already")
        copy = Delivery.objects.create(
            period_id=delivery.period_id,
            pi_id=delivery.pi_id,
            recipient=delivery.recipient,
            set_key=delivery.set_key,
            resend_of=delivery,
            state=Delivery.State.QUEUED,
            queued_at=timezone.now(),
            **fields,
        )
        copy.statements.set(statements)
        return copy


def delivery_context(delivery: Delivery, statements: list[Statement], org: BillingSettings) -> dict[str, Any]:
    currency = statements[0].currency if statements else org.currency_code
    total = sum((s.billed_total for s in statements), ZERO)
    list_total = sum((s.list_total for s in statements), ZERO)
    held = sum((s.held_back_amount for s in statements), ZERO)
    period = delivery.period
    pi = delivery.pi
    rows = [
        {
            "label": s.label,
            "number": s.number,
            "version": s.version,
            "revised": s.version > 1,
            "project": s.project_code or "(no project)",
            "project_name": s.project_name,
            "fund_org": s.fund_org,
            "list": format_money(s.list_total, s.currency),
            "discount": format_money(s.discount_total, s.currency),
            "discount_percent": discount_percent_text(s.list_total, s.discount_total),
            "due": format_money(s.billed_total, s.currency),
            "held_back": format_money(s.held_back_amount, s.currency) if s.held_back_count else "",
            "held_back_count": s.held_back_count,
            "filename": s.pdf_filename,
        }
        for s in statements
    ]
    return {
        "organization": org.organization_name,
        "contact_email": org.contact_email,
        "period": period.period,
        "period_label": period.start_date.strftime("%B %Y"),
        "pi_name": pi.name or pi.email,
        "pi_email": pi.email,
        "statements": rows,
        "count": len(rows),
        "currency": currency,
        "total": format_money(total, currency),
        "list_total": format_money(list_total, currency),
        "discount_total": format_money(list_total - total, currency),
        "held_back_total": format_money(held, currency) if held else "",
        "any_revised": any(r["revised"] for r in rows),
        "portal_url": portal_link(period=period.period),
        **email_templates.branding_context(org, period),
    }


def delivery_message(
    delivery: Delivery, statements: list[Statement], message_id: str
) -> EmailMultiAlternatives:
    """The email: subject, text and HTML parts from the site's templates (statements/email_templates.py),
    one PDF per statement attached."""
    org = billing_selectors.billing_settings_get()
    context = delivery_context(delivery, statements, org)
    subject = email_templates.render_subject(context, org)
    text = email_templates.render_text(context, org)
    html = email_templates.render_html(context, org)
    headers = {"Message-ID": message_id}
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[delivery.recipient],
        reply_to=[org.contact_email] if org.contact_email else None,
        headers=headers,
    )
    message.attach_alternative(html, "text/html")
    for statement in statements:
        with statement.pdf.open("rb") as fh:
            message.attach(statement.pdf_filename, fh.read(), "application/pdf")
    return message


def delivery_send(*, delivery_id: int) -> str:
    """Send one queued delivery, at most once: it is claimed (queued → sending, one conditional
    UPDATE, committed) before the message goes out; a repeated call finds it claimed and returns
    its state. Missing PDFs are rendered first. Returns the delivery's state afterwards."""
    delivery = Delivery.objects.select_related("period", "pi").get(pk=delivery_id)
    if delivery.state != Delivery.State.QUEUED:
        return delivery.state
    statements = list(delivery.statements.select_related("period").order_by("sequence"))
    try:
        if not is_plain_email(delivery.recipient):
            raise Refused(f"invalid PI email {delivery.recipient!r}: not a plain address, never emailed")
        outdated = [s.label for s in statements if s.state == Statement.State.SUPERSEDED]
        if outdated:
            raise Refused(f"superseded before sending ({', '.join(outdated)}); send the current statements")
        if not statements:
            raise Refused("no statements to send")
        for statement in statements:
            if not statement.pdf:
                statement_render_pdf(statement_id=statement.pk)
                statement.refresh_from_db(fields=["pdf"])
        message_id = make_msgid(domain=settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or None)
        message = delivery_message(delivery, statements, message_id)
    except Exception as exc:
        _delivery_failed(delivery.pk, Delivery.State.QUEUED, exc)
        return Delivery.State.FAILED

    # The claim: only one caller moves the row from queued to sending.
    claimed = Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.QUEUED).update(
        state=Delivery.State.SENDING,
        attempts=F("attempts") + 1,
        claimed_at=timezone.now(),
        message_id=message_id,
        subject=message.subject,
        error="",
    )
    if not claimed:
        return Delivery.objects.values_list("state", flat=True).get(pk=delivery.pk)
    try:
        with get_connection() as connection:
            if connection.send_messages([message]) != 1:
                raise RuntimeError("the email backend reported the message as not sent")
    except Exception as exc:
        _delivery_failed(delivery.pk, Delivery.State.SENDING, exc)
        return Delivery.State.FAILED
    now = timezone.now()
    with transaction.atomic():
        Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.SENDING).update(
            state=Delivery.State.SENT, sent_at=now
        )
        Statement.objects.filter(pk__in=[s.pk for s in statements], state=Statement.State.ISSUED).update(
            state=Statement.State.SENT, sent_at=now
        )
    return Delivery.State.SENT


def _delivery_failed(delivery_id: int, from_state: str, exc: Exception) -> None:
    if not isinstance(exc, Refused):
        logger.warning("delivery #%s failed: %s", delivery_id, exc, exc_info=True)
    Delivery.objects.filter(pk=delivery_id, state=from_state).update(
        state=Delivery.State.FAILED,
        failed_at=timezone.now(),
        error=f"{type(exc).__name__}: {exc}"[:2000] if not isinstance(exc, Refused) else str(exc),
        attempts=F("attempts") + (1 if from_state == Delivery.State.QUEUED else 0),
    )
