"""The approval page warns when the journal will refuse the charges anyway: here a fund/org
that the journal's fund/org split regex does not match (journals registers the check with
billing.extensions)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.models import Charge
from journals import selectors, services

pytestmark = pytest.mark.django_db


def test_fund_org_the_journal_cannot_split_is_announced_on_approval(reference_month, admin_client):
    charge = Charge.objects.filter(fund_org="BIO-2024-001").first()
    page = reverse("admin:billing_charge_decide")
    query = {"action": "approve", "ids": str(charge.pk)}
    assert "The journal will refuse" not in admin_client.get(page, query).content.decode()

    services.journal_settings_update(fund_org_regex=r"(?P<fund>\d{6})-(?P<orgn>\d{4})")
    html = admin_client.get(page, query).content.decode()
    assert "The journal will refuse 1 of these charge" in html
    assert "BIO-2024-001 does not match the journal" in html
    assert selectors.charges_journal_objections(Charge.objects.filter(pk=charge.pk)) == [
        ("fund/org BIO-2024-001 does not match the journal's fund/org split regex", 1)
    ]
    # Rejecting is never refused by the journal: no warning.
    assert (
        "The journal will refuse"
        not in admin_client.get(page, {**query, "action": "reject"}).content.decode()
    )
