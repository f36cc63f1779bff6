"""Spending over time: per period and source, exact to the cent, for a PI and a project; the
dashboard's period-over-period change per source; and the admin pages that show them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from accounts import roles
from accounts.services import roles_ensure
from billing import spending
from billing.selectors import SourceHistory
from tests.factories import ChargeFactory, PeriodFactory, PIFactory, ProjectFactory, SourceFactory


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def history(db) -> dict[str, Any]:
    """Ada: project genomics over 2024-11..2025-01 on aws and hpc (with awkward cents), a flagged
    and a rejected charge; Bob's project in the same periods must not count."""
    aws = SourceFactory(slug="aws", display_name="Amazon Web Services")
    hpc = SourceFactory(slug="hpc", display_name="HPC cluster")
    ada = PIFactory(email="ada@university.example", name="Ada Lovelace")
    bob = PIFactory(email="bob@university.example", name="Bob")
    genomics = ProjectFactory(project_id="ada-genomics", pi=ada)
    climate = ProjectFactory(project_id="ada-climate", pi=ada)
    bridges = ProjectFactory(project_id="bob-bridges", pi=bob)
    for period in ("2024-11", "2024-12", "2025-01"):
        PeriodFactory(period=period, status="closed" if period < "2025-01" else "open")
    p11, p12, p01 = (PeriodFactory(period=p) for p in ("2024-11", "2024-12", "2025-01"))
    charge = ChargeFactory
    # 2024-11: aws 0.105 + 0.105 (list 0.2), hpc 10 (list 40)
    charge(period=p11, source=aws, project=genomics, list_cost=Decimal("0.1"), billed_cost=Decimal("0.105"))
    charge(period=p11, source=aws, project=genomics, list_cost=Decimal("0.1"), billed_cost=Decimal("0.105"))
    charge(period=p11, source=hpc, project=genomics, list_cost=Decimal("40"), billed_cost=Decimal("10"))
    # 2024-12: nothing. 2025-01: aws 100/85 ok, 33.333 approved, 7 flagged, 1000 rejected; climate hpc 12.5
    charge(period=p01, source=aws, project=genomics, list_cost=Decimal("100"), billed_cost=Decimal("85"))
    charge(
        period=p01,
        source=aws,
        project=genomics,
        list_cost=Decimal("33.333"),
        billed_cost=Decimal("33.333"),
        review_state="approved",
    )
    charge(period=p01, source=aws, project=genomics, billed_cost=Decimal("7"), review_state="flagged")
    charge(period=p01, source=aws, project=genomics, billed_cost=Decimal("1000"), review_state="rejected")
    charge(period=p01, source=hpc, project=climate, list_cost=Decimal("50"), billed_cost=Decimal("12.5"))
    charge(period=p01, source=aws, project=bridges, list_cost=Decimal("999"), billed_cost=Decimal("999"))
    return {"ada": ada, "bob": bob, "genomics": genomics, "climate": climate, "periods": (p11, p12, p01)}


def test_project_spending_per_period_and_source(history):
    data = spending.project_spending(history["genomics"])
    assert len(data.periods) == 24
    assert data.periods[0].period == "2023-02" and data.periods[-1].period == "2025-01"
    by_period = {p.period: p for p in data.periods}
    nov, dec, jan = by_period["2024-11"], by_period["2024-12"], by_period["2025-01"]
    assert (nov.charges, nov.list_total, nov.billed_total) == (3, Decimal("40.2"), Decimal("10.21"))
    assert nov.discount == Decimal("29.99")
    assert nov.by_source == {"aws": Decimal("0.21"), "hpc": Decimal("10")}
    assert nov.status == "closed"
    assert (dec.charges, dec.billed_total, dec.by_source) == (0, Decimal(0), {})
    assert (jan.charges, jan.list_total, jan.billed_total) == (2, Decimal("133.333"), Decimal("118.333"))
    assert (jan.flagged, jan.flagged_billed) == (1, Decimal("7"))  # the rejected charge is nowhere
    assert data.sources == [("aws", "Amazon Web Services"), ("hpc", "HPC cluster")]
    assert data.billed_total == Decimal("128.543") and data.list_total == Decimal("173.533")
    assert data.source_totals() == {"aws": Decimal("118.543"), "hpc": Decimal("10")}
    # Exact: Decimals all the way through the pandas pivot, never floats.
    assert all(isinstance(v, Decimal) for v in data.pivot.to_numpy().ravel())
    assert all(isinstance(v, Decimal) for p in data.periods for v in p.by_source.values())


def test_pi_spending_adds_up_the_pis_projects_only(history):
    data = spending.pi_spending(history["ada"])
    jan = data.periods[-1]
    assert jan.billed_total == Decimal("130.833")  # 118.333 genomics + 12.5 climate; not Bob's 999
    assert jan.by_source == {"aws": Decimal("118.333"), "hpc": Decimal("12.5")}
    bob = spending.pi_spending(history["bob"])
    assert bob.billed_total == Decimal("999") and bob.sources == [("aws", "Amazon Web Services")]


def test_spending_until_an_earlier_period_and_nothing_at_all(history):
    data = spending.project_spending(history["genomics"], until="2024-12", count=2)
    assert [p.period for p in data.periods] == ["2024-11", "2024-12"]
    assert data.billed_total == Decimal("10.21")
    empty = spending.project_spending(ProjectFactory(project_id="idle"), count=3)
    assert [p.billed_total for p in empty.periods] == [Decimal(0)] * 3 and empty.sources == []
    assert empty.history().periods == ["2024-11", "2024-12", "2025-01"]


def test_source_changes_period_over_period():
    history = SourceHistory(
        periods=["2024-12", "2025-01"],
        sources=[("aws", "AWS"), ("hpc", "HPC"), ("gcp", "GCP"), ("old", "Old")],
        billed={
            "aws": [Decimal("100"), Decimal("150.50")],
            "hpc": [Decimal("80"), Decimal("60")],
            "gcp": [Decimal("0"), Decimal("5")],
            "old": [Decimal("0"), Decimal("0")],
        },
    )
    changes = {c.slug: c for c in spending.source_changes(history)}
    assert set(changes) == {"aws", "hpc", "gcp"}  # nothing in either period: not listed
    assert changes["aws"].change == Decimal("50.50") and changes["aws"].percent == Decimal("50.5")
    assert changes["hpc"].change == Decimal("-20") and changes["hpc"].percent == Decimal("-25.0")
    assert changes["gcp"].percent is None  # new this period
    assert [c.slug for c in spending.source_changes(history)] == ["aws", "hpc", "gcp"]
    assert spending.source_changes(SourceHistory()) == []


# --- the admin pages ----------------------------------------------------------------------------


def _client(username: str, role: str | None) -> Client:
    groups = roles_ensure()
    user = get_user_model().objects.create_user(
        username, f"{username}@university.example", "pw", is_staff=True
    )
    if role:
        user.groups.add(groups[role])
    client = Client()
    client.force_login(user)
    return client


def test_project_page_shows_chart_table_statements_and_flags(history):
    client = _client("victor", roles.VIEWER)
    response = client.get(spending.project_spending_url("ada-genomics"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Spending · project ada-genomics" in html
    assert "<svg" in html and 'aria-label="Billed per source per period"' in html
    assert "$128.54" in html  # billed over the 24 periods (display rounds the exact sum)
    assert "$10.21" in html and "$118.33" in html
    assert "state=flagged" in html and "1 · $7.00" in html  # January's open flag links to the charges
    assert html.count("<tr") >= 24 + 2  # a row per period, header and total
    assert spending.pi_spending_url("ada@university.example") in html.replace("&amp;", "&")


def test_pi_page_and_statements(history, settings):
    from statements import services as statement_services

    statement_services.statements_generate(period="2025-01", actor_name="test")
    client = _client("victor", roles.VIEWER)
    html = client.get(spending.pi_spending_url("ada@university.example")).content.decode()
    assert "Spending · Ada Lovelace" in html
    assert "2025-01-0001 v1" in html or "2025-01-0002 v1" in html
    assert "$130.83" in html
    assert spending.project_spending_url("ada-climate") in html.replace("&amp;", "&")


def test_spending_pages_refuse_unknown_subjects_and_non_staff(history):
    client = _client("victor", roles.VIEWER)
    assert client.get(spending.project_spending_url("nope")).status_code == 404
    assert client.get(spending.pi_spending_url("nobody@x.example")).status_code == 404
    assert client.get("/admin/spending/pi/").status_code == 404
    outsider = _client("nobody", None)  # staff without a role: no billing permission
    assert outsider.get(spending.project_spending_url("ada-genomics")).status_code == 403
    anonymous = Client().get(spending.project_spending_url("ada-genomics"))
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]


def test_names_link_to_spending_pages(history):
    client = _client("rita", roles.REVIEWER)
    pi_url = spending.pi_spending_url("ada@university.example").replace("&", "&amp;")
    project_url = spending.project_spending_url("ada-genomics").replace("&", "&amp;")
    pages = {
        "PIs": "/admin/billing/pi/",
        "projects": "/admin/billing/project/",
        "charges": "/admin/billing/charge/?period=2025-01",
        "review queue": "/admin/billing/charge/review/?period=2025-01",
        "dashboard": "/admin/?period=2025-01",
    }
    for name, url in pages.items():
        html = client.get(url).content.decode()
        assert pi_url in html, name
        if name != "PIs":
            assert project_url in html, name
    charge = history["genomics"].charges.first()
    html = client.get(f"/admin/billing/charge/{charge.pk}/change/").content.decode()
    assert pi_url in html and project_url in html


def test_dashboard_shows_change_per_source(history):
    client = _client("victor", roles.VIEWER)
    html = client.get("/admin/?period=2025-01").content.decode()
    assert "Change per source · vs 2024-12" in html
