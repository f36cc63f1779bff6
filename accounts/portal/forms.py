"""Forms of the portal: sign-in by email, set password, charge filters, delegation."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm, SetPasswordForm

from .selectors import CHARGE_STATES, ChargeFilters, FilterChoices


class EmailAuthenticationForm(AuthenticationForm):
    """Django's sign-in form with the user name labelled as the email address, compared in lower
    case (user names are email addresses in lower case)."""

    username = forms.CharField(
        label="Email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}),
    )

    def clean(self) -> dict[str, Any]:
        if self.cleaned_data.get("username"):
            self.cleaned_data["username"] = self.cleaned_data["username"].strip().lower()
        return super().clean()


class InvitationPasswordForm(SetPasswordForm):
    """Choose a password (Django's validators apply); saving is the service's job."""

    def save(self, commit: bool = True) -> Any:  # pragma: no cover - the view calls the service
        raise NotImplementedError("use accounts.services.invitation_accept")


class ChargeFilterForm(forms.Form):
    state = forms.ChoiceField(choices=[(k, v[0]) for k, v in CHARGE_STATES.items()], required=False)
    source = forms.ChoiceField(required=False)
    service = forms.ChoiceField(required=False)
    category = forms.ChoiceField(required=False)
    q = forms.CharField(required=False, max_length=200, label="Resource contains")

    def __init__(self, *args: Any, choices: FilterChoices, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["source"].choices = [("", "All sources"), *choices.sources]  # type: ignore[attr-defined]
        self.fields["service"].choices = [("", "All services")] + [(s, s) for s in choices.services]  # type: ignore[attr-defined]
        self.fields["category"].choices = [("", "All kinds")] + [(c, c) for c in choices.categories]  # type: ignore[attr-defined]

    def filters(self) -> ChargeFilters:
        """The filters asked for; invalid values fall back to no filter."""
        data = self.cleaned_data if self.is_valid() else {}
        return ChargeFilters(
            state=data.get("state") or "billed",
            source=data.get("source") or "",
            service=data.get("service") or "",
            category=data.get("category") or "",
            search=(data.get("q") or "").strip(),
        )


class DelegationForm(forms.Form):
    email = forms.EmailField(label="Colleague's email")
    projects = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, label="Projects they may see")

    def __init__(self, *args: Any, projects: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["projects"].choices = [(str(pk), label) for pk, label in projects]  # type: ignore[attr-defined]

    def project_ids(self) -> list[int]:
        return [int(v) for v in self.cleaned_data["projects"]]
