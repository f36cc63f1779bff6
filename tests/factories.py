"""factory_boy factories for the domain. Append new ones; keep existing signatures."""

from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from billing.models import PI, BillingPeriod, Charge, FlagRule, Import, Project, Source


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@university.example")
    password = factory.django.Password("correct horse battery staple")


class SourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Source
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"source{n}")
    display_name = factory.LazyAttribute(lambda s: s.slug.upper())
    filename_pattern = factory.LazyAttribute(lambda s: f"{s.slug}_*")
    fund_org = "RC-RECOVERY"
    account = "4500"


class PeriodFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BillingPeriod
        django_get_or_create = ("period",)

    period = "2025-01"
    status = BillingPeriod.Status.OPEN


class PIFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PI
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"pi{n}@university.example")
    name = factory.Sequence(lambda n: f"PI Number {n}")
    department = "Physics"


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project
        django_get_or_create = ("project_id",)

    project_id = factory.Sequence(lambda n: f"project-{n}")
    pi = factory.SubFactory(PIFactory)
    fund_org = factory.Sequence(lambda n: f"NSF-2025-{n:04d}")


class ImportFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Import

    source = factory.SubFactory(SourceFactory)
    period = factory.SubFactory(PeriodFactory)
    original_name = factory.LazyAttribute(lambda i: f"{i.source.slug}_{i.period.period}.csv")
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    status = Import.Status.COMPLETED


class ChargeFactory(factory.django.DjangoModelFactory):
    """A charge as an import would write it (attribution copied from the project)."""

    class Meta:
        model = Charge

    period = factory.SubFactory(PeriodFactory)
    source = factory.SubFactory(SourceFactory)
    import_run = factory.SubFactory(
        ImportFactory, source=factory.SelfAttribute("..source"), period=factory.SelfAttribute("..period")
    )
    project = factory.SubFactory(ProjectFactory)
    pi = factory.LazyAttribute(lambda c: c.project.pi if c.project else None)
    pi_email = factory.LazyAttribute(lambda c: c.pi.email if c.pi else "")
    project_code = factory.LazyAttribute(lambda c: c.project.project_id if c.project else "")
    fund_org = factory.LazyAttribute(lambda c: c.project.fund_org if c.project else "")
    resource_id = factory.Sequence(lambda n: f"i-{n:012x}")
    resource_name = factory.LazyAttribute(lambda c: f"name-{c.resource_id}")
    service_name = "Amazon EC2"
    service_category = "Compute"
    charge_category = "Usage"
    list_cost = Decimal("100.00")
    contracted_cost = Decimal("85.00")
    billed_cost = Decimal("85.00")
    effective_cost = Decimal("85.00")
    review_state = Charge.ReviewState.OK


class FlagRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FlagRule

    name = factory.Sequence(lambda n: f"rule {n}")
    pattern = "^TEST"
    fields = ["fund_org"]
    mode = FlagRule.Mode.FLAG_IF_MATCH
