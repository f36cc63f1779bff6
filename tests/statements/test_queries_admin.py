"""The reviewers' queue of charge queries in the admin: the dashboard's count, the queue, the
resolve page (crispy form) for reviewers and billing admins; viewers read but cannot answer."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.cache import cache
from django.test import Client

from accounts import roles
from accounts.portal.selectors import portal_scope
from billing.models import Charge
from statements.models import ChargeQuery
from statements.queries import services
from tests.accounts.conftest import build_world


@pytest.fixture
def world(db, settings):
    cache.clear()
    return build_world(settings)


def _staff(username: str, role: str) -> Client:
    from accounts.services import roles_ensure

    user = get_user_model().objects.create_user(
        username, f"{username}@university.example", "pw", is_staff=True
    )
    user.groups.add(roles_ensure()[role])
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def query(world) -> ChargeQuery:
    charge = Charge.objects.filter(project=world.a1, period__period="2025-01", source__slug="aws").order_by(
        "id"
    )[0]
    return services.query_raise(
        visible=portal_scope(world.user_a).q(),
        charge_id=charge.pk,
        reason="We never ran this VM.",
        actor=world.user_a,
    )


def test_dashboard_counts_open_queries_and_the_queue_lists_them(world, query):
    client = _staff("victor", roles.VIEWER)
    html = client.get("/admin/?period=2025-01").content.decode()
    assert 'data-card="queries"' in html and "Charge queries" in html
    assert '<span class="ocb-card-value">1</span><span class="ocb-card-note">open, asked by PIs' in html
    queue = client.get("/admin/statements/chargequery/").content.decode()
    assert f"/admin/statements/chargequery/{query.pk}/change/" in queue and "We never ran this VM." in queue
    assert "ada@university.example" in queue and "$80.00" in queue
    page = client.get(f"/admin/statements/chargequery/{query.pk}/change/").content.decode()
    assert "We never ran this VM." in page
    assert "Answer and resolve" not in page  # a viewer cannot answer


def test_viewer_cannot_resolve(world, query):
    client = _staff("victor", roles.VIEWER)
    url = f"/admin/statements/chargequery/{query.pk}/resolve/"
    assert client.get(url).status_code == 403
    assert client.post(url, {"resolution": "rejected", "answer": "no"}).status_code == 403
    query.refresh_from_db()
    assert query.is_open


@pytest.mark.parametrize("role", [roles.REVIEWER, roles.BILLING_ADMIN])
def test_reviewer_or_admin_resolves_with_a_credit(world, query, role, django_capture_on_commit_callbacks):
    client = _staff("rita", role)
    url = f"/admin/statements/chargequery/{query.pk}/resolve/"
    page = client.get(url).content.decode()
    assert 'name="resolution"' in page and 'name="credit_amount"' in page and "We never ran this VM." in page
    # Bad input: no answer, a credit without an amount.
    bad = client.post(url, {"resolution": "credited", "answer": ""})
    assert bad.status_code == 200 and "A credit needs an amount." in bad.content.decode()
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {"resolution": "credited", "answer": "Refunded.", "credit_amount": "12.34"})
    assert done.status_code == 302
    query.refresh_from_db()
    assert query.resolution == "credited" and query.credit_amount == Decimal("12.34")
    assert query.resolved_by.username == "rita"
    assert len(mail.outbox) == 1
    # Twice: already resolved, nothing more happens.
    again = client.post(url, {"resolution": "rejected", "answer": "x"})
    assert again.status_code == 302
    assert Charge.objects.filter(charge_category="Credit").count() == 1 and len(mail.outbox) == 1
    # The dashboard count went down.
    html = client.get("/admin/?period=2025-01").content.decode()
    assert '<span class="ocb-card-value">0</span><span class="ocb-card-note">open, asked by PIs' in html


def test_resolve_refusal_is_shown_on_the_form(world, query):
    from billing.models import BillingPeriod

    BillingPeriod.objects.filter(period="2025-01").update(status="finalized")
    client = _staff("rita", roles.REVIEWER)
    url = f"/admin/statements/chargequery/{query.pk}/resolve/"
    response = client.post(url, {"resolution": "credited", "answer": "Refunded.", "credit_amount": "5"})
    assert response.status_code == 200
    assert "period 2025-01 is finalized: a credit cannot be added" in response.content.decode()
    query.refresh_from_db()
    assert query.is_open
