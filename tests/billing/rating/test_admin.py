"""The rating admin screens as a billing admin and a viewer use them: rates and subsidies saved
through the services with an audit history, usage files read-only, re-rating a period."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from accounts import roles
from accounts.services import roles_ensure
from billing.rating import services
from billing.rating.models import Rate, Rerate, Subsidy
from billing.services import account_mapping_set
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db
User = get_user_model()


def _client(username: str, role: str) -> Client:
    groups = roles_ensure()
    user = User.objects.create_user(username, f"{username}@university.example", "pw", is_staff=True)
    user.groups.add(groups[role])
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_client(db) -> Client:
    return _client("bella", roles.BILLING_ADMIN)


@pytest.fixture
def viewer_client(db) -> Client:
    return _client("victor", roles.VIEWER)


def test_a_billing_admin_adds_and_edits_a_rate_with_history(admin_client):
    hpc = SourceFactory(slug="hpc")
    response = admin_client.post(
        reverse("admin:billing_rate_add"),
        {
            "source": hpc.pk,
            "unit": "core-hour",
            "tier": "",
            "price": "0.0200",
            "free_quantity": "100",
            "effective_from": "2025-07",
            "note": "FY26 board rate",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    rate = Rate.objects.get()
    assert (rate.price, rate.free_quantity, rate.actor_name) == (Decimal("0.0200"), Decimal("100"), "bella")
    response = admin_client.post(
        reverse("admin:billing_rate_change", args=[rate.pk]),
        {"price": "0.0250", "free_quantity": "100", "note": "corrected"},
    )
    assert response.status_code == 302
    rate.refresh_from_db()
    assert rate.price == Decimal("0.0250") and rate.effective_from == "2025-07"
    history = admin_client.get(reverse("admin:billing_rate_auditlog", args=[rate.pk]))
    assert history.status_code == 200 and "0.0250" in history.content.decode()
    listing = admin_client.get(reverse("admin:billing_rate_changelist")).content.decode()
    assert "0.0250" in listing and "2025-07" in listing


def test_a_duplicate_rate_from_the_admin_is_an_error_message(admin_client):
    hpc = SourceFactory(slug="hpc")
    services.rate_add(source="hpc", unit="core-hour", price="0.02", effective_from="2025-07")
    response = admin_client.post(
        reverse("admin:billing_rate_add"),
        {
            "source": hpc.pk,
            "unit": "core-hour",
            "price": "0.03",
            "free_quantity": "0",
            "effective_from": "2025-07",
        },
    )
    assert Rate.objects.count() == 1
    assert response.status_code == 200 and "already exists" in response.content.decode()


def test_a_billing_admin_adds_a_subsidy_with_projects_and_pis(admin_client):
    response = admin_client.post(
        reverse("admin:billing_subsidy_add"),
        {
            "name": "New Faculty Startup",
            "percent": "75",
            "position": "100",
            "tier": "",
            "projects_text": "p1\np2",
            "pis_text": "Ada@uni.edu, bob@uni.edu",
            "cap": "5000",
            "effective_from": "2025-07",
            "effective_until": "",
            "note": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    subsidy = Subsidy.objects.get()
    assert subsidy.projects == ["p1", "p2"] and subsidy.pis == ["ada@uni.edu", "bob@uni.edu"]
    page = admin_client.get(reverse("admin:billing_subsidy_change", args=[subsidy.pk])).content.decode()
    assert "ada@uni.edu" in page
    assert "75 %" in admin_client.get(reverse("admin:billing_subsidy_changelist")).content.decode()


def test_a_viewer_sees_rates_but_cannot_add_or_rerate(viewer_client):
    assert viewer_client.get(reverse("admin:billing_rate_changelist")).status_code == 200
    assert viewer_client.get(reverse("admin:billing_rate_add")).status_code == 403
    assert viewer_client.get(reverse("admin:billing_usagefile_rerate")).status_code == 403


def test_rerating_from_the_admin_is_logged_with_the_user_and_reason(admin_client, tmp_path):
    SourceFactory(slug="hpc")
    services.rate_add(source="hpc", unit="core-hour", price="0.02", effective_from="2025-01")
    account_mapping_set(sub_account_id="chem", project_id="chem-md", pi_email="alice@uni.edu", source="hpc")
    path = Path(tmp_path / "sacct.txt")
    path.write_text("1|a|chem|cpu|normal|10|cpu=10|3600|2025-03-04T00:00:00|2025-03-04T01:00:00|COMPLETED\n")
    services.usage_rate(
        kind="slurm", path=path, period="2025-03", source="hpc", now=dt.datetime(2025, 4, 2, tzinfo=dt.UTC)
    )
    rate = Rate.objects.get()
    services.rate_update(rate_id=rate.pk, price="0.03")
    page = admin_client.get(reverse("admin:billing_usagefile_rerate"))
    assert page.status_code == 200 and "sacct.txt" in page.content.decode()
    refused = admin_client.post(
        reverse("admin:billing_usagefile_rerate"), {"period": "2025-03", "reason": ""}
    )
    assert refused.status_code == 200 and not Rerate.objects.exists()
    response = admin_client.post(
        reverse("admin:billing_usagefile_rerate"), {"period": "2025-03", "reason": "board raised the rate"}
    )
    assert response.status_code == 302
    rerate = Rerate.objects.get()
    assert (rerate.actor_name, rerate.reason) == ("bella", "board raised the rate")
    assert (rerate.billed_before, rerate.billed_after) == (Decimal("0.20"), Decimal("0.30"))
    assert any("Re-rated 2025-03" in str(m) for m in get_messages(response.wsgi_request))
    assert admin_client.get(reverse("admin:billing_rerate_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:billing_usagefile_changelist")).status_code == 200
