"""The portal's charge queries: a PI or delegate queries a charge or statement line they may
see (crispy form, reason required), lists their queries and reads the answer; nobody else's."""

from __future__ import annotations

from django.core import mail

from accounts.portal.selectors import portal_scope
from billing.models import Charge
from statements.models import ChargeQuery, Statement
from statements.queries import services
from statements.queries.services import Resolution
from tests.accounts.conftest import client_for


def _charge(project) -> Charge:
    return Charge.objects.filter(project=project, period__period="2025-01").order_by("id")[0]


def test_pi_queries_a_charge_from_the_charges_page(world):
    client = client_for(world.user_a)
    charge = _charge(world.a1)
    page = client.get(f"/portal/periods/2025-01/projects/{world.a1.pk}/charges/").content.decode()
    assert f'href="/portal/charges/{charge.pk}/query/"' in page
    form = client.get(f"/portal/charges/{charge.pk}/query/")
    assert form.status_code == 200
    html = form.content.decode()
    assert 'name="reason"' in html and "What is wrong with it?" in html and "$80.00" in html
    response = client.post(
        f"/portal/charges/{charge.pk}/query/", {"reason": "The VM was stopped on the 3rd."}
    )
    query = ChargeQuery.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/portal/queries/{query.pk}/"
    assert (query.charge_id, query.pi, query.raised_by) == (charge.pk, world.pi_a, world.user_a)
    detail = client.get(response["Location"]).content.decode()
    assert "The VM was stopped on the 3rd." in detail and "Not answered yet" in detail
    listing = client.get("/portal/queries/").content.decode()
    assert f"/portal/queries/{query.pk}/" in listing and "Open" in listing
    # Asking again while it is open points at the open query.
    again = client.get(f"/portal/charges/{charge.pk}/query/").content.decode()
    assert f"query #{query.pk}" in again and 'name="reason"' not in again


def test_empty_reason_is_refused_with_the_form_again(world):
    client = client_for(world.user_a)
    charge = _charge(world.a1)
    response = client.post(f"/portal/charges/{charge.pk}/query/", {"reason": "   "})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not ChargeQuery.objects.exists()


def test_other_pis_charges_lines_and_queries_are_not_found(world):
    bobs_charge = _charge(world.b1)
    bobs_line = Statement.objects.filter(pi=world.pi_b).first().lines.first()
    client = client_for(world.user_a)
    assert client.get(f"/portal/charges/{bobs_charge.pk}/query/").status_code == 404
    assert client.post(f"/portal/charges/{bobs_charge.pk}/query/", {"reason": "x"}).status_code == 404
    assert client.get(f"/portal/statement-lines/{bobs_line.pk}/query/").status_code == 404
    assert client.get("/portal/charges/999999/query/").status_code == 404
    bobs_query = services.query_raise(
        visible=portal_scope(world.user_b).q(),
        charge_id=bobs_charge.pk,
        reason="mine",
        actor=world.user_b,
    )
    assert client.get(f"/portal/queries/{bobs_query.pk}/").status_code == 404
    assert f"/portal/queries/{bobs_query.pk}/" not in client.get("/portal/queries/").content.decode()
    assert not ChargeQuery.objects.exclude(pk=bobs_query.pk).exists()
    # Signed out: the sign-in page.
    from django.test import Client

    assert "/portal/login/" in Client().get("/portal/queries/")["Location"]


def test_delegate_queries_only_the_delegated_project(world):
    client = client_for(world.delegate)
    assert client.get(f"/portal/charges/{_charge(world.a1).pk}/query/").status_code == 404
    response = client.post(f"/portal/charges/{_charge(world.a2).pk}/query/", {"reason": "not us"})
    assert response.status_code == 302
    query = ChargeQuery.objects.get()
    # The PI sees the delegate's query about their project.
    assert client_for(world.user_a).get(f"/portal/queries/{query.pk}/").status_code == 200
    assert client_for(world.user_b).get(f"/portal/queries/{query.pk}/").status_code == 404


def test_a_statement_line_query_and_the_answer(world, django_capture_on_commit_callbacks):
    client = client_for(world.user_a)
    statement = Statement.objects.get(
        pi=world.pi_a, project_code="ada-genomics", period__period="2025-01", state="issued"
    )
    line = statement.lines.get(source__slug="hpc")
    page = client.get(f"/portal/statements/{statement.pk}/").content.decode()
    assert f'href="/portal/statement-lines/{line.pk}/query/"' in page
    client.post(f"/portal/statement-lines/{line.pk}/query/", {"reason": "The cluster was down."})
    query = ChargeQuery.objects.get()
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.query_resolve(
            query_id=query.pk, decision=Resolution("explained", "HPC is free this month."), actor_name="rita"
        )
    html = client.get(f"/portal/queries/{query.pk}/").content.decode()
    assert "HPC is free this month." in html and "Explained (the charge stands)" in html
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [world.pi_a.email]
