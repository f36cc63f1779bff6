"""Statements (one per period × PI × project, versioned) and their email deliveries.

A statement version is immutable once issued: regeneration that changes its content issues
a new version and marks the old one superseded (kept, with its PDF). The statement number
(`2025-01-0007`) stays with the PI × project for every version of the period.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import models
from django.db.models import Q

from chargeback.money import MoneyField


def statement_pdf_path(instance: Statement, filename: str) -> str:
    return f"statements/{instance.period.period}/{filename}"


def statement_pdf_name(period: str, pi_email: str, project_code: str, version: int = 1) -> str:
    """`{period}_{pi}_{project}.pdf`, as the original names statements (pi: the email before '@');
    `_v2` and up for later versions. Characters a file name should not hold become '-'."""

    def part(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "none"

    name = f"{period}_{part(pi_email.partition('@')[0])}_{part(project_code or 'no-project')}"
    return f"{name}.pdf" if version <= 1 else f"{name}_v{version}.pdf"


class Statement(models.Model):
    class State(models.TextChoices):
        ISSUED = "issued", "Issued"
        SENT = "sent", "Sent"
        SUPERSEDED = "superseded", "Superseded"

    period = models.ForeignKey("billing.BillingPeriod", on_delete=models.PROTECT, related_name="statements")
    pi = models.ForeignKey(
        "billing.PI", verbose_name="PI", on_delete=models.PROTECT, related_name="statements"
    )
    project_code = models.CharField("project id", max_length=200, blank=True, default="")
    project = models.ForeignKey(
        "billing.Project", null=True, blank=True, on_delete=models.PROTECT, related_name="statements"
    )
    sequence = models.PositiveIntegerField(help_text="Number within the period; the same for every version.")
    number = models.CharField(max_length=20, db_index=True, help_text="YYYY-MM-NNNN")
    version = models.PositiveIntegerField(default=1)
    state = models.CharField(max_length=12, choices=State.choices, default=State.ISSUED)

    # What the statement says about whom (a snapshot: later edits of the PI or project do not
    # change an issued version).
    pi_email = models.EmailField(verbose_name="PI email")
    pi_name = models.CharField(verbose_name="PI name", max_length=200, blank=True, default="")
    pi_department = models.CharField(verbose_name="PI department", max_length=200, blank=True, default="")
    project_name = models.CharField(max_length=200, blank=True, default="")
    fund_org = models.CharField("fund/org", max_length=100, blank=True, default="")
    cost_center = models.CharField(max_length=100, blank=True, default="")
    reference_1 = models.CharField(max_length=200, blank=True, default="")
    reference_2 = models.CharField(max_length=200, blank=True, default="")
    currency = models.CharField(max_length=3, default="USD")

    # Totals under the cent rule: Σ of the rounded lines.
    list_total = MoneyField(default=0)
    discount_total = MoneyField(default=0)
    billed_total = MoneyField("amount due", default=0)
    charge_count = models.PositiveIntegerField(default=0)
    # Charges of this PI × project awaiting review (flagged): not billed, noted on the PDF.
    held_back_count = models.PositiveIntegerField(default=0)
    held_back_amount = MoneyField(default=0, help_text="Billed cost of the flagged charges, rounded once.")
    rejected_count = models.PositiveIntegerField(default=0)

    details = models.JSONField(
        default=list,
        blank=True,
        help_text="Detail by resource: [source, service, kind, resource id, resource name, quantity, unit, "
        "list, billed, charges] with exact amounts as strings.",
    )
    content_hash = models.CharField(max_length=64, help_text="sha256 of what the statement says.")

    pdf = models.FileField(upload_to=statement_pdf_path, verbose_name="PDF", max_length=300, blank=True)
    pdf_sha256 = models.CharField(verbose_name="PDF checksum", max_length=64, blank=True, default="")
    pdf_bytes = models.PositiveIntegerField(verbose_name="PDF size (bytes)", default=0)
    rendered_at = models.DateTimeField(null=True, blank=True)
    render_error = models.TextField(blank=True, default="")

    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    note = models.CharField(max_length=300, blank=True, default="")
    issued_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    superseded_at = models.DateTimeField(null=True, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(verbose_name="issued by", max_length=150, blank=True, default="")

    class Meta:
        ordering = ["period__period", "sequence", "-version"]
        permissions = [("send_statements", "Can send statement emails")]
        indexes = [
            models.Index(fields=["period", "state"], name="statement_period_state"),
            models.Index(fields=["period", "pi", "project_code"], name="statement_period_pi_project"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["period", "sequence", "version"], name="statement_number_version"
            ),
            models.UniqueConstraint(
                fields=["period", "pi", "project_code", "version"], name="statement_pi_project_version"
            ),
            models.UniqueConstraint(
                fields=["period", "pi", "project_code"],
                condition=~Q(state="superseded"),
                name="statement_one_current",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["issued", "sent", "superseded"]), name="statement_state"
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="statement_version_positive"),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """'2025-01-0007 v2'."""
        return f"{self.number} v{self.version}"

    @property
    def is_current(self) -> bool:
        return self.state != self.State.SUPERSEDED

    @property
    def pdf_filename(self) -> str:
        return statement_pdf_name(self.period.period, self.pi_email, self.project_code, self.version)


class StatementLine(models.Model):
    """One source × service of a statement (credits and adjustments on their own lines):
    the exact sums of its charges, and the amounts rounded once under the cent rule."""

    statement = models.ForeignKey(Statement, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    source = models.ForeignKey("billing.Source", on_delete=models.PROTECT, related_name="+")
    source_name = models.CharField(max_length=100)
    service_name = models.CharField(max_length=200, blank=True, default="")
    kind = models.CharField(
        max_length=20, blank=True, default="", help_text="Empty for usage; Credit or Adjustment otherwise."
    )
    charge_count = models.PositiveIntegerField(default=0)
    list_exact = MoneyField(default=0)
    billed_exact = MoneyField(default=0)
    list_amount = MoneyField(default=0)
    discount_amount = MoneyField(default=0)
    amount = MoneyField(default=0)
    rating = models.JSONField(
        default=dict,
        blank=True,
        help_text="Rated usage and the discount by name: {usage: [{quantity, unit, price, text}], "
        "reductions: [{name, amount}]}; empty for other lines.",
    )

    class Meta:
        ordering = ["statement", "position"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "position"], name="statement_line_position")
        ]

    def __str__(self) -> str:
        return f"{self.source_name} · {self.service_name}"


class Delivery(models.Model):
    """One email to one recipient with one PI's statements of a period.

    queued → sending → sent | failed. A delivery is claimed (queued → sending, in one
    conditional UPDATE) before the message goes out, so a retried or repeated task never
    sends it twice; a failed one can be queued again on request.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    period = models.ForeignKey("billing.BillingPeriod", on_delete=models.PROTECT, related_name="deliveries")
    pi = models.ForeignKey(
        "billing.PI", verbose_name="PI", on_delete=models.PROTECT, related_name="deliveries"
    )
    recipient = models.EmailField()
    statements = models.ManyToManyField(Statement, related_name="deliveries")
    set_key = models.CharField(max_length=64, help_text="sha256 of the statement ids it carries.")
    resend_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="resends"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    subject = models.CharField(max_length=300, blank=True, default="")
    error = models.TextField(blank=True, default="")
    message_id = models.CharField(verbose_name="message ID", max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(verbose_name="by", max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["period", "state"], name="delivery_period_state")]
        constraints = [
            models.UniqueConstraint(
                fields=["period", "pi", "set_key"],
                condition=Q(resend_of__isnull=True),
                name="delivery_once_per_statement_set",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["queued", "sending", "sent", "failed"]), name="delivery_state"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.recipient} ({self.period_id}, {self.state})"


class StatementRun(models.Model):
    """A statements run started from the admin — a preview, issuing, sending the unsent, or
    resending failed emails — and how far it has come: queued → running → done | failed.

    The task preparing the run (generate, queue deliveries) records the PDFs and emails it
    hands to the workers; their progress is counted from the statements and deliveries
    themselves, so any number of workers report into the same figures. A queued or running run
    without progress for OPENCHARGEBACK_STATEMENT_RUN_STALE_SECONDS is shown as stale: its
    worker most likely stopped.
    """

    class Kind(models.TextChoices):
        PREVIEW = "preview", "Preview"
        ISSUE = "issue", "Issue"
        SEND = "send", "Send"
        RESEND = "resend", "Resend"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    period = models.ForeignKey(
        "billing.BillingPeriod", on_delete=models.PROTECT, related_name="statement_runs"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_name = models.CharField("requested by", max_length=150, blank=True, default="")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)

    # The work handed to the workers, and how much of it is finished.
    statement_ids = models.JSONField("statements to render", default=list, blank=True)
    delivery_ids = models.JSONField("deliveries to send", default=list, blank=True)
    pdfs_total = models.PositiveIntegerField("PDFs", default=0)
    pdfs_rendered = models.PositiveIntegerField("PDFs rendered", default=0)
    pdfs_failed = models.PositiveIntegerField("PDFs failed", default=0)
    emails_total = models.PositiveIntegerField("emails", default=0)
    emails_sent = models.PositiveIntegerField("emails sent", default=0)
    emails_failed = models.PositiveIntegerField("emails failed", default=0)

    summary = models.CharField(max_length=500, blank=True, default="")
    result = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the run did: issued statements, emails sent and failed, PDFs not rendered.",
    )
    error = models.TextField(blank=True, default="")

    created_at = models.DateTimeField("requested at", auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(
        "handed to the workers at", null=True, blank=True, help_text="When its PDFs and emails were queued."
    )
    progressed_at = models.DateTimeField(
        "last progress at", null=True, blank=True, help_text="The last change of state or of its counts."
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "statement run"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["period", "-created_at"], name="statement_run_period")]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["preview", "issue", "send", "resend"]), name="statement_run_kind"
            ),
            models.CheckConstraint(
                condition=Q(state__in=["queued", "running", "done", "failed"]), name="statement_run_state"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.period.period} (#{self.pk})"

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)


# Charge queries (disputes) live in their own package (statements/queries); their models belong
# to this app, so they are imported here for Django to find them.
from .queries.models import ChargeQuery  # noqa: E402

__all__ = [
    "ChargeQuery",
    "Delivery",
    "Statement",
    "StatementLine",
    "StatementRun",
    "statement_pdf_name",
    "statement_pdf_path",
]
