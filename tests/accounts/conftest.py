"""Portal fixtures: two PIs with statements (one of them revised), a delegate, signed-in clients."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from tests.factories import ChargeFactory, PeriodFactory, PIFactory, ProjectFactory, SourceFactory

PASSWORD = "a long and unusual passphrase 42"


@dataclass
class PortalWorld:
    pi_a: Any
    pi_b: Any
    user_a: Any
    user_b: Any
    a1: Any  # PI A's projects
    a2: Any
    b1: Any  # PI B's project
    statements_a: list[Any]  # every version, current and superseded
    statements_b: list[Any]
    delegate: Any  # may see a2 of PI A, nothing else


def _portal_user(email: str, *, password: str = PASSWORD) -> Any:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(email, email, password)
    return user


def _generate(period: str) -> None:
    from statements import services, tasks

    outcome = services.statements_generate(period=period, actor_name="test")
    tasks.dispatch(outcome.to_render)


@pytest.fixture
def world(db, settings) -> PortalWorld:
    return build_world(settings)


def build_world(settings: Any) -> PortalWorld:
    """PI A (Ada: two projects, statements of 2024-12 and 2025-01, genomics revised once), PI B
    (Bob: one project), and a delegate who may see Ada's climate project only."""
    from accounts.models import Delegation
    from accounts.services import roles_ensure
    from statements.models import Statement

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    groups = roles_ensure()
    aws = SourceFactory(slug="aws", display_name="Amazon Web Services")
    hpc = SourceFactory(slug="hpc", display_name="HPC cluster")
    period = PeriodFactory(period="2025-01")
    earlier = PeriodFactory(period="2024-12")
    pi_a: Any = PIFactory(email="ada@university.example", name="Ada Lovelace")
    pi_b: Any = PIFactory(email="bob@university.example", name="Bob Builder")
    a1: Any = ProjectFactory(project_id="ada-genomics", pi=pi_a, name="Genomics")
    a2: Any = ProjectFactory(project_id="ada-climate", pi=pi_a)
    b1: Any = ProjectFactory(project_id="bob-bridges", pi=pi_b)
    for p in (period, earlier):
        ChargeFactory(period=p, source=aws, project=a1, list_cost=Decimal("100"), billed_cost=Decimal("80"))
        ChargeFactory(
            period=p,
            source=hpc,
            project=a1,
            service_name="CPU hours",
            list_cost=Decimal("50"),
            billed_cost=Decimal("0"),
        )
        ChargeFactory(period=p, source=aws, project=a2, list_cost=Decimal("10"), billed_cost=Decimal("9.5"))
        ChargeFactory(period=p, source=aws, project=b1, list_cost=Decimal("999"), billed_cost=Decimal("999"))
    ChargeFactory(period=period, source=aws, project=a1, review_state="flagged", billed_cost=Decimal("7"))
    _generate("2024-12")
    _generate("2025-01")
    # A late charge revises A's genomics statement of 2025-01: v1 superseded by v2.
    ChargeFactory(
        period=period,
        source=aws,
        project=a1,
        resource_id="i-late",
        list_cost=Decimal("20"),
        billed_cost=Decimal("20"),
    )
    _generate("2025-01")

    user_a = _portal_user(pi_a.email)
    user_b = _portal_user(pi_b.email)
    for pi, user in ((pi_a, user_a), (pi_b, user_b)):
        pi.user = user
        pi.save()
        user.groups.add(groups["PI"])
    delegate = _portal_user("manager@university.example")
    delegate.groups.add(groups["PI"])
    Delegation.objects.create(pi=pi_a, project=a2, delegate=delegate)
    return PortalWorld(
        pi_a=pi_a,
        pi_b=pi_b,
        user_a=user_a,
        user_b=user_b,
        a1=a1,
        a2=a2,
        b1=b1,
        statements_a=list(Statement.objects.filter(pi=pi_a).order_by("id")),
        statements_b=list(Statement.objects.filter(pi=pi_b).order_by("id")),
        delegate=delegate,
    )


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client
