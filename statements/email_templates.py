"""The statement email's subject and bodies, from Django templates a site can change.

Which template is used, first found wins:
1. the text edited in the admin (Billing settings → Statement email), when not empty;
2. a site's file in `DATA_DIR/templates/` (first in TEMPLATES' DIRS): `statements/email/subject.txt`,
   `statements/email/statements.txt`, `statements/email/statements.html`;
3. the built-in files in `templates/statements/email/`; for the subject, the
   OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT setting (config.yaml's subject).

The subject and the text body are plain text: rendered without HTML escaping. The HTML body is
escaped as usual. The variables are those of `billing.branding.EMAIL_SAMPLE_CONTEXT` (README,
"Statement emails"); an admin-edited template is tried on that sample before it is saved.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.template import Context, Template, TemplateDoesNotExist, engines
from django.template.loader import get_template

from billing.branding import DEFAULT_ACCENT, HEX_COLOUR
from billing.models import BillingPeriod, BillingSettings

SUBJECT_FILE = "statements/email/subject.txt"
TEXT_FILE = "statements/email/statements.txt"
HTML_FILE = "statements/email/statements.html"
SUBJECT_MAX = 300

_COMPILED: dict[str, Template] = {}


def _compiled(source: str) -> Template:
    template = _COMPILED.get(source)
    if template is None:
        if len(_COMPILED) > 32:
            _COMPILED.clear()
        template = _COMPILED[source] = engines["django"].from_string(source).template  # type: ignore[attr-defined]
    return template


def _render(edited: str, file_name: str | None, context: dict[str, Any], *, autoescape: bool) -> str | None:
    """The edited text if any, else the file found first by the template loaders; None when neither."""
    if edited.strip():
        template = _compiled(edited)
    elif file_name is not None:
        try:
            template = get_template(file_name).template  # type: ignore[attr-defined]
        except TemplateDoesNotExist:
            return None
    else:
        return None
    return template.render(Context(context, autoescape=autoescape))


def branding_context(org: BillingSettings, period: BillingPeriod) -> dict[str, Any]:
    """The branding variables of the statement email."""
    accent = (org.accent_color or "").lower()
    return {
        "address": org.organization_address,
        "contact_line": org.contact_line,
        "payment_instructions": org.payment_instructions,
        "footer": org.statement_footer,
        "period_note": period.statement_note,
        "accent": accent if HEX_COLOUR.fullmatch(accent) else DEFAULT_ACCENT,
    }


def render_subject(context: dict[str, Any], org: BillingSettings) -> str:
    text = _render(org.email_subject_template, SUBJECT_FILE, context, autoescape=False)
    if text is None:
        source = settings.OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT
        text = _compiled(source).render(Context(context, autoescape=False))
    return " ".join(text.split())[:SUBJECT_MAX]


def render_text(context: dict[str, Any], org: BillingSettings) -> str:
    return _render(org.email_text_template, TEXT_FILE, context, autoescape=False) or ""


def render_html(context: dict[str, Any], org: BillingSettings) -> str:
    return _render(org.email_html_template, HTML_FILE, context, autoescape=True) or ""
