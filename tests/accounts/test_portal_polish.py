"""The portal's chart reads plainly (month labels such as "Nov 2025", a legend that says what each
colour is), and pages that show exact sums beside rounded statements say why they may differ."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.portal.views import month_label
from tests.accounts.conftest import client_for

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("period", "label"), [("2025-11", "Nov 2025"), ("2025-01", "Jan 2025"), ("2024-12", "Dec 2024")]
)
def test_month_labels(period, label):
    assert month_label(period) == label


def test_the_chart_has_month_labels_and_a_legend_in_words(world):
    html = client_for(world.user_a).get(reverse("portal:home")).content.decode()
    labels = re.findall(r'<text class="bar-label"[^>]*>(.*?)</text>', html)
    assert labels[-2:] == ["Dec 2024", "Jan 2025"] and len(labels) == 12
    assert labels[0] == "Feb 2024"
    legend = re.search(r'<figcaption class="legend">(.*?)</figcaption>', html, re.S).group(1)
    assert "List price: what it would have cost before discounts and subsidies" in legend
    assert "Billed to you: the amount due on your statements" in legend


def test_the_portal_period_page_explains_cents_between_charges_and_statements(world):
    html = client_for(world.user_a).get(reverse("portal:period", args=["2025-01"])).content.decode()
    assert 'id="cents-note"' in html
    assert "a statement\n  rounds each of its lines" in html or "rounds each of its lines" in " ".join(
        html.split()
    )


def test_the_period_page_explains_a_rounding_difference(db, settings):
    from django.contrib.auth import get_user_model
    from django.test import Client

    from accounts import roles
    from accounts.services import roles_ensure
    from billing.models import BillingPeriod
    from statements import services
    from tests.factories import ChargeFactory, PeriodFactory, ProjectFactory, SourceFactory

    period = PeriodFactory(period="2025-03")
    source = SourceFactory(slug="aws")
    project = ProjectFactory(project_id="tiny", fund_org="F-1")
    for _ in range(3):  # three charges of $0.004: exactly $0.012, one line of $0.01
        ChargeFactory(
            period=period,
            source=source,
            project=project,
            service_name="S3",
            list_cost=Decimal("0.004"),
            billed_cost=Decimal("0.004"),
        )
    services.statements_generate(period="2025-03")
    user = get_user_model().objects.create_user("v", "v@u.example", "pw", is_staff=True)
    user.groups.add(roles_ensure()[roles.VIEWER])
    client = Client()
    client.force_login(user)
    pk = BillingPeriod.objects.get(period="2025-03").pk
    html = " ".join(
        client.get(reverse("admin:billing_billingperiod_change", args=[pk])).content.decode().split()
    )
    assert "The statements add up to $0.01; the exact sum of their charges is $0.012." in html
    assert "The difference of -$0.002 is rounding" in html
    assert reverse("ocb_help_topic", args=["cents"]) in html
