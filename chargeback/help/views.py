"""Help for finance users, inside the admin (linked from its header), and the system page for
billing admins. The pages only read: the site's tag keys, the email template variables, the
system's status."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from accounts import roles
from billing.branding import EMAIL_SAMPLE_CONTEXT
from billing.selectors import billing_settings_get
from chargeback import system_status
from chargeback.admin_helpers import admin_page_context


@dataclass(frozen=True)
class Topic:
    slug: str
    title: str
    summary: str


TOPICS = (
    Topic("monthly-cycle", "The monthly cycle", "From the providers' exports to the journal, step by step."),
    Topic("review", "Review and flags", "Why charges are flagged, and approving, rejecting, correcting."),
    Topic("tags", "Tags and the tag specification", "The tags cloud users put on resources: copy and send."),
    Topic("focus-exports", "FOCUS exports from AWS, Azure and GCP", "Setting up each provider's export."),
    Topic("usage", "Slurm and storage usage", "Rating cluster jobs and storage quotas: the commands."),
    Topic("periods", "Periods and finalizing", "Open, closed, finalized: what each allows."),
    Topic(
        "statements", "Statements and emails", "Versions, branding, the note of a period, email templates."
    ),
    Topic("journal", "The journal", "The general-ledger export and why it may be refused."),
    Topic("cents", "Cents between sums and statements", "Why exact sums and statements differ by cents."),
)
_BY_SLUG = {t.slug: t for t in TOPICS}


def _context(request: HttpRequest, title: str, **extra: object) -> dict[str, object]:
    return admin_page_context(request, title, topics=TOPICS, **extra)


def help_index(request: HttpRequest) -> HttpResponse:
    return TemplateResponse(request, "admin/help/index.html", _context(request, "Help"))


def help_topic(request: HttpRequest, slug: str) -> HttpResponse:
    topic = _BY_SLUG.get(slug)
    if topic is None:
        raise Http404("no such help topic")
    org = billing_settings_get()
    context = _context(
        request,
        topic.title,
        topic=topic,
        org=org,
        tag_keys=[
            ("PI email", org.tag_pi_email, "required", "ada.lovelace@university.example"),
            ("Project id", org.tag_project_id, "required", "genomics-2025"),
            ("Fund/org", org.tag_fund_org, "recommended", "10-2000-BIO"),
            ("Cost center", org.tag_cost_center, "optional", "CC-4410"),
            (org.reference_1_label, org.tag_reference_1, "optional", "NIH-R01-2023"),
            (org.reference_2_label, org.tag_reference_2, "optional", "REQ-1234"),
        ],
        prefixes=org.tag_prefix_list,
        email_variables=sorted(EMAIL_SAMPLE_CONTEXT),
        statement_variables=sorted(EMAIL_SAMPLE_CONTEXT["statements"][0]),
        data_dir=settings.DATA_DIR,
    )
    return TemplateResponse(request, f"admin/help/{topic.slug}.html", context)


def system_page(request: HttpRequest) -> HttpResponse:
    """Version, database, broker and workers, disk, last backup: billing admins only."""
    if not roles.is_billing_admin(request.user):
        raise PermissionDenied
    status = system_status.system_status()
    return TemplateResponse(request, "admin/system.html", _context(request, "System", status=status))
