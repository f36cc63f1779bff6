"""The PI portal: what a PI and a delegate see, the 404 wall around everybody else's objects,
charges with filters and totals, CSV and PDF downloads (audited), the spend chart."""

from __future__ import annotations

import csv
import io
import logging
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import get_resolver, reverse

from accounts.models import Delegation
from accounts.portal import selectors
from statements.models import Statement
from tests.accounts.conftest import client_for

pytestmark = pytest.mark.django_db


def _portal_patterns() -> set[str]:
    resolver = get_resolver()
    portal = resolver.namespace_dict["portal"][1]
    return {str(getattr(p, "name", "")) for p in portal.url_patterns}


# --- what a PI sees -------------------------------------------------------------------------


def test_home_lists_current_and_superseded_statements_with_chart(world):
    response = client_for(world.user_a).get(reverse("portal:home"))
    assert response.status_code == 200
    html = response.content.decode()
    superseded = [s for s in world.statements_a if s.state == Statement.State.SUPERSEDED]
    assert len(superseded) == 1
    for statement in world.statements_a:
        assert reverse("portal:statement", args=[statement.pk]) in html
        assert reverse("portal:statement_pdf", args=[statement.pk]) in html
    for statement in world.statements_b:
        assert reverse("portal:statement", args=[statement.pk]) not in html
    assert "bob-bridges" not in html and "$999" not in html
    assert "January 2025" in html and "December 2024" in html
    assert "<svg" in html and "Spend over the last 12 months" in html
    assert "badge-superseded" in html
    # No inline script or style attribute: the CSP allows none on the portal.
    assert "<script>" not in html and " style=" not in html and "onclick" not in html


def test_spend_covers_twelve_periods_of_current_statements(world):
    points = selectors.portal_spend(selectors.portal_scope(world.user_a))
    assert [p.period for p in points][-2:] == ["2024-12", "2025-01"]
    assert len(points) == 12 and points[0].period == "2024-02"
    current = {s.period.period: Decimal(0) for s in world.statements_a}
    for s in world.statements_a:
        if s.is_current:
            current[s.period.period] += s.billed_total
    assert points[-1].billed_total == current["2025-01"] == Decimal("109.50")
    assert points[-2].billed_total == current["2024-12"] == Decimal("89.50")
    assert points[-1].list_total == Decimal("180")


def test_period_page_statements_and_projects(world):
    response = client_for(world.user_a).get(reverse("portal:period", args=["2025-01"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert reverse("portal:charges", args=["2025-01", world.a1.pk]) in html
    assert reverse("portal:charges", args=["2025-01", world.a2.pk]) in html
    assert "1 awaiting review" in html  # the flagged charge of ada-genomics is held back
    assert "bob-bridges" not in html


def test_statement_page_and_pdf(world, caplog):
    statement = next(
        s
        for s in world.statements_a
        if s.is_current and s.project_code == "ada-genomics" and s.period.period == "2025-01"
    )
    client = client_for(world.user_a)
    response = client.get(reverse("portal:statement", args=[statement.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert statement.number in html and "v2" in html and "v1" in html  # both versions listed
    assert "$100.00" in html  # amount due: 80 + 0 + 20
    with caplog.at_level(logging.INFO, logger="openchargeback.audit"):
        pdf = client.get(reverse("portal:statement_pdf", args=[statement.pk]))
    assert pdf.status_code == 200
    assert pdf["Content-Type"] == "application/pdf"
    assert f'filename="{statement.pdf_filename}"' in pdf["Content-Disposition"]
    assert b"".join(pdf.streaming_content).startswith(b"%PDF")
    events = [r for r in caplog.records if getattr(r, "event", "") == "statement_downloaded"]
    assert (
        len(events) == 1
        and events[0].actor == world.user_a.username
        and events[0].statement == statement.label
    )


def test_superseded_version_still_downloadable(world):
    old = next(s for s in world.statements_a if not s.is_current)
    client = client_for(world.user_a)
    page = client.get(reverse("portal:statement", args=[old.pk]))
    assert page.status_code == 200 and "superseded" in page.content.decode()
    assert client.get(reverse("portal:statement_pdf", args=[old.pk])).status_code == 200


def test_charges_page_filters_and_totals(world):
    client = client_for(world.user_a)
    url = reverse("portal:charges", args=["2025-01", world.a1.pk])
    response = client.get(url)
    assert response.status_code == 200
    totals = response.context["totals"]
    # ok charges of ada-genomics in 2025-01: aws 100/80, hpc 50/0, late aws 20/20 (flagged one held back)
    assert (totals.count, totals.list_total, totals.billed_total) == (3, Decimal("170"), Decimal("100"))
    assert totals.discount_total == Decimal("70")
    html = response.content.decode()
    assert "$170.00" in html and "$70.00" in html and "$100.00" in html
    only_hpc = client.get(url, {"source": "hpc"}).context["totals"]
    assert (only_hpc.count, only_hpc.list_total, only_hpc.billed_total) == (1, Decimal("50"), Decimal("0"))
    held = client.get(url, {"state": "held"}).context["totals"]
    assert (held.count, held.billed_total) == (1, Decimal("7"))
    search = client.get(url, {"q": "i-late", "state": "all"}).context["totals"]
    assert search.count == 1
    # An unknown filter value falls back to no filter rather than an error.
    assert client.get(url, {"source": "nope"}).status_code == 200


def test_charges_csv(world, caplog):
    client = client_for(world.user_a)
    url = reverse("portal:charges_csv", args=["2025-01", world.a1.pk])
    with caplog.at_level(logging.INFO, logger="openchargeback.audit"):
        response = client.get(url, {"source": "aws"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="charges-2025-01-ada-genomics.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 2
    assert {r["pi_email"] for r in rows} == {"ada@university.example"}
    assert sum(Decimal(r["billed_cost"]) for r in rows) == Decimal("100")
    assert sum(Decimal(r["discount"]) for r in rows) == Decimal("20")
    event = next(r for r in caplog.records if getattr(r, "event", "") == "charges_downloaded")
    assert event.rows == 2 and event.project == "ada-genomics"


def test_csv_neutralises_formulas(world):
    from tests.factories import ChargeFactory

    ChargeFactory(period=world.statements_a[0].period, project=world.a2, resource_name='=HYPERLINK("x")')
    period = world.statements_a[0].period.period
    response = client_for(world.user_a).get(reverse("portal:charges_csv", args=[period, world.a2.pk]))
    text = b"".join(response.streaming_content).decode()
    assert "'=HYPERLINK" in text


def test_no_project_charges_of_own_pi(world):
    from tests.factories import ChargeFactory

    ChargeFactory(period=world.statements_a[0].period, project=None, pi=world.pi_a, pi_email=world.pi_a.email)
    period = world.statements_a[0].period.period
    client = client_for(world.user_a)
    assert client.get(reverse("portal:charges", args=[period, "none"])).status_code == 200
    # Nobody else reaches a PI's charges without a project.
    assert client_for(world.delegate).get(reverse("portal:charges", args=[period, "none"])).status_code == 404


def test_anonymous_is_sent_to_sign_in(world):
    from django.test import Client

    response = Client().get(reverse("portal:home"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("portal:login"))
    assert Client().get("/").status_code == 302


# --- the 404 wall ---------------------------------------------------------------------------


def _urls_with_foreign_ids(world) -> dict[str, list[tuple[str, str]]]:
    """Every portal URL that names an object, filled with PI B's ids (name → [(method, url)])."""
    b_statement = world.statements_b[0]
    from django.contrib.auth import get_user_model

    bobs_manager = get_user_model().objects.create_user("bobs.manager@university.example")
    b_delegation = Delegation.objects.create(pi=world.pi_b, project=world.b1, delegate=bobs_manager)
    bob_only = "2023-06"
    from tests.factories import ChargeFactory, PeriodFactory

    ChargeFactory(period=PeriodFactory(period=bob_only), project=world.b1)
    return {
        "period": [("get", reverse("portal:period", args=[bob_only]))],
        "statement": [("get", reverse("portal:statement", args=[s.pk])) for s in world.statements_b],
        "statement_pdf": [("get", reverse("portal:statement_pdf", args=[s.pk])) for s in world.statements_b],
        "charges": [
            ("get", reverse("portal:charges", args=[b_statement.period.period, world.b1.pk])),
            ("get", reverse("portal:charges", args=[bob_only, world.b1.pk])),
        ],
        "charges_csv": [
            ("get", reverse("portal:charges_csv", args=[b_statement.period.period, world.b1.pk]))
        ],
        "delegation_revoke": [("post", reverse("portal:delegation_revoke", args=[b_delegation.pk]))],
        "delegate_revoke_all": [("post", reverse("portal:delegate_revoke_all", args=[bobs_manager.pk]))],
        "query_charge": [
            (method, reverse("portal:query_charge", args=[charge.pk]))
            for charge in world.b1.charges.all()[:2]
            for method in ("get", "post")
        ],
        "query_line": [
            (method, reverse("portal:query_line", args=[b_statement.lines.first().pk]))
            for method in ("get", "post")
        ],
        "query": [("get", reverse("portal:query", args=[_bobs_query(world).pk]))],
    }


def _bobs_query(world):
    from statements.queries.services import query_raise

    charge = world.b1.charges.first()
    return query_raise(
        visible=selectors.portal_scope(world.user_b).q(),
        charge_id=charge.pk,
        reason="mine",
        actor=world.user_b,
    )


# URLs that name no object of anybody: nothing to guess.
_NO_OBJECT = {
    "home",
    "login",
    "logout",
    "password_reset",
    "password_reset_done",
    "set_password",
    "delegates",
    "queries",
}


def test_every_portal_url_with_another_pis_ids_is_404(world):
    urls = _urls_with_foreign_ids(world)
    assert set(urls) | _NO_OBJECT == _portal_patterns(), "a new portal URL needs its line in this test"
    client = client_for(world.user_a)
    for name, calls in urls.items():
        for method, url in calls:
            response = getattr(client, method)(url)
            assert response.status_code == 404, f"{name}: {url} gave {response.status_code}"
    # B's delegation is still there: A's POST changed nothing.
    assert Delegation.objects.filter(pi=world.pi_b).count() == 1


def test_unknown_ids_are_404_too(world):
    client = client_for(world.user_a)
    for url in (
        reverse("portal:statement", args=[999999]),
        reverse("portal:statement_pdf", args=[999999]),
        reverse("portal:charges", args=["2025-01", 999999]),
        reverse("portal:period", args=["2031-01"]),
    ):
        assert client.get(url).status_code == 404, url


def test_pi_b_sees_own_things_only(world):
    client = client_for(world.user_b)
    for s in world.statements_a:
        assert client.get(reverse("portal:statement", args=[s.pk])).status_code == 404
    for project in (world.a1, world.a2):
        assert client.get(reverse("portal:charges", args=["2025-01", project.pk])).status_code == 404
    assert client.get(reverse("portal:statement", args=[world.statements_b[0].pk])).status_code == 200


# --- delegates ------------------------------------------------------------------------------


def test_delegate_sees_exactly_the_delegated_projects(world):
    client = client_for(world.delegate)
    delegated = [s for s in world.statements_a if s.project_code == "ada-climate"]
    hidden = [s for s in world.statements_a if s.project_code != "ada-climate"] + world.statements_b
    assert delegated and hidden
    scope = selectors.portal_scope(world.delegate)
    assert set(selectors.portal_statements(scope)) == set(delegated)
    html = client.get(reverse("portal:home")).content.decode()
    for s in delegated:
        assert client.get(reverse("portal:statement", args=[s.pk])).status_code == 200
        assert client.get(reverse("portal:statement_pdf", args=[s.pk])).status_code == 200
        assert reverse("portal:statement", args=[s.pk]) in html
    for s in hidden:
        assert client.get(reverse("portal:statement", args=[s.pk])).status_code == 404
        assert client.get(reverse("portal:statement_pdf", args=[s.pk])).status_code == 404
        assert reverse("portal:statement", args=[s.pk]) not in html
    assert "shared with you by Ada Lovelace" in html
    charges = client.get(reverse("portal:charges", args=["2025-01", world.a2.pk]))
    assert charges.status_code == 200 and charges.context["totals"].billed_total == Decimal("9.5")
    assert client.get(reverse("portal:charges_csv", args=["2025-01", world.a2.pk])).status_code == 200
    for project in (world.a1, world.b1):
        assert client.get(reverse("portal:charges", args=["2025-01", project.pk])).status_code == 404
        assert client.get(reverse("portal:charges_csv", args=["2025-01", project.pk])).status_code == 404
    period = client.get(reverse("portal:period", args=["2025-01"])).content.decode()
    assert "ada-climate" in period and "ada-genomics" not in period
    # A delegate who is not a PI has no delegates page of their own.
    assert client.get(reverse("portal:delegates")).status_code == 404


def test_pi_grants_and_revokes(world, mailoutbox, django_capture_on_commit_callbacks, caplog):
    client = client_for(world.user_a)
    assert client.get(reverse("portal:delegates")).status_code == 200
    with (
        django_capture_on_commit_callbacks(execute=True),
        caplog.at_level(logging.INFO, logger="openchargeback.audit"),
    ):
        response = client.post(
            reverse("portal:delegates"),
            {"email": "Lab.Admin@University.example", "projects": [str(world.a1.pk), str(world.a2.pk)]},
        )
    assert response.status_code == 302
    from accounts.selectors import user_for_email

    colleague = user_for_email("lab.admin@university.example")
    assert (
        colleague is not None
        and colleague.is_active
        and not colleague.has_usable_password()
        and colleague.username == "lab.admin@university.example"
    )
    assert set(
        Delegation.objects.filter(delegate=colleague).values_list("project__project_id", flat=True)
    ) == {
        "ada-genomics",
        "ada-climate",
    }
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["lab.admin@university.example"]
    assert "/portal/password/set/" in mailoutbox[0].body and "Ada Lovelace" in mailoutbox[0].body
    assert sum(1 for r in caplog.records if getattr(r, "event", "") == "delegation_granted") == 2

    # Only own projects can be delegated: B's project is not even a choice.
    refused = client.post(
        reverse("portal:delegates"), {"email": "x@university.example", "projects": [str(world.b1.pk)]}
    )
    assert refused.status_code == 200 and not Delegation.objects.filter(project=world.b1).exists()
    # Not to oneself.
    own = client.post(
        reverse("portal:delegates"), {"email": world.pi_a.email, "projects": [str(world.a1.pk)]}
    )
    assert "yourself" in own.content.decode()

    one = Delegation.objects.get(delegate=colleague, project=world.a1)
    assert client.post(reverse("portal:delegation_revoke", args=[one.pk])).status_code == 302
    assert not Delegation.objects.filter(pk=one.pk).exists()
    assert client.post(reverse("portal:delegate_revoke_all", args=[colleague.pk])).status_code == 302
    assert not Delegation.objects.filter(delegate=colleague).exists()
    # GET does not revoke.
    assert client.get(reverse("portal:delegation_revoke", args=[1])).status_code == 405


def test_granting_to_an_existing_user_notifies_them(world, mailoutbox, django_capture_on_commit_callbacks):
    client = client_for(world.user_a)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("portal:delegates"), {"email": world.pi_b.email, "projects": [str(world.a1.pk)]})
    assert len(mailoutbox) == 1 and "shared the billing information of ada-genomics" in mailoutbox[0].body
    # PI B now sees A's genomics statements besides their own.
    scope = selectors.portal_scope(world.user_b)
    codes = set(selectors.portal_statements(scope).values_list("project_code", flat=True))
    assert codes == {"bob-bridges", "ada-genomics"}


def test_responsive_and_dark_mode_assets(world):
    from django.contrib.staticfiles import finders

    css = Path(finders.find("portal/portal.css")).read_text()
    assert "prefers-color-scheme: dark" in css and "@media (max-width: 640px)" in css
    assert finders.find("portal/theme.js")
    html = client_for(world.user_a).get(reverse("portal:home")).content.decode()
    assert 'name="viewport"' in html and "portal/portal.css" in html
