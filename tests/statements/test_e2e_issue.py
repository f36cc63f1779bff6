"""End to end in headless Chromium: a billing admin issues a period's statements from the period
page and follows the progress bar until the run lists what was issued. The renders are held back
until the page shows the run in progress, so the bar is seen moving (its script polls the run)."""

from __future__ import annotations

import threading

import pytest

from tests.accounts.test_e2e import CHROMIUM, CHROMIUM_ARGS, _singletons_forgotten, _skip_reason  # noqa: F401

pytestmark = pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "ok")

PASSWORD = "a long enough password 1"


def _render(dispatch, statement_ids: list[int]) -> None:
    from django.db import connection

    try:
        dispatch(statement_ids)
    finally:
        connection.close()


@pytest.mark.usefixtures("_singletons_forgotten")
def test_issue_statements_with_the_progress_bar(
    live_server, transactional_db, reference_month, monkeypatch, settings, tmp_path
):
    from django.contrib.auth.models import User

    from accounts import roles
    from accounts.services import roles_ensure
    from statements import tasks
    from statements.models import Statement
    from statements.services import dispatch

    settings.OPENCHARGEBACK_PDF_DIR = str(tmp_path / "pdfs")
    groups = roles_ensure()
    admin = User.objects.create_user("fran", "fran@university.example", PASSWORD, is_staff=True)
    admin.groups.add(groups[roles.BILLING_ADMIN])

    # As with workers: the run is dispatched, the rendering happens later (below).
    held: list[list[int]] = []
    real_dispatch = tasks.dispatch

    def later(statement_ids, delivery_ids=(), *, on_progress=None):
        held.append(list(statement_ids))
        return False

    monkeypatch.setattr(dispatch.tasks, "dispatch", later)

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{live_server.url}/admin/login/")
            page.fill("input[name=username]", "fran")
            page.fill("input[name=password]", PASSWORD)
            page.click("input[type=submit]")
            page.goto(f"{live_server.url}/admin/billing/billingperiod/{reference_month.pk}/change/")
            page.click("#ocb-statement-runs input[value='Issue statements']")
            page.wait_for_url("**/admin/statements/statement/runs/**")
            assert "Running" in page.inner_text("#ocb-run-state")
            assert page.inner_text("#ocb-run-counts").startswith("PDFs 0/10")
            # The workers render: the bar fills, and the page reloads with the result.
            assert held and len(held[0]) == 10
            # In a thread of its own: Playwright's loop makes this one async to Django.
            worker = threading.Thread(target=_render, args=(real_dispatch, held[0]))
            worker.start()
            worker.join()
            page.wait_for_selector("text=Done.", timeout=20_000)
            assert page.inner_text("#ocb-run-counts").startswith("PDFs 10/10")
            width = page.evaluate("document.getElementById('ocb-run-bar').style.width")
            assert width == "100%"
            assert page.locator("#ocb-run-result td", has_text="2025-01-0001 v1").count() == 1
        finally:
            browser.close()
    assert Statement.objects.exclude(pdf="").count() == 10  # after Playwright: sync again
