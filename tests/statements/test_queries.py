"""Charge queries: raised in the scope of a PI or delegate, resolved by a reviewer through the
review services or a credit that the next statement version shows, answered by email once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core import mail

from accounts.portal.selectors import portal_scope
from billing.models import BillingPeriod, Charge, Import, ReviewLog
from chargeback.errors import Refused
from statements import services as statement_services
from statements.models import ChargeQuery, Statement
from statements.queries import selectors, services
from statements.queries.services import Resolution
from tests.accounts.conftest import build_world
from tests.factories import UserFactory


@pytest.fixture
def world(db, settings):
    return build_world(settings)


def _charge(world, project, **filters) -> Charge:
    return Charge.objects.filter(project=project, period__period="2025-01", **filters).order_by("id")[0]


def _raise(user, **kwargs) -> ChargeQuery:
    return services.query_raise(visible=portal_scope(user).q(), actor=user, **kwargs)


def _reviewer():
    from accounts.services import roles_ensure

    groups = roles_ensure()
    user = UserFactory(username="rita", email="rita@university.example", is_staff=True)
    user.groups.add(groups["Reviewer"])
    return user


def test_a_pi_queries_own_charge(world):
    charge = _charge(world, world.a1, source__slug="aws", review_state="ok")
    query = _raise(world.user_a, charge_id=charge.pk, reason="  This VM was stopped on the 3rd.  ")
    assert query.state == "open" and query.resolution == ""
    assert query.pi == world.pi_a and query.project_code == "ada-genomics"
    assert query.amount == charge.billed_cost == Decimal("80")
    assert query.reason == "This VM was stopped on the 3rd."
    assert query.raised_by_email == world.user_a.email
    assert "Amazon EC2" in query.subject
    assert selectors.queries_open_count() == 1
    # Auditlog keeps the creation.
    from auditlog.models import LogEntry

    assert LogEntry.objects.get_for_object(query).count() == 1


@pytest.mark.parametrize("reason", ["", "   \n "])
def test_a_query_needs_a_reason(world, reason):
    charge = _charge(world, world.a1, source__slug="aws")
    with pytest.raises(Refused, match="reason is required"):
        _raise(world.user_a, charge_id=charge.pk, reason=reason)
    assert not ChargeQuery.objects.exists()


def test_another_pis_charge_or_a_missing_one_is_not_found(world):
    bobs = _charge(world, world.b1)
    with pytest.raises(Refused, match=f"no charge {bobs.pk} among yours"):
        _raise(world.user_a, charge_id=bobs.pk, reason="not mine")
    with pytest.raises(Refused, match="no charge 999999"):
        _raise(world.user_a, charge_id=999999, reason="?")
    with pytest.raises(Refused, match="one charge or one statement line"):
        _raise(world.user_a, reason="?")
    assert not ChargeQuery.objects.exists()


def test_a_delegate_queries_only_the_delegated_project(world):
    climate = _charge(world, world.a2)
    genomics = _charge(world, world.a1)
    query = _raise(world.delegate, charge_id=climate.pk, reason="we did not run this")
    assert query.pi == world.pi_a and query.raised_by_email == world.delegate.email
    with pytest.raises(Refused):
        _raise(world.delegate, charge_id=genomics.pk, reason="?")
    # The PI sees the delegate's query (their money); the other PI does not.
    assert list(selectors.queries_visible(portal_scope(world.user_a).q())) == [query]
    assert list(selectors.queries_visible(portal_scope(world.user_b).q())) == []


def test_one_open_query_per_charge(world):
    charge = _charge(world, world.a1, source__slug="aws")
    first = _raise(world.user_a, charge_id=charge.pk, reason="wrong")
    with pytest.raises(Refused, match=f"already has an open query \\(#{first.pk}\\)"):
        _raise(world.user_a, charge_id=charge.pk, reason="still wrong")


def test_a_statement_line_can_be_queried(world):
    statement = Statement.objects.get(
        pi=world.pi_a, project_code="ada-genomics", period__period="2025-01", state="issued"
    )
    line = statement.lines.get(source__slug="hpc")
    query = _raise(world.user_a, line_id=line.pk, reason="the cluster was down")
    assert query.statement == statement and query.charge is None
    assert query.amount == line.amount and query.subject.startswith(f"Statement {statement.label}")
    bobs_line = Statement.objects.filter(pi=world.pi_b).first().lines.first()
    with pytest.raises(Refused, match="no statement line"):
        _raise(world.user_a, line_id=bobs_line.pk, reason="?")
    # A line query has no one charge to approve or reject.
    with pytest.raises(Refused, match="statement line, not one charge"):
        services.query_resolve(query_id=query.pk, decision=Resolution("rejected", "no"), actor_name="t")


def test_explained_answer_is_emailed_once(world, django_capture_on_commit_callbacks):
    charge = _charge(world, world.a2)
    query = _raise(world.delegate, charge_id=charge.pk, reason="what is this?")
    reviewer = _reviewer()
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.query_resolve(
            query_id=query.pk, decision=Resolution("explained", "It is your storage bucket."), actor=reviewer
        )
    query.refresh_from_db()
    assert query.state == "resolved" and query.resolution == "explained"
    assert query.resolved_by == reviewer and query.resolved_by_name == "rita" and query.notified_at
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert sorted(message.to) == sorted([world.delegate.email, world.pi_a.email])
    assert f"query #{query.pk}" in message.subject
    assert "It is your storage bucket." in message.body and "what is this?" in message.body
    html = message.alternatives[0][0]
    assert "It is your storage bucket." in html
    # Again (a retried task): nothing more is sent.
    assert services.query_notify(query_id=query.pk) is False
    assert len(mail.outbox) == 1
    # The charge itself did not change.
    charge.refresh_from_db()
    assert charge.review_state == "ok"


def test_a_failed_email_can_be_sent_again(world, settings, monkeypatch):
    charge = _charge(world, world.a2)
    query = _raise(world.user_a, charge_id=charge.pk, reason="?")
    services.query_resolve(query_id=query.pk, decision=Resolution("explained", "fine"), actor_name="t")

    def broken(*args, **kwargs):
        raise OSError("mail server down")

    monkeypatch.setattr("django.core.mail.EmailMultiAlternatives.send", broken)
    assert services.query_notify(query_id=query.pk) is False
    query.refresh_from_db()
    assert query.notified_at is None and "mail server down" in query.notify_error
    monkeypatch.undo()
    mail.outbox.clear()
    assert services.query_notify(query_id=query.pk) is True
    assert len(mail.outbox) == 1


def test_rejecting_through_the_review_service_and_no_double_resolve(world):
    charge = _charge(world, world.a1, source__slug="aws")
    query = _raise(world.user_a, charge_id=charge.pk, reason="not ours")
    services.query_resolve(
        query_id=query.pk, decision=Resolution("rejected", "Agreed, removed."), actor_name="rita"
    )
    charge.refresh_from_db()
    assert charge.review_state == "rejected"
    log = ReviewLog.objects.get(charge=charge, action="reject")
    assert log.note == f"query #{query.pk}: Agreed, removed." and log.actor_name == "rita"
    with pytest.raises(Refused, match="already resolved"):
        services.query_resolve(
            query_id=query.pk, decision=Resolution("approved", "changed my mind"), actor_name="x"
        )
    with pytest.raises(Refused, match="an answer is required"):
        other = _raise(world.user_a, charge_id=_charge(world, world.a2).pk, reason="?")
        services.query_resolve(query_id=other.pk, decision=Resolution("explained", "  "), actor_name="x")


def test_correcting_attribution(world):
    charge = _charge(world, world.a1, source__slug="aws")
    query = _raise(world.user_a, charge_id=charge.pk, reason="this is Bob's")
    with pytest.raises(Refused, match="needs the PI email"):
        services.query_resolve(query_id=query.pk, decision=Resolution("corrected", "moved"), actor_name="x")
    services.query_resolve(
        query_id=query.pk,
        decision=Resolution(
            "corrected", "Moved to Bob.", pi_email=world.pi_b.email, project_id="bob-bridges"
        ),
        actor_name="rita",
    )
    charge.refresh_from_db()
    assert charge.pi == world.pi_b and charge.project_code == "bob-bridges"
    assert ReviewLog.objects.filter(charge=charge, action="correct").count() == 1


def test_a_credit_appears_on_the_next_statement_version(world):
    charge = _charge(world, world.a1, source__slug="aws", review_state="ok")
    before = Statement.objects.get(
        pi=world.pi_a, project_code="ada-genomics", period__period="2025-01", state="issued"
    )
    from billing.selectors import period_totals

    period = BillingPeriod.objects.get(period="2025-01")
    billed_before = period_totals(period).billed_total
    query = _raise(world.user_a, charge_id=charge.pk, reason="overcharged")
    with pytest.raises(Refused, match=r"more than the \$80\.00 queried"):
        services.query_resolve(
            query_id=query.pk, decision=Resolution("credited", "x", credit_amount="80.01"), actor_name="x"
        )
    with pytest.raises(Refused, match="to the cent"):
        services.query_resolve(
            query_id=query.pk, decision=Resolution("credited", "x", credit_amount="1.005"), actor_name="x"
        )
    services.query_resolve(
        query_id=query.pk,
        decision=Resolution("credited", "Half of it back.", credit_amount="40.25"),
        actor_name="rita",
    )
    query.refresh_from_db()
    assert query.credit_amount == Decimal("40.25") and query.resolution == "credited"
    credit = query.credit_charge
    assert credit.billed_cost == Decimal("-40.25") and credit.charge_category == "Credit"
    assert (credit.pi, credit.project_code, credit.period.period) == (world.pi_a, "ada-genomics", "2025-01")
    assert credit.import_run.period is None and credit.import_run.status == Import.Status.COMPLETED
    assert ReviewLog.objects.get(charge=credit).action == "credit"
    # The period's (cached) totals see the credit at once.
    assert period_totals(period).billed_total == billed_before - Decimal("40.25")

    outcome = statement_services.statements_generate(period="2025-01", actor_name="test")
    after = Statement.objects.get(
        pi=world.pi_a, project_code="ada-genomics", period__period="2025-01", state="issued"
    )
    assert after.version == before.version + 1
    assert after.billed_total == before.billed_total - Decimal("40.25")
    line = after.lines.get(kind="Credit")
    assert line.amount == Decimal("-40.25") and line.source.slug == "aws"
    assert outcome is not None


def test_a_credit_is_refused_on_a_finalized_period(world):
    charge = _charge(world, world.a1, source__slug="aws")
    query = _raise(world.user_a, charge_id=charge.pk, reason="overcharged")
    BillingPeriod.objects.filter(period="2025-01").update(status="finalized")
    with pytest.raises(Refused, match="period 2025-01 is finalized: a credit cannot be added"):
        services.query_resolve(
            query_id=query.pk, decision=Resolution("credited", "x", credit_amount="10"), actor_name="x"
        )
    with pytest.raises(Refused, match="finalized"):
        services.query_resolve(query_id=query.pk, decision=Resolution("rejected", "x"), actor_name="x")
    query.refresh_from_db()
    assert query.is_open and not Charge.objects.filter(charge_category="Credit").exists()
    # An explanation changes nothing and may still be given.
    services.query_resolve(query_id=query.pk, decision=Resolution("explained", "It stands."), actor_name="x")


def test_a_reimport_of_the_queried_charge_keeps_the_query(world):
    from billing.services import _delete_charges_of

    charge = _charge(world, world.a1, source__slug="aws")
    query = _raise(world.user_a, charge_id=charge.pk, reason="?")
    _delete_charges_of([charge.import_run])
    query = selectors.queries_base().get(pk=query.pk)
    assert query.charge is None and query.amount == Decimal("80")
    with pytest.raises(Refused, match="is gone"):
        services.query_resolve(query_id=query.pk, decision=Resolution("approved", "ok"), actor_name="x")
