"""A PI's query about a charge or a statement line, and how it was resolved."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from chargeback.money import MoneyField


class ChargeQuery(models.Model):
    """One question about one charge or one statement line: open until a reviewer resolves it
    with an answer. The subject is kept as text and amount too, so the query still reads right
    when the charge is superseded by a re-import or the statement by a new version."""

    class State(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    class Resolution(models.TextChoices):
        EXPLAINED = "explained", "Explained (the charge stands)"
        APPROVED = "approved", "Charge approved"
        REJECTED = "rejected", "Charge rejected (not billed)"
        CORRECTED = "corrected", "Attribution corrected"
        CREDITED = "credited", "Credit issued"

    period = models.ForeignKey("billing.BillingPeriod", on_delete=models.PROTECT, related_name="queries")
    # Whose money it is: the scope the portal shows the query in (PI × project id).
    pi = models.ForeignKey("billing.PI", on_delete=models.PROTECT, related_name="queries")
    project_code = models.CharField("project id", max_length=200, blank=True, default="")
    source = models.ForeignKey("billing.Source", on_delete=models.PROTECT, related_name="+")
    # No database constraint on the charges: a re-import deletes superseded charges in bulk
    # (billing knows nothing of queries), and the query keeps its subject as text and amount.
    charge = models.ForeignKey(
        "billing.Charge",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="queries",
    )
    statement_line = models.ForeignKey(
        "statements.StatementLine", null=True, blank=True, on_delete=models.SET_NULL, related_name="queries"
    )
    statement = models.ForeignKey(
        "statements.Statement", null=True, blank=True, on_delete=models.SET_NULL, related_name="queries"
    )
    subject = models.CharField(max_length=500, help_text="What was queried, as the PI saw it.")
    amount = MoneyField(default=0, help_text="The amount queried (billed cost or line amount).")
    reason = models.TextField(help_text="Why the PI thinks it is wrong.")
    raised_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    raised_by_email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)

    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    resolution = models.CharField(max_length=12, choices=Resolution.choices, blank=True, default="")
    answer = models.TextField(blank=True, default="", help_text="The reviewer's answer, shown to the PI.")
    credit_amount = MoneyField(null=True, blank=True, help_text="A credit's amount (positive).")
    credit_charge = models.ForeignKey(
        "billing.Charge",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_by_name = models.CharField(max_length=150, blank=True, default="")
    # The answer email: claimed (set) before sending so it goes out once; cleared again on failure.
    notified_at = models.DateTimeField(null=True, blank=True)
    notify_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "charge query"
        verbose_name_plural = "charge queries"
        indexes = [
            models.Index(fields=["state", "-created_at"], name="chargequery_state_recent"),
            models.Index(fields=["pi", "project_code"], name="chargequery_pi_project"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=["open", "resolved"]), name="chargequery_state"),
            models.CheckConstraint(
                condition=Q(state="open", resolution="") | (Q(state="resolved") & ~Q(resolution="")),
                name="chargequery_resolution_when_resolved",
            ),
        ]

    def __str__(self) -> str:
        return f"Query #{self.pk} ({self.period_id}, {self.state})"

    @property
    def is_open(self) -> bool:
        return self.state == self.State.OPEN
