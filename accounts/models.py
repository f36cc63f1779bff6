"""Models of the accounts app."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class UserPreference(models.Model):
    """Per-user choices of the admin, such as the period its dashboard shows."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="preference"
    )
    period = models.CharField(
        max_length=7, blank=True, default="", help_text="YYYY-MM chosen on the dashboard."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"preferences of {self.user}"


class Invitation(models.Model):
    """A set-your-password link emailed to a portal user (PI, delegate) or a staff user.

    The link's token (accounts.tokens) stops working once the password is set, after
    PASSWORD_RESET_TIMEOUT, and when the account is disabled. Accepting it sets the password and
    never changes whether the account is active. Disabling an account voids its pending invitations.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(help_text="Where the link was sent.")
    sent_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(
        null=True, blank=True, help_text="When the account was disabled before the link was used."
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(verbose_name="invited by", max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-sent_at", "-id"]
        indexes = [models.Index(fields=["user", "-sent_at"], name="invitation_user_recent")]

    def __str__(self) -> str:
        return f"invitation of {self.email} ({self.sent_at:%Y-%m-%d})"


class Delegation(models.Model):
    """A PI lets a colleague (a lab manager, a department administrator) see one project's
    statements and charges in the portal. Revoking deletes the row (the audit log keeps it)."""

    pi = models.ForeignKey(
        "billing.PI", verbose_name="PI", on_delete=models.CASCADE, related_name="delegations"
    )
    project = models.ForeignKey("billing.Project", on_delete=models.CASCADE, related_name="delegations")
    delegate = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="delegations"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    actor_name = models.CharField(verbose_name="delegated by", max_length=150, blank=True, default="")

    class Meta:
        ordering = ["pi", "delegate", "project"]
        constraints = [
            models.UniqueConstraint(fields=["pi", "project", "delegate"], name="delegation_unique"),
        ]
        indexes = [models.Index(fields=["delegate", "pi"], name="delegation_delegate")]

    def __str__(self) -> str:
        return f"{self.project} of {self.pi} → {self.delegate}"


class DelegationEmail(models.Model):
    """An email a PI's delegation caused (an invitation or a notice to an existing account): the
    record the per-PI limit counts (OPENCHARGEBACK_DELEGATION_EMAILS_PER_DAY)."""

    class Kind(models.TextChoices):
        INVITATION = "invitation", "Invitation"
        NOTICE = "notice", "Notice of shared projects"

    pi = models.ForeignKey("billing.PI", on_delete=models.CASCADE, related_name="delegation_emails")
    delegate = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="delegation_emails"
    )
    kind = models.CharField(max_length=12, choices=Kind.choices)
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["-sent_at", "-id"]
        indexes = [models.Index(fields=["pi", "-sent_at"], name="delegation_email_pi_recent")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to {self.delegate} for {self.pi} ({self.sent_at:%Y-%m-%d})"
