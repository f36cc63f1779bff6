"""Rates, subsidies, stored usage files and how each rated or subsidised charge was worked out.

Part of the billing app (imported by billing/models.py), so the tables are billing_*.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from chargeback.money import MoneyField

from .units import PRICE_PLACES, QUANTITY_PLACES, UNIT_CHOICES

PERIOD_REGEX = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


class _Edited(models.Model):
    """Who last changed a rule and when; every change is in the audit log (the admin's history)."""

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        abstract = True


class Rate(_Edited):
    """A price per unit for a source's usage, from a month on, optionally for one tier only.

    A newer rate for the same source, unit and tier takes over from its month; periods rated
    before keep the charges (and prices) they were rated with.
    """

    source = models.ForeignKey("billing.Source", on_delete=models.PROTECT, related_name="rates")
    unit = models.CharField(max_length=12, choices=UNIT_CHOICES)
    tier = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="A Slurm partition or a storage class. Empty: every tier without a rate of its own.",
    )
    price = models.DecimalField(
        max_digits=18,
        decimal_places=PRICE_PLACES,
        help_text=f"Per unit, in the installation's currency (up to {PRICE_PLACES} decimal places).",
    )
    free_quantity = models.DecimalField(
        "free allowance",
        max_digits=20,
        decimal_places=QUANTITY_PLACES,
        default=0,
        help_text="Units free of charge per project per month, taken off before subsidies.",
    )
    effective_from = models.CharField(
        max_length=7, help_text="YYYY-MM: the first month this rate applies to."
    )
    note = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["source__slug", "unit", "tier", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "unit", "tier", "effective_from"], name="rate_one_per_month"
            ),
            models.CheckConstraint(condition=Q(effective_from__regex=PERIOD_REGEX), name="rate_month_format"),
            models.CheckConstraint(condition=Q(price__gte=0), name="rate_price_not_negative"),
            models.CheckConstraint(condition=Q(free_quantity__gte=0), name="rate_free_not_negative"),
        ]

    def __str__(self) -> str:
        tier = f" [{self.tier}]" if self.tier else ""
        return f"{self.source.slug} {self.unit}{tier} @ {self.price} from {self.effective_from}"


class Subsidy(_Edited):
    """A named rule paying part of matching charges: a percent off what remains to be billed
    (after free allowances and subsidies earlier in the order), up to an optional cap per project
    per fiscal year. Every criterion given must match; an empty one matches everything."""

    name = models.CharField(max_length=100, unique=True)
    percent = models.DecimalField(
        max_digits=5, decimal_places=2, help_text="Percent off, more than 0 and at most 100."
    )
    source = models.ForeignKey(
        "billing.Source",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="subsidies",
        help_text="Empty: every source.",
    )
    tier = models.CharField(max_length=100, blank=True, default="", help_text="Empty: every tier.")
    projects = models.JSONField(default=list, blank=True, help_text="Project ids; empty: every project.")
    pis = models.JSONField("PIs", default=list, blank=True, help_text="PI emails; empty: every PI.")
    cap = MoneyField(
        null=True, blank=True, help_text="Most it pays per project per fiscal year. Empty: no cap."
    )
    effective_from = models.CharField(max_length=7, help_text="YYYY-MM: the first month it applies to.")
    effective_until = models.CharField(
        max_length=7, blank=True, default="", help_text="YYYY-MM: the last month it applies to. Empty: open."
    )
    position = models.PositiveIntegerField(
        default=100,
        help_text="Subsidies apply in this order (then by name), each to what the ones before left.",
    )
    note = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        verbose_name_plural = "subsidies"
        ordering = ["position", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(percent__gt=0) & Q(percent__lte=100), name="subsidy_percent_range"
            ),
            models.CheckConstraint(
                condition=Q(effective_from__regex=PERIOD_REGEX), name="subsidy_from_format"
            ),
            models.CheckConstraint(
                condition=Q(effective_until="") | Q(effective_until__regex=PERIOD_REGEX),
                name="subsidy_until_format",
            ),
            models.CheckConstraint(
                condition=Q(cap__isnull=True) | Q(cap__gte=0), name="subsidy_cap_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class UsageFile(models.Model):
    """A usage file as delivered (sacct output, a quota report), kept so its period can be rated
    again, and the import that holds its charges now."""

    class Kind(models.TextChoices):
        SLURM = "slurm", "Slurm jobs (sacct)"
        STORAGE = "storage", "Storage quotas"

    source = models.ForeignKey("billing.Source", on_delete=models.PROTECT, related_name="usage_files")
    period = models.ForeignKey("billing.BillingPeriod", on_delete=models.PROTECT, related_name="usage_files")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    original_name = models.CharField(max_length=255)
    file = models.FileField(upload_to="usage/%Y/%m/", max_length=500)
    sha256 = models.CharField(verbose_name="SHA-256 checksum", max_length=64, db_index=True)
    size_bytes = models.BigIntegerField(verbose_name="size (bytes)", default=0)
    import_run = models.ForeignKey(
        "billing.Import",
        on_delete=models.PROTECT,
        related_name="usage_files",
        help_text="The import holding this file's charges (the latest rating).",
    )
    summary = models.JSONField(default=dict, blank=True, help_text="What the last rating read and skipped.")
    created_at = models.DateTimeField(auto_now_add=True)
    rated_at = models.DateTimeField(null=True, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(verbose_name="rated by", max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["slurm", "storage"]), name="usage_file_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.original_name} ({self.source_id} {self.period_id})"


class Rerate(models.Model):
    """One re-rating of a period with the rules of the day: who, when, why, and what changed."""

    period = models.ForeignKey("billing.BillingPeriod", on_delete=models.PROTECT, related_name="rerates")
    reason = models.TextField()
    billed_before = MoneyField(default=0)
    billed_after = MoneyField(default=0)
    details = models.JSONField(
        default=list,
        blank=True,
        help_text="Per usage file: source, name, import replaced and new, billed before/after.",
    )
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(verbose_name="by", max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "re-rating"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"rerate of {self.period_id} by {self.actor_name}"


class ChargeRating(models.Model):
    """How a rated charge was priced: quantity × unit price, less the free allowance it used."""

    charge = models.OneToOneField("billing.Charge", on_delete=models.CASCADE, related_name="rating")
    rate = models.ForeignKey(Rate, on_delete=models.PROTECT, related_name="charge_ratings")
    unit = models.CharField(max_length=12)
    tier = models.CharField(max_length=100, blank=True, default="")
    quantity = models.DecimalField(max_digits=28, decimal_places=QUANTITY_PLACES)
    unit_price = models.DecimalField(max_digits=18, decimal_places=PRICE_PLACES)
    free_quantity = models.DecimalField(max_digits=28, decimal_places=QUANTITY_PLACES, default=0)
    free_amount = MoneyField(default=0)

    def __str__(self) -> str:
        return f"{self.quantity} {self.unit} @ {self.unit_price}"


class ChargeSubsidy(models.Model):
    """The part of one charge a subsidy paid (the charge's billed cost is what is left)."""

    charge = models.ForeignKey(
        "billing.Charge", on_delete=models.CASCADE, related_name="subsidies", db_index=False
    )
    subsidy = models.ForeignKey(Subsidy, on_delete=models.PROTECT, related_name="charge_subsidies")
    name = models.CharField(max_length=100, help_text="The subsidy's name when it was applied.")
    percent = models.DecimalField(max_digits=5, decimal_places=2)
    amount = MoneyField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=["charge"], name="chargesubsidy_charge"),
            models.Index(fields=["subsidy", "charge"], name="chargesubsidy_subsidy"),
        ]

    def __str__(self) -> str:
        return f"{self.name}: {self.amount}"
