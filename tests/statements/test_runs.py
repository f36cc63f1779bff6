"""Statement runs recorded in the database (StatementRun): queued → running → done | failed, the
progress of their PDFs and emails counted from the statements and deliveries, followed by a task
while workers render and send, shown as stale when nothing moves, listed on the period page and
in a read-only admin."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import roles
from accounts.services import roles_ensure
from chargeback.errors import Refused
from statements import selectors, tasks
from statements.models import Statement, StatementRun
from statements.services import runs
from tests.factories import ChargeFactory, PeriodFactory, ProjectFactory

pytestmark = pytest.mark.django_db

PERIOD = "2025-01"


@pytest.fixture
def month():
    """Two statements: one project of two charges, another of one."""
    period = PeriodFactory(period=PERIOD)
    project = ProjectFactory()
    for amount in ("10.00", "20.50"):
        ChargeFactory(period=period, project=project, billed_cost=Decimal(amount), list_cost=Decimal(amount))
    ChargeFactory(period=period, project=ProjectFactory(), billed_cost=Decimal("5"))
    return period


def _staff(role: str) -> tuple[Client, User]:
    groups = roles_ensure()
    name = roles.role_slug(role)
    user = User.objects.create_user(name, f"{name}@university.example", "pw", is_staff=True)
    user.groups.add(groups[role])
    client = Client()
    client.force_login(user)
    return client, user


def _workers(monkeypatch) -> list[tuple]:
    """As with a broker: dispatching queues tasks instead of running them (none runs here), and
    the follow-up task is recorded instead of sent."""
    monkeypatch.setattr(tasks, "_eager", lambda: False)
    monkeypatch.setattr(tasks, "dispatch", lambda *args, **kwargs: False)
    followed: list[tuple] = []
    monkeypatch.setattr(
        tasks.statements_run_follow,
        "apply_async",
        lambda args, countdown: followed.append((args, countdown)),
    )
    return followed


def _render_all(run: StatementRun) -> None:
    """What the workers do: render the run's PDFs (here, in this process)."""
    from statements import services

    for statement_id in run.statement_ids:
        services.statement_render_pdf(statement_id=statement_id)


# --- the lifecycle ----------------------------------------------------------------------------


def test_a_run_is_recorded_queued_then_done_with_its_outcome(month):
    _client, user = _staff(roles.BILLING_ADMIN)
    run = runs.statement_run_start(kind="issue", period=PERIOD, actor=user)
    assert (run.state, run.kind, run.period, run.requested_by, run.requested_by_name) == (
        "queued",
        "issue",
        month,
        user,
        "billing-admin",
    )
    assert run.started_at is None and not selectors.statement_run_is_stale(run)

    assert tasks.statements_run(run.pk) == "done"  # eagerly: PDFs rendered before it returns
    run.refresh_from_db()
    issued = list(Statement.objects.order_by("sequence").values_list("pk", flat=True))
    assert sorted(run.statement_ids) == issued and run.delivery_ids == []
    assert (run.pdfs_total, run.pdfs_rendered, run.pdfs_failed, run.emails_total) == (2, 2, 0, 0)
    assert [row["status"] for row in run.result["issued"]] == ["new", "new"]
    assert run.result["sent"] == [] and run.result["render_failed"] == []
    assert run.summary == "2 current statement(s): 2 new, 0 revised, 0 unchanged; due $35.50"
    assert run.created_at <= run.started_at <= run.dispatched_at <= run.finished_at
    assert Statement.objects.get(pk=issued[0]).actor == user

    status = selectors.statement_run_status(run)
    assert (status["state"], status["finished"], status["done"], status["total"]) == ("done", True, 2, 2)
    assert status["state_text"] == "Done." and status["period"] == PERIOD


def test_unknown_kinds_and_runs_are_refused(month):
    with pytest.raises(ValueError):
        runs.statement_run_start(kind="preview", period=PERIOD, actor=None)
    with pytest.raises(Refused, match="no statements run 999"):
        runs.statement_run_execute(run_id=999)
    assert selectors.statement_run_get("x" * 32) is None and selectors.statement_run_get("999") is None


def test_a_refused_run_fails_with_its_reason(month):
    month.status = month.Status.FINALIZED
    month.save()
    run = runs.statement_run_start(kind="issue", period=PERIOD, actor=None)
    assert tasks.statements_run(run.pk) == "failed"
    run.refresh_from_db()
    assert run.state == "failed" and run.result == {"refused": True} and run.finished_at
    assert selectors.statement_run_status(run)["state_text"].startswith(
        "Refused: period 2025-01 is finalized"
    )


def test_an_unexpected_error_fails_the_run_instead_of_leaving_it_running(month, monkeypatch, caplog):
    def broken(**kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(runs, "statements_generate", broken)
    run = runs.statement_run_start(kind="issue", period=PERIOD, actor=None)
    with caplog.at_level("ERROR"):
        assert tasks.statements_run(run.pk) == "failed"
    run.refresh_from_db()
    assert (run.state, run.error, run.result) == (
        "failed",
        "ZeroDivisionError: division by zero",
        {"refused": False},
    )
    assert selectors.statement_run_status(run)["state_text"] == "Failed: ZeroDivisionError: division by zero"
    assert any("statements run" in r.getMessage() for r in caplog.records)


def test_a_send_run_counts_its_emails(month, mailoutbox):
    tasks.statements_run(runs.statement_run_start(kind="issue", period=PERIOD, actor=None).pk)
    run = runs.statement_run_start(kind="send", period=PERIOD, actor=None)
    tasks.statements_run(run.pk)
    run.refresh_from_db()
    assert (run.state, run.emails_total, run.emails_sent, run.emails_failed) == ("done", 2, 2, 0)
    assert sorted(run.result["sent"]) == sorted(m.to[0] for m in mailoutbox)
    assert run.summary == "2 email(s) to send"


def test_a_preview_is_recorded_as_a_run_done_at_once(month):
    _client, user = _staff(roles.BILLING_ADMIN)
    outcome, preview = runs.statements_preview_run(period=PERIOD, actor=user)
    run = StatementRun.objects.get()
    assert (run.kind, run.state, run.requested_by) == ("preview", "done", user)
    assert run.summary == "2 current statement(s): 2 new, 0 revised, 0 unchanged; due $35.50; 2 DRAFT PDF(s)"
    assert not Statement.objects.exists() and len(preview.files) == outcome.count("new") == 2


# --- with workers: followed until done --------------------------------------------------------


def test_with_workers_a_run_is_followed_until_its_pdfs_are_done(month, monkeypatch):
    followed = _workers(monkeypatch)
    run = runs.statement_run_start(kind="issue", period=PERIOD, actor=None)
    assert tasks.statements_run(run.pk) == "running"
    assert followed == [((run.pk,), tasks.RUN_FOLLOW_SECONDS)]
    run.refresh_from_db()
    assert (run.state, run.pdfs_total, run.pdfs_rendered) == ("running", 2, 0) and run.dispatched_at
    first_progress = run.progressed_at

    # Nothing moved: the follow-up records nothing and looks again later.
    tasks.statements_run_follow(run.pk)
    run.refresh_from_db()
    assert run.progressed_at == first_progress and len(followed) == 2
    status = selectors.statement_run_status(run)
    assert (status["finished"], status["done"], status["total"], status["state_text"]) == (
        False,
        0,
        2,
        "Running…",
    )

    _render_all(run)
    assert tasks.statements_run_follow(run.pk) == "done"
    run.refresh_from_db()
    assert (run.state, run.pdfs_rendered, run.pdfs_failed) == ("done", 2, 0)
    assert run.progressed_at > first_progress and run.finished_at
    assert len(followed) == 2  # finished: not followed any more
    # A task delivered again does not prepare a dispatched run a second time.
    assert runs.statement_run_execute(run_id=run.pk).state == "done"
    assert Statement.objects.count() == 2


def test_a_task_redelivered_after_its_worker_died_prepares_the_run_again(month, monkeypatch):
    _workers(monkeypatch)
    run = runs.statement_run_start(kind="issue", period=PERIOD, actor=None)
    # The first worker claimed the run and died before dispatching anything.
    StatementRun.objects.filter(pk=run.pk).update(state="running", started_at=timezone.now())
    run = runs.statement_run_execute(run_id=run.pk)
    assert run.state == "running" and run.dispatched_at and run.pdfs_total == 2


def test_a_run_without_progress_is_shown_stale_and_no_longer_followed(month, monkeypatch, settings):
    settings.OPENCHARGEBACK_STATEMENT_RUN_STALE_SECONDS = 60
    followed = _workers(monkeypatch)
    run = runs.statement_run_start(kind="issue", period=PERIOD, actor=None)
    tasks.statements_run(run.pk)
    later = timezone.now() + dt.timedelta(seconds=61)
    run.refresh_from_db()
    assert not selectors.statement_run_is_stale(run)
    assert selectors.statement_run_is_stale(run, now=later)

    # The worker died: an hour later nothing has moved.
    StatementRun.objects.filter(pk=run.pk).update(progressed_at=timezone.now() - dt.timedelta(hours=1))
    run.refresh_from_db()
    status = selectors.statement_run_status(run)
    assert status["stale"] and status["state"] == "running" and not status["finished"]
    assert status["state_text"].startswith("Stale: no progress since ")
    assert tasks.statements_run_follow(run.pk) == "running"
    assert len(followed) == 1  # the follow-up stops at a stale run
    (listed,) = selectors.period_statement_runs(month)
    assert (listed["state"], listed["state_label"]) == ("stale", "Stale")

    # A queued run nobody picked up is stale too; a finished one never is.
    queued = runs.statement_run_start(kind="send", period=PERIOD, actor=None)
    assert selectors.statement_run_is_stale(queued, now=later)
    _render_all(run)
    run = runs.statement_run_refresh(run_id=run.pk)
    assert run.state == "done" and not selectors.statement_run_is_stale(run, now=later)


# --- the admin --------------------------------------------------------------------------------


def test_the_progress_endpoint_records_progress_from_the_database(month, monkeypatch):
    _workers(monkeypatch)
    client, _user = _staff(roles.BILLING_ADMIN)
    response = client.post(reverse("admin:statements_statement_run", args=["issue"]), {"period": PERIOD})
    run = StatementRun.objects.get()
    status_url = reverse("admin:statements_statement_run_status", args=[run.pk])
    assert response["Location"] == reverse("admin:statements_statement_run_page", args=[run.pk])
    assert client.get(status_url).json()["state"] == "running"
    page = client.get(response["Location"]).content.decode()
    assert "Running…" in page and "Requested by billing-admin" in page

    _render_all(run)
    status = client.get(status_url).json()
    assert (status["state"], status["finished"], status["pdfs"]) == (
        "done",
        True,
        {"rendered": 2, "total": 2, "failed": 0},
    )
    run.refresh_from_db()
    assert run.state == "done" and run.pdfs_rendered == 2
    assert client.get(reverse("admin:statements_statement_run_status", args=["999"])).status_code == 404
    assert client.get(reverse("admin:statements_statement_run_status", args=["nope"])).status_code == 404


def test_the_period_page_and_the_admin_list_the_runs_for_billing_admins(month):
    admin, _user = _staff(roles.BILLING_ADMIN)
    admin.post(reverse("admin:statements_statement_preview"), {"period": PERIOD})
    admin.post(reverse("admin:statements_statement_run", args=["issue"]), {"period": PERIOD})
    issue = StatementRun.objects.get(kind="issue")
    page = admin.get(reverse("admin:billing_billingperiod_change", args=[month.pk])).content.decode()
    assert 'id="ocb-period-runs"' in page
    assert f'<a href="/admin/statements/statement/runs/{issue.pk}/">Issue</a>' in page
    assert '<span class="ocb-badge ocb-badge-done">Done</span>' in page

    listing = admin.get(reverse("admin:statements_statementrun_changelist"))
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "<title>Statement runs | " in html
    assert ">Preview<" in html
    assert "PDFs 2/2 · emails 0/0" in html
    assert "Progress page" in html
    detail = admin.get(reverse("admin:statements_statementrun_change", args=[issue.pk])).content.decode()
    assert "2025-01-0001 v1" in detail and 'name="_save"' not in detail
    assert admin.post(reverse("admin:statements_statementrun_change", args=[issue.pk]), {}).status_code == 403
    assert admin.get(reverse("admin:statements_statementrun_add")).status_code == 403
    assert (
        admin.post(
            reverse("admin:statements_statementrun_delete", args=[issue.pk]), {"post": "yes"}
        ).status_code
        == 403
    )

    for role in (roles.REVIEWER, roles.VIEWER):
        client, _user = _staff(role)
        page = client.get(reverse("admin:billing_billingperiod_change", args=[month.pk])).content.decode()
        assert "ocb-period-runs" not in page
        assert client.get(reverse("admin:statements_statementrun_changelist")).status_code == 403


def test_state_changes_are_audited_but_not_each_count(month, monkeypatch):
    _workers(monkeypatch)
    run = runs.statement_run_start(kind="issue", period=PERIOD, actor=None)
    tasks.statements_run(run.pk)
    run.refresh_from_db()
    before = LogEntry.objects.get_for_object(run).count()
    _render_all(run)
    runs.statement_run_refresh(run_id=run.pk)
    entries = LogEntry.objects.get_for_object(run).order_by("timestamp", "pk")
    changes = [entry.changes_dict for entry in entries]
    assert before >= 3  # created, running, handed to the workers
    assert changes[-1]["state"] == ["running", "done"]
    assert all(set(change) & {"pdfs_rendered", "progressed_at", "result"} == set() for change in changes)
