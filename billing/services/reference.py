"""Reference data: sources, PIs, projects and account mappings."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from chargeback.emails import is_plain_email
from chargeback.errors import Refused

from .. import selectors
from ..models import (
    PI,
    AccountMapping,
    Project,
    Source,
)


@transaction.atomic
def source_create(
    *, slug: str, display_name: str = "", filename_pattern: str = "", fund_org: str = "", account: str = ""
) -> Source:
    slug = selectors.source_slug(slug)
    if Source.objects.filter(slug=slug).exists():
        raise Refused(f"source {slug} already exists")
    return Source.objects.create(
        slug=slug,
        display_name=display_name or selectors.source_display_name(slug),
        filename_pattern=filename_pattern or f"{slug}_*",
        fund_org=fund_org,
        account=account,
    )


@transaction.atomic
def source_ensure(*, name: str) -> tuple[Source, bool]:
    """The source named (case-insensitive), created on first sight as the original does; returns
    it and whether it was created."""
    slug = selectors.source_slug(name)
    source, created = Source.objects.get_or_create(
        slug=slug,
        defaults={"display_name": selectors.source_display_name(slug), "filename_pattern": f"{slug}_*"},
    )
    return source, created


@transaction.atomic
def source_update(*, slug: str, **changes: str) -> Source:
    source = selectors.source_get(slug)
    allowed = {"display_name", "filename_pattern", "fund_org", "account"}
    unknown = set(changes) - allowed
    if unknown:
        raise Refused(f"cannot change {', '.join(sorted(unknown))} of a source")
    for name, value in changes.items():
        if value is not None:
            setattr(source, name, value)
    source.save()
    return source


def _pi_get_or_create(email: str) -> PI:
    email = (email or "").strip().lower()
    if not is_plain_email(email):
        raise Refused(f"invalid PI email {email!r}")
    pi, _ = PI.objects.get_or_create(email=email)
    return pi


@transaction.atomic
def account_mapping_set(
    *,
    sub_account_id: str,
    project_id: str,
    pi_email: str,
    fund_org: str = "",
    source: str | None = None,
    note: str = "",
) -> AccountMapping:
    """Map a provider sub-account to a project (created under the PI when new)."""
    sub_account_id = (sub_account_id or "").strip()
    project_id = (project_id or "").strip()
    if not sub_account_id:
        raise Refused("a sub-account id is required")
    if not project_id:
        raise Refused("a project id is required")
    pi = _pi_get_or_create(pi_email)
    project = Project.objects.filter(project_id=project_id).select_related("pi").first()
    if project is None:
        project = Project.objects.create(project_id=project_id, pi=pi, fund_org=fund_org)
    elif project.pi_id != pi.pk:
        raise Refused(f"project {project_id} belongs to {project.pi.email}, not {pi.email}")
    source_obj = selectors.source_get(source) if source else None
    mapping, _ = AccountMapping.objects.update_or_create(
        sub_account_id=sub_account_id,
        source=source_obj,
        defaults={"project": project, "fund_org": fund_org, "note": note},
    )
    return mapping


@transaction.atomic
def pi_update(*, email: str, name: str | None = None, department: str | None = None) -> PI:
    """Edit a PI's name or department (the email identifies them and stays)."""
    pi = PI.objects.select_for_update().filter(email=(email or "").strip().lower()).first()
    if pi is None:
        raise Refused(f"no PI with email {email}")
    if name is not None:
        pi.name = name.strip()
    if department is not None:
        pi.department = department.strip()
    pi.save()
    return pi


PROJECT_EDITABLE = (
    "name",
    "fund_org",
    "cost_center",
    "reference_1",
    "reference_2",
    "gl_account",
    "is_active",
)


@transaction.atomic
def project_update(*, project_id: str, **changes: Any) -> Project:
    """Edit a project's details. Charges keep the attribution they were imported or corrected with."""
    project = Project.objects.select_for_update().filter(project_id=(project_id or "").strip()).first()
    if project is None:
        raise Refused(f"no project {project_id}")
    unknown = set(changes) - set(PROJECT_EDITABLE)
    if unknown:
        raise Refused(f"cannot change {', '.join(sorted(unknown))} of a project")
    for name, value in changes.items():
        setattr(project, name, value.strip() if isinstance(value, str) else value)
    project.save()
    return project


@transaction.atomic
def account_mapping_delete(*, mapping_id: int) -> None:
    """Remove a sub-account mapping; charges already imported keep their attribution."""
    deleted, _ = AccountMapping.objects.filter(pk=mapping_id).delete()
    if not deleted:
        raise Refused(f"no account mapping #{mapping_id}")
