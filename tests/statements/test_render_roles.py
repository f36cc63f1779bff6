"""Rendering a statement's PDF is a write: only roles that may change statements (reviewer, billing
admin) trigger it. A viewer neither runs "Render missing PDFs" nor renders by downloading; a PI's
download of a missing PDF answers 404 with a message (and tells the billing team)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts import roles
from statements.models import Statement
from tests.accounts.conftest import PASSWORD, client_for, world  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def _staff(role: str) -> Any:
    user = get_user_model().objects.create_user(
        f"{role.split()[0].lower()}@university.example", password=PASSWORD, is_staff=True
    )
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def without_pdf(world):  # noqa: F811
    statement = next(s for s in world.statements_a if s.is_current)
    Statement.objects.filter(pk=statement.pk).update(pdf="")
    statement.refresh_from_db()
    return statement


def test_a_viewer_cannot_render(without_pdf):
    viewer = client_for(_staff(roles.VIEWER))
    changelist = reverse("admin:statements_statement_changelist")
    assert "render_missing" not in viewer.get(changelist).content.decode()
    viewer.post(changelist, {"action": "render_missing", ACTION_CHECKBOX_NAME: [without_pdf.pk]})
    response = viewer.get(reverse("admin:statements_statement_pdf", args=[without_pdf.pk]))
    assert response.status_code == 404
    assert "has no PDF yet. A reviewer or billing admin can render it" in response.content.decode()
    without_pdf.refresh_from_db()
    assert not without_pdf.pdf


def test_a_reviewer_renders_from_the_action_or_the_download(without_pdf):
    reviewer = client_for(_staff(roles.REVIEWER))
    changelist = reverse("admin:statements_statement_changelist")
    assert "render_missing" in reviewer.get(changelist).content.decode()
    response = reviewer.get(reverse("admin:statements_statement_pdf", args=[without_pdf.pk]))
    assert response.status_code == 200 and b"".join(response.streaming_content).startswith(b"%PDF")
    Statement.objects.filter(pk=without_pdf.pk).update(pdf="")
    reviewer.post(changelist, {"action": "render_missing", ACTION_CHECKBOX_NAME: [without_pdf.pk]})
    without_pdf.refresh_from_db()
    assert without_pdf.pdf


def test_a_pi_download_of_a_missing_pdf_is_404_with_a_message(world, without_pdf, caplog):  # noqa: F811
    with caplog.at_level(logging.INFO):
        response = client_for(world.user_a).get(reverse("portal:statement_pdf", args=[without_pdf.pk]))
    assert response.status_code == 404
    assert "The PDF is not available yet" in response.content.decode()
    without_pdf.refresh_from_db()
    assert not without_pdf.pdf
    assert any(getattr(r, "event", "") == "statement_pdf_missing" for r in caplog.records)
