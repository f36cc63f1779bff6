"""Writes of charge queries: raise (portal), resolve (admin), notify (once, after commit).

Resolving reuses billing's review services (approve, reject, correct attribution) and
`billing.credits.charge_credit_add`, so the rules (finalized periods, notes, flags) are the
same as in the review queue, and each decision is in the review log as well as here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.selectors import absolute_url
from billing import credits as billing_credits
from billing import selectors as billing_selectors
from billing import services as billing_services
from billing.models import Charge
from chargeback.actors import actor_fields
from chargeback.errors import Refused
from chargeback.logging import audit
from chargeback.money import format_money

from ..models import ChargeQuery, Statement, StatementLine
from . import selectors

logger = logging.getLogger(__name__)

REASON_MAX = 4000
ANSWER_MAX = 4000


def _text(value: str, what: str, limit: int) -> str:
    value = (value or "").strip()
    if not value:
        raise Refused(f"{what} is required")
    if len(value) > limit:
        raise Refused(f"{what} is too long ({len(value)} characters; at most {limit})")
    return value


def _charge_subject(charge: Charge) -> str:
    what = charge.resource_name or charge.resource_id or "(no resource)"
    if charge.resource_id and charge.resource_name and charge.resource_id != charge.resource_name:
        what = f"{charge.resource_name} ({charge.resource_id})"
    parts = [charge.source.display_name or charge.source.slug, charge.service_name or "(no service)", what]
    return " · ".join(parts)[:500]


def _line_subject(line: StatementLine) -> str:
    kind = f" ({line.kind})" if line.kind else ""
    return f"Statement {line.statement.label} · {line.source_name} · {line.service_name or '(no service)'}{kind}"[
        :500
    ]


@transaction.atomic
def query_raise(
    *,
    visible: Q,
    reason: str,
    charge_id: int | None = None,
    line_id: int | None = None,
    actor: Any,
) -> ChargeQuery:
    """A PI's (or delegate's) query about one charge or one statement line they may see.

    `visible` is the caller's portal scope as a Q over `pi_id` and `project_code`: a charge or
    line outside it is answered as not found, never as forbidden. One open query per charge or
    line: asking again while it is open is refused with its number."""
    reason = _text(reason, "a reason", REASON_MAX)
    if (charge_id is None) == (line_id is None):
        raise Refused("query one charge or one statement line")
    email = (getattr(actor, "email", "") or getattr(actor, "username", "") or "").strip().lower()
    if not getattr(actor, "is_authenticated", False) or not email:
        raise Refused("sign in to query a charge")
    if charge_id is not None:
        charge = (
            Charge.objects.filter(visible, pi__isnull=False)
            .select_related("period", "source", "pi")
            .filter(pk=charge_id)
            .first()
        )
        if charge is None:
            raise Refused(f"no charge {charge_id} among yours")
        existing = selectors.open_query_for_charge(charge.pk)
        if existing is not None:
            raise Refused(f"this charge already has an open query (#{existing.pk})")
        assert charge.pi is not None
        query = ChargeQuery.objects.create(
            period=charge.period,
            pi=charge.pi,
            project_code=charge.project_code,
            source=charge.source,
            charge=charge,
            subject=_charge_subject(charge),
            amount=charge.billed_cost,
            reason=reason,
            raised_by=actor,
            raised_by_email=email,
        )
    else:
        line = (
            StatementLine.objects.filter(statement__in=Statement.objects.filter(visible))
            .select_related("statement", "statement__period", "statement__pi", "source")
            .filter(pk=int(line_id or 0))
            .first()
        )
        if line is None:
            raise Refused(f"no statement line {line_id} among yours")
        existing = selectors.open_query_for_line(line.pk)
        if existing is not None:
            raise Refused(f"this statement line already has an open query (#{existing.pk})")
        statement = line.statement
        query = ChargeQuery.objects.create(
            period=statement.period,
            pi=statement.pi,
            project_code=statement.project_code,
            source=line.source,
            statement=statement,
            statement_line=line,
            subject=_line_subject(line),
            amount=line.amount,
            reason=reason,
            raised_by=actor,
            raised_by_email=email,
        )
    audit(
        "charge_query_raised",
        actor=email,
        query=query.pk,
        period=query.period.period,
        pi=query.pi.email,
        project=query.project_code,
    )
    return query


@dataclass
class Resolution:
    """What a reviewer decides. `pi_email`/`project_id`/`fund_org` for a correction,
    `credit_amount` for a credit."""

    resolution: str
    answer: str
    pi_email: str = ""
    project_id: str = ""
    fund_org: str = ""
    credit_amount: Decimal | str | None = None


def _the_charge(query: ChargeQuery) -> Charge:
    charge = Charge.objects.filter(pk=query.charge_id).first() if query.charge_id else None
    if charge is None:
        if query.statement_line_id:
            raise Refused(
                f"query #{query.pk} is about a statement line, not one charge: explain it or issue a credit"
            )
        raise Refused(
            f"the charge of query #{query.pk} is gone (its file was imported again): explain or issue a credit"
        )
    return charge


@transaction.atomic
def query_resolve(
    *, query_id: int, decision: Resolution, actor: Any = None, actor_name: str = ""
) -> ChargeQuery:
    """Answer and close an open query. The decision runs through billing's services (so a
    finalized period refuses approve, reject, correct and credit alike); the PI is emailed after
    the transaction commits, once."""
    query = ChargeQuery.objects.select_for_update().filter(pk=query_id).first()
    if query is None:
        raise Refused(f"no query #{query_id}")
    if query.state != ChargeQuery.State.OPEN:
        raise Refused(f"query #{query.pk} is already resolved ({query.get_resolution_display().lower()})")
    answer = _text(decision.answer, "an answer", ANSWER_MAX)
    kind = decision.resolution
    if kind not in ChargeQuery.Resolution.values:
        raise Refused(f"unknown resolution {kind!r}")
    note = f"query #{query.pk}: {answer}"
    period = query.period
    if kind == ChargeQuery.Resolution.EXPLAINED:
        pass  # the charge stands; an answer changes nothing, so it may be given on a finalized period
    elif kind == ChargeQuery.Resolution.APPROVED:
        billing_services.charges_approve(
            charge_ids=[_the_charge(query).pk], note=note, actor=actor, actor_name=actor_name
        )
    elif kind == ChargeQuery.Resolution.REJECTED:
        billing_services.charges_reject(
            charge_ids=[_the_charge(query).pk], note=note, actor=actor, actor_name=actor_name
        )
    elif kind == ChargeQuery.Resolution.CORRECTED:
        if not (decision.pi_email or "").strip():
            raise Refused("a correction needs the PI email who should pay")
        billing_services.charge_correct_attribution(
            charge_id=_the_charge(query).pk,
            pi_email=decision.pi_email,
            project_id=decision.project_id,
            fund_org=decision.fund_org,
            note=note,
            actor=actor,
            actor_name=actor_name,
        )
    else:  # credited
        if decision.credit_amount in (None, ""):
            raise Refused("a credit needs an amount")
        amount = billing_credits.credit_amount_parse(decision.credit_amount)
        if query.amount > 0 and amount > query.amount:
            currency = billing_selectors.currency_code()
            raise Refused(
                f"a credit of {format_money(amount, currency)} is more than the "
                f"{format_money(query.amount, currency)} queried"
            )
        charge = Charge.objects.filter(pk=query.charge_id).first() if query.charge_id else None
        line = query.statement_line
        outcome = billing_credits.charge_credit_add(
            period=period.period,
            source=query.source,
            pi_email=query.pi.email,
            project_id=query.project_code,
            amount=amount,
            description=f"Credit for query #{query.pk}: {query.subject}",
            reference=f"query-{query.pk}",
            service_name=(charge.service_name if charge else (line.service_name if line else "")),
            fund_org=(charge.fund_org if charge else (query.statement.fund_org if query.statement else "")),
            note=note,
            actor=actor,
            actor_name=actor_name,
        )
        query.credit_amount = outcome.amount
        query.credit_charge = outcome.charge
    fields = actor_fields(actor, actor_name)
    query.state = ChargeQuery.State.RESOLVED
    query.resolution = kind
    query.answer = answer
    query.resolved_at = timezone.now()
    query.resolved_by = fields["actor"]
    query.resolved_by_name = fields["actor_name"]
    query.save()
    audit(
        "charge_query_resolved",
        actor=fields["actor_name"],
        query=query.pk,
        resolution=kind,
        period=period.period,
        pi=query.pi.email,
        credit=str(query.credit_amount) if query.credit_amount is not None else "",
    )
    query_id_ = query.pk
    transaction.on_commit(lambda: _notify_after_commit(query_id_))
    return query


def _notify_after_commit(query_id: int) -> None:
    from . import tasks

    try:
        tasks.query_notify.delay(query_id)
    except Exception:  # the answer is saved; an email that failed to queue can be sent again
        logger.exception("could not queue the answer email of query #%s", query_id)


def query_message(query: ChargeQuery) -> EmailMultiAlternatives:
    org = billing_selectors.billing_settings_get()
    from django.urls import reverse

    context = {
        "query": query,
        "organization": org.organization_name,
        "contact_email": org.contact_email,
        "pi_name": query.pi.name or query.pi.email,
        "amount": format_money(query.amount, org.currency_code),
        "credit": format_money(query.credit_amount, org.currency_code) if query.credit_amount else "",
        "resolution": query.get_resolution_display(),
        "period_label": query.period.start_date.strftime("%B %Y"),
        "url": absolute_url(reverse("portal:query", kwargs={"pk": query.pk})),
    }
    subject = f"Your query #{query.pk} about {query.period.period} has been answered"
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("statements/email/query_answered.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=selectors.query_recipients(query),
        reply_to=[org.contact_email] if org.contact_email else None,
    )
    message.attach_alternative(render_to_string("statements/email/query_answered.html", context), "text/html")
    return message


def query_notify(*, query_id: int) -> bool:
    """Email the answer of a resolved query, at most once: the query is claimed (`notified_at`
    set by one conditional UPDATE) before sending, so a repeated or concurrent call sends
    nothing; a failed send clears the claim and records the error. True when this call sent it."""
    claimed = ChargeQuery.objects.filter(
        pk=query_id, state=ChargeQuery.State.RESOLVED, notified_at__isnull=True
    ).update(notified_at=timezone.now(), notify_error="")
    if not claimed:
        return False
    query = selectors.queries_base().get(pk=query_id)
    try:
        query_message(query).send()
    except Exception as exc:
        ChargeQuery.objects.filter(pk=query_id).update(
            notified_at=None, notify_error=f"{type(exc).__name__}: {exc}"
        )
        logger.exception("the answer email of query #%s failed", query_id)
        return False
    audit("charge_query_notified", query=query_id, recipients=",".join(selectors.query_recipients(query)))
    return True
