"""Every write of the statements app: generating (versioned) statements, rendering their PDFs,
queueing and sending deliveries. Each function is one transaction (sending is the exception by
nature: the claim is committed before the message goes out, so it is never sent twice)."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.mail import EmailMultiAlternatives, get_connection, make_msgid
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from accounts.selectors import portal_link
from billing import selectors as billing_selectors
from billing import services as billing_services
from billing.models import PI, BillingPeriod, BillingSettings
from chargeback.emails import is_plain_email
from chargeback.errors import Refused
from chargeback.money import ZERO, format_money

from . import email_templates, selectors
from .branding import statement_branding
from .models import Delivery, Statement, StatementLine, statement_pdf_path
from .pdf import LineData, StatementData, render_statement_pdf
from .selectors import DraftLine, StatementDraft, discount_percent, format_percent

logger = logging.getLogger(__name__)
Status = BillingPeriod.Status


def _actor_fields(actor: Any, actor_name: str) -> dict[str, Any]:
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return {"actor": user, "actor_name": billing_services.actor_label(actor, actor_name)}


def _pi_email(pi_email: str | None) -> str | None:
    if not pi_email:
        return None
    email = pi_email.strip().lower()
    if not PI.objects.filter(email=email).exists():
        raise Refused(f"no PI with email {email}")
    return email


# --- generate -------------------------------------------------------------------------------


@dataclass
class StatementResult:
    """One PI × project after (or, in a dry run, as it would be after) generating."""

    status: str  # new | revised | unchanged | withdrawn
    number: str
    version: int
    pi_email: str
    project_code: str
    fund_org: str
    list_total: Decimal
    discount_total: Decimal
    billed_total: Decimal
    held_back_count: int = 0
    held_back_amount: Decimal = ZERO
    statement_id: int | None = None
    replaces: str = ""

    @property
    def label(self) -> str:
        return f"{self.number} v{self.version}"


@dataclass
class GenerateOutcome:
    period: str
    currency: str
    dry_run: bool = False
    pi_email: str | None = None
    statements: list[StatementResult] = field(default_factory=list)  # current ones, by number
    withdrawn: list[StatementResult] = field(default_factory=list)
    held_back_count: int = 0
    held_back_billed: Decimal = ZERO
    held_back_elsewhere: list[selectors.HeldBack] = field(default_factory=list)
    rejected_count: int = 0
    rejected_billed: Decimal = ZERO
    unbillable_count: int = 0
    unbillable_billed: Decimal = ZERO
    to_render: list[int] = field(default_factory=list)
    # A dry run: each statement as it would be, with the draft it would be issued from (previews).
    drafts: list[tuple[StatementResult, StatementDraft]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for s in self.statements if s.status == status)

    @property
    def billed_total(self) -> Decimal:
        return sum((s.billed_total for s in self.statements), ZERO)

    @property
    def list_total(self) -> Decimal:
        return sum((s.list_total for s in self.statements), ZERO)


def _result(
    status: str, totals: StatementDraft | Statement, number: str, version: int, **extra: Any
) -> StatementResult:
    """One statement of an outcome; `totals` is the draft it is issued from, or the statement as it stands."""
    return StatementResult(
        status=status,
        number=number,
        version=version,
        pi_email=totals.pi_email,
        project_code=totals.project_code,
        fund_org=totals.fund_org,
        list_total=totals.list_total,
        discount_total=totals.discount_total,
        billed_total=totals.billed_total,
        held_back_count=totals.held_back_count,
        held_back_amount=totals.held_back_amount,
        **extra,
    )


def _statement_result(status: str, statement: Statement) -> StatementResult:
    return _result(status, statement, statement.number, statement.version, statement_id=statement.pk)


def statement_number(period: str, sequence: int) -> str:
    return f"{period}-{sequence:04d}"


def statements_generate(
    *,
    period: str,
    pi_email: str | None = None,
    dry_run: bool = False,
    actor: Any = None,
    actor_name: str = "",
) -> GenerateOutcome:
    """Issue the statements of a period from its billable charges, idempotently.

    Unchanged statements keep their version; a changed one gets a new version and the old one is
    superseded (kept, with its PDF); a statement whose charges are all gone is withdrawn
    (superseded without successor). The period's state is left alone: statements may be issued on
    an open period, and a later import plus generate issues new versions of what changed. A
    finalized period is refused. With `dry_run` nothing is written and the outcome says what would
    happen. PDFs are not rendered here: `to_render` lists the statements that need one (tasks
    render them).
    """
    period_obj = billing_selectors.period_get(period)
    if period_obj.status == Status.FINALIZED:
        raise Refused(f"period {period_obj.period} is finalized: its statements cannot be regenerated")
    email = _pi_email(pi_email)
    currency = billing_selectors.billing_settings_get().currency_code
    outcome = GenerateOutcome(period=period_obj.period, currency=currency, dry_run=dry_run, pi_email=email)
    with transaction.atomic():
        # One generate at a time per period: the period row is the lock.
        period_obj = BillingPeriod.objects.select_for_update().get(pk=period_obj.pk)
        if period_obj.status == Status.FINALIZED:
            raise Refused(f"period {period_obj.period} is finalized: its statements cannot be regenerated")
        changes = selectors.statement_changes(period_obj, pi_email=email)
        drafts = changes.drafts
        outcome.held_back_count, outcome.held_back_billed = drafts.held_back_count, drafts.held_back_billed
        outcome.held_back_elsewhere = drafts.held_back_elsewhere
        outcome.rejected_count, outcome.rejected_billed = drafts.rejected_count, drafts.rejected_billed
        outcome.unbillable_count, outcome.unbillable_billed = (
            drafts.unbillable_count,
            drafts.unbillable_billed,
        )
        if dry_run:
            _plan(outcome, changes, period_obj)
        else:
            _issue(outcome, changes, period_obj, _actor_fields(actor, actor_name))
    outcome.statements.sort(key=lambda r: r.number)
    return outcome


def _next_sequence(period: BillingPeriod) -> int:
    return (Statement.objects.filter(period=period).aggregate(m=Max("sequence"))["m"] or 0) + 1


def _plan(outcome: GenerateOutcome, changes: selectors.StatementChanges, period: BillingPeriod) -> None:
    sequence = _next_sequence(period)
    for draft in changes.new:
        result = _result("new", draft, statement_number(period.period, sequence), 1)
        outcome.drafts.append((result, draft))
        sequence += 1
    for draft, old in changes.changed:
        result = _result("revised", draft, old.number, old.version + 1, replaces=old.label)
        outcome.drafts.append((result, draft))
    for draft, old in changes.unchanged:
        outcome.drafts.append((_statement_result("unchanged", old), draft))
    outcome.statements = [result for result, _draft in outcome.drafts]
    outcome.withdrawn = [_statement_result("withdrawn", s) for s in changes.withdrawn]


def _issue(
    outcome: GenerateOutcome,
    changes: selectors.StatementChanges,
    period: BillingPeriod,
    actor_fields: dict[str, Any],
) -> None:
    now = timezone.now()
    superseded_ids = [old.pk for _d, old in changes.changed] + [s.pk for s in changes.withdrawn]
    if superseded_ids:
        Statement.objects.filter(pk__in=[s.pk for s in changes.withdrawn]).update(
            note="withdrawn: no billable charges remain"
        )
        Statement.objects.filter(pk__in=superseded_ids).update(
            state=Statement.State.SUPERSEDED, superseded_at=now
        )
    sequence = _next_sequence(period)
    planned: list[tuple[str, StatementDraft, int, int, Statement | None]] = []
    for draft in changes.new:
        planned.append(("new", draft, sequence, 1, None))
        sequence += 1
    for draft, old in changes.changed:
        planned.append(("revised", draft, old.sequence, old.version + 1, old))

    statements = [
        Statement(
            period=period,
            pi_id=draft.pi_id,
            project_code=draft.project_code,
            project_id=draft.project_id,
            sequence=seq,
            number=statement_number(period.period, seq),
            version=version,
            state=Statement.State.ISSUED,
            pi_email=draft.pi_email,
            pi_name=draft.pi_name,
            pi_department=draft.pi_department,
            project_name=draft.project_name,
            fund_org=draft.fund_org,
            cost_center=draft.cost_center,
            reference_1=draft.reference_1,
            reference_2=draft.reference_2,
            currency=draft.currency,
            list_total=draft.list_total,
            discount_total=draft.discount_total,
            billed_total=draft.billed_total,
            charge_count=draft.charge_count,
            held_back_count=draft.held_back_count,
            held_back_amount=draft.held_back_amount,
            rejected_count=draft.rejected_count,
            details=draft.details,
            content_hash=draft.content_hash,
            supersedes=old,
            issued_at=now,
            **actor_fields,
        )
        for _status, draft, seq, version, old in planned
    ]
    created = Statement.objects.bulk_create(statements, batch_size=500)
    lines = []
    for statement, (_status, draft, _seq, _version, _old) in zip(created, planned, strict=True):
        for position, line in enumerate(draft.lines, start=1):
            lines.append(
                StatementLine(
                    statement=statement,
                    position=position,
                    source_id=line.source_id,
                    source_name=line.source_name,
                    service_name=line.service_name,
                    kind=line.kind,
                    charge_count=line.charge_count,
                    list_exact=line.list_exact,
                    billed_exact=line.billed_exact,
                    list_amount=line.list_amount,
                    discount_amount=line.discount_amount,
                    amount=line.amount,
                    rating=line.rating,
                )
            )
    StatementLine.objects.bulk_create(lines, batch_size=2000)
    _log_issued(created, superseded_ids, actor_fields)

    for issued, (status, draft, _seq, _version, previous) in zip(created, planned, strict=True):
        outcome.statements.append(
            _result(
                status,
                draft,
                issued.number,
                issued.version,
                statement_id=issued.pk,
                replaces=previous.label if previous else "",
            )
        )
    for _draft, old in changes.unchanged:
        outcome.statements.append(_statement_result("unchanged", old))
    outcome.withdrawn = [_statement_result("withdrawn", s) for s in changes.withdrawn]
    # New versions, and current ones whose PDF is missing (an earlier run was interrupted).
    unrendered = [old.pk for _d, old in changes.unchanged if not old.pdf]
    outcome.to_render = [s.pk for s in created] + unrendered


def _log_issued(created: list[Statement], superseded_ids: list[int], actor_fields: dict[str, Any]) -> None:
    """Audit entries for statements written in bulk (auditlog sees only single saves)."""
    content_type = ContentType.objects.get_for_model(Statement)
    actor = actor_fields.get("actor")
    entries = [
        LogEntry(
            content_type=content_type,
            object_pk=str(s.pk),
            object_id=s.pk,
            object_repr=str(s),
            action=LogEntry.Action.CREATE,
            changes={"state": [None, s.state], "billed_total": [None, str(s.billed_total)]},
            actor=actor,
            additional_data={"actor_name": actor_fields["actor_name"], "event": "issued"},
        )
        for s in created
    ] + [
        LogEntry(
            content_type=content_type,
            object_pk=str(pk),
            object_id=pk,
            object_repr=f"statement #{pk}",
            action=LogEntry.Action.UPDATE,
            changes={"state": ["issued/sent", Statement.State.SUPERSEDED]},
            actor=actor,
            additional_data={"actor_name": actor_fields["actor_name"], "event": "superseded"},
        )
        for pk in superseded_ids
    ]
    LogEntry.objects.bulk_create(entries, batch_size=1000)


# --- PDF --------------------------------------------------------------------------------------


def statement_pdf_data(statement: Statement, org: BillingSettings | None = None) -> StatementData:
    return pdf_data(
        statement,
        number=statement.number,
        version=statement.version,
        period=statement.period,
        issued_at=statement.issued_at,
        lines=pdf_lines(statement.lines.all()),
        replaces=statement.supersedes.label if statement.supersedes_id and statement.supersedes else "",
        org=org,
    )


def pdf_lines(lines: Iterable[StatementLine | DraftLine]) -> list[LineData]:
    """The lines of a statement or of a draft, as the PDF shows them."""
    return [
        LineData(
            source_name=line.source_name,
            service_name=line.service_name,
            kind=line.kind,
            list_amount=line.list_amount,
            discount_amount=line.discount_amount,
            amount=line.amount,
            rating=line.rating or {},
        )
        for line in lines
    ]


def pdf_data(
    totals: Statement | StatementDraft,
    *,
    number: str,
    version: int,
    period: BillingPeriod,
    issued_at: Any,
    lines: list[LineData],
    replaces: str = "",
    org: BillingSettings | None = None,
    draft: bool = False,
) -> StatementData:
    """What a PDF shows of a statement, or of a draft (`draft`: a preview, marked DRAFT)."""
    org = org or billing_selectors.billing_settings_get()
    return StatementData(
        number=number,
        version=version,
        period=period.period,
        period_start=period.start_date,
        period_end=period.end_date,
        issued_at=issued_at,
        currency=totals.currency,
        organization=org.organization_name,
        contact_email=org.contact_email,
        pi_name=totals.pi_name,
        pi_email=totals.pi_email,
        pi_department=totals.pi_department,
        project_code=totals.project_code,
        project_name=totals.project_name,
        fund_org=totals.fund_org,
        cost_center=totals.cost_center,
        reference_1_label=org.reference_1_label,
        reference_1=totals.reference_1,
        reference_2_label=org.reference_2_label,
        reference_2=totals.reference_2,
        list_total=totals.list_total,
        discount_total=totals.discount_total,
        billed_total=totals.billed_total,
        held_back_count=totals.held_back_count,
        held_back_amount=totals.held_back_amount,
        lines=lines,
        details=totals.details,
        replaces=replaces,
        draft=draft,
        branding=statement_branding(org, period),
    )


def statement_render_pdf(*, statement_id: int) -> bool:
    """Render and store a statement's PDF; returns False when it already had one. Idempotent: a
    repeated or concurrent render keeps the first stored file and removes its own."""
    statement = Statement.objects.select_related("period", "supersedes").get(pk=statement_id)
    if statement.pdf:
        return False
    data = render_statement_pdf(statement_pdf_data(statement))
    name = default_storage.save(statement_pdf_path(statement, statement.pdf_filename), ContentFile(data))
    stored = Statement.objects.filter(pk=statement.pk, pdf="").update(
        pdf=name,
        pdf_sha256=hashlib.sha256(data).hexdigest(),
        pdf_bytes=len(data),
        rendered_at=timezone.now(),
        render_error="",
    )
    if not stored:
        default_storage.delete(name)  # another worker stored it first
        return False
    if settings.OPENCHARGEBACK_PDF_DIR:
        pdf_file_write(Path(settings.OPENCHARGEBACK_PDF_DIR), statement.pdf_filename, data)
    return True


def pdf_file_write(folder: Path, name: str, data: bytes) -> Path:
    """A PDF written into a folder of files for people (output.pdf_dir, previews): complete or not
    at all (written beside, then renamed), replacing a file of that name."""
    folder = folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    partial = folder / f".{name}.partial"
    partial.write_bytes(data)
    partial.replace(target)
    return target


def statement_record_render_error(*, statement_id: int, error: str) -> None:
    Statement.objects.filter(pk=statement_id, pdf="").update(render_error=error[:2000])


# --- email -----------------------------------------------------------------------------------


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
    fields = _actor_fields(actor, actor_name)
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
    fields = _actor_fields(actor, actor_name)
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
            "discount_percent": format_percent(discount_percent(s.list_total, s.discount_total)),
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
