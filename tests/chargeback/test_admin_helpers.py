"""The large-table admin helpers: a changelist's rows render exactly as Django's own would (the
checkbox, the link to the row with the list's filters), without a template or a URL resolved per row."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.admin.options import ModelAdmin
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from billing.models import Charge
from tests.factories import ChargeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    user = get_user_model().objects.create_superuser("sam", "sam@university.example", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_the_row_checkbox_is_djangos():
    charge = ChargeFactory()
    charge_admin = admin.site._registry[Charge]
    assert charge_admin.action_checkbox(charge) == ModelAdmin.action_checkbox(charge_admin, charge)


@pytest.mark.parametrize("params", [{}, {"period": "2025-01"}, {"period": "2025-01", "q": "r-1 & <b>"}])
def test_row_links_are_djangos_with_the_lists_filters(client, params):
    for n in range(3):
        ChargeFactory(resource_id=f"r-{n} & <b>")
    response = client.get(reverse("admin:billing_charge_changelist"), params)
    assert response.status_code == 200
    cl = response.context["cl"]
    preserved = admin.site._registry[Charge].get_preserved_filters(response.wsgi_request)
    html = response.content.decode()
    assert cl.result_list
    for charge in cl.result_list:
        expected = add_preserved_filters(
            {"preserved_filters": preserved, "opts": Charge._meta},
            reverse("admin:billing_charge_change", args=[charge.pk]),
        )
        assert cl.url_for_result(charge) == expected
        assert html.count(f'href="{expected.replace("&", "&amp;")}"') == 1
    assert ("_changelist_filters" in expected) == bool(params)


def test_admin_page_context_is_the_sites_with_the_models_options():
    from django.test import RequestFactory

    from chargeback.admin_helpers import admin_page_context

    request = RequestFactory().get("/admin/")
    request.user = get_user_model().objects.create_superuser("kim", "kim@university.example", "pw")
    charge_admin = admin.site._registry[Charge]

    own = admin_page_context(request, "Review", charge_admin, currency="EUR")
    assert own["title"] == "Review"
    assert own["opts"] is Charge._meta and own["app_label"] == "billing"
    assert own["currency"] == "EUR"
    assert own["site_header"] == admin.site.site_header  # the site's own context is there

    plain = admin_page_context(request, "Help", topics=[])
    assert "opts" not in plain and plain["topics"] == [] and plain["title"] == "Help"
