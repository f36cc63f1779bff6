"""The statements list at 1280 px in headless Chromium: Amount due, Held back, State and PDF are on
screen without scrolling sideways (with the admin's navigation sidebar open)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.accounts.test_e2e import CHROMIUM, CHROMIUM_ARGS, _singletons_forgotten, _skip_reason  # noqa: F401

pytestmark = pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or "ok")

WIDTH = 1280


@pytest.mark.usefixtures("_singletons_forgotten")
def test_statements_list_fits_1280_px(live_server, transactional_db):
    from django.contrib.auth import get_user_model

    from statements import services
    from tests.factories import ChargeFactory, PeriodFactory, PIFactory, ProjectFactory, SourceFactory

    period = PeriodFactory(period="2025-01")
    source = SourceFactory(slug="aws")
    for n in range(12):
        pi = PIFactory(
            email=f"maximiliana.von-oberhausen-{n}@department-of-atmospheric-sciences.example.edu",
            name=f"Maximiliana von Oberhausen-Lichtenberg {n}",
        )
        project = ProjectFactory(
            project_id=f"climate-ensemble-downscaling-{n:02d}", pi=pi, fund_org=f"NSF-ATM-2024-{n:04d}-X"
        )
        ChargeFactory(
            period=period,
            source=source,
            project=project,
            list_cost=Decimal("123456.78"),
            billed_cost=Decimal("98765.43"),
        )
        ChargeFactory(
            period=period,
            source=source,
            project=project,
            review_state="flagged",
            billed_cost=Decimal("4321.09"),
        )
    services.statements_generate(period="2025-01")
    get_user_model().objects.create_superuser("root", "root@u.example", "a-long-password-1")

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.goto(f"{live_server.url}/admin/login/")
            page.fill("input[name=username]", "root")
            page.fill("input[name=password]", "a-long-password-1")
            page.click("input[type=submit]")
            page.wait_for_url(f"{live_server.url}/admin/")
            page.goto(f"{live_server.url}/admin/statements/statement/")
            assert page.inner_text("h1") == "Statements"
            assert page.locator("#nav-sidebar").is_visible()
            overflow = page.evaluate("document.documentElement.scrollWidth")
            rights = {
                name: page.evaluate(
                    "sel => document.querySelector(sel).getBoundingClientRect().right",
                    f"#result_list th.{column}",
                )
                for name, column in (
                    ("Amount due", "column-due_money"),
                    ("Held back", "column-held_back"),
                    ("State", "column-state"),
                    ("PDF", "column-download"),
                )
            }
        finally:
            browser.close()
    assert overflow <= WIDTH, overflow
    assert all(right <= WIDTH for right in rights.values()), rights
