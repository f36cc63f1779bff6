"""Forms of the rating admin screens. They check input; the services enforce the rules."""

from __future__ import annotations

import re
from typing import Any

from django import forms

from billing.models import BillingPeriod

from .models import Rate, Subsidy


def _lines(text: str) -> list[str]:
    """One value per line (commas separate too)."""
    return [v.strip() for v in re.split(r"[\n,]", text or "") if v.strip()]


class RateForm(forms.ModelForm):
    class Meta:
        model = Rate
        fields = ["source", "unit", "tier", "price", "free_quantity", "effective_from", "note"]
        widgets = {"effective_from": forms.TextInput(attrs={"placeholder": "YYYY-MM", "size": 8})}


class SubsidyForm(forms.ModelForm):
    projects_text = forms.CharField(
        label="Projects",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 40}),
        help_text="Project ids, one per line. Empty: every project.",
    )
    pis_text = forms.CharField(
        label="PIs",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 40}),
        help_text="PI emails, one per line. Empty: every PI.",
    )

    class Meta:
        model = Subsidy
        fields = [
            "name",
            "percent",
            "source",
            "tier",
            "cap",
            "effective_from",
            "effective_until",
            "position",
            "note",
        ]
        widgets = {
            "effective_from": forms.TextInput(attrs={"placeholder": "YYYY-MM", "size": 8}),
            "effective_until": forms.TextInput(attrs={"placeholder": "YYYY-MM", "size": 8}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance and self.instance.pk:
            self.fields["projects_text"].initial = "\n".join(self.instance.projects or [])
            self.fields["pis_text"].initial = "\n".join(self.instance.pis or [])

    def service_values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "percent": data["percent"],
            "source": data["source"].slug if data.get("source") else None,
            "tier": data.get("tier", ""),
            "projects": _lines(data.get("projects_text", "")),
            "pis": _lines(data.get("pis_text", "")),
            "cap": data.get("cap"),
            "effective_from": data["effective_from"],
            "effective_until": data.get("effective_until", ""),
            "position": data.get("position", 100),
            "note": data.get("note", ""),
        }


class RerateForm(forms.Form):
    period = forms.ModelChoiceField(
        queryset=BillingPeriod.objects.filter(status=BillingPeriod.Status.OPEN).order_by("-period"),
        to_field_name="period",
        help_text="Only open periods can be re-rated.",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required: kept in the re-rating log with your name.",
        error_messages={"required": "A reason is required to re-rate a period."},
    )
