"""What a site's branding may be: the statement logo (PNG, JPEG or SVG, checked by content, bytes
and pixels), the accent colour, and the email templates a billing admin edits in the settings.

The checks are pure functions, shared by the settings form (a clear form error) and the service
that stores the values (the same rule for the CLI and tests). Rendering statements and emails with
the branding is the statements app's business (statements/branding.py, statements/email_templates.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.template import TemplateSyntaxError, engines

from chargeback.errors import Refused

DEFAULT_ACCENT = "#1d4e89"
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")

LOGO_KINDS = {"png": "image/png", "jpeg": "image/jpeg", "svg": "image/svg+xml"}
# Elements of an SVG logo that could reach outside the file (images, scripts, embedded HTML).
_SVG_FORBIDDEN = {"image", "script", "foreignobject", "iframe"}
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


def logo_max_bytes() -> int:
    return int(getattr(settings, "OPENCHARGEBACK_LOGO_MAX_BYTES", 512 * 1024))


def logo_max_pixels() -> int:
    """The longest side a PNG or JPEG logo may have, in pixels."""
    return int(getattr(settings, "OPENCHARGEBACK_LOGO_MAX_PIXELS", 2000))


@dataclass(frozen=True)
class LogoInfo:
    kind: str  # png | jpeg | svg
    width: float
    height: float
    size_bytes: int
    sha256: str

    @property
    def extension(self) -> str:
        return "jpg" if self.kind == "jpeg" else self.kind


def accent_colour_clean(value: str) -> str:
    """'#1D4E89' → '#1d4e89'; anything but six hex digits after '#' is refused."""
    text = (value or "").strip()
    if not HEX_COLOUR.fullmatch(text):
        raise Refused(f"accent colour {value!r}: use a hex colour such as {DEFAULT_ACCENT}")
    return text.lower()


def logo_inspect(data: bytes, name: str = "logo") -> LogoInfo:
    """The kind and size of a logo, from its bytes (never its name); refused when too large, not a
    PNG, JPEG or SVG, or an SVG that could load anything from outside itself."""
    limit = logo_max_bytes()
    if not data:
        raise Refused(f"{name}: the file is empty")
    if len(data) > limit:
        raise Refused(f"{name}: {len(data):,} bytes; a logo may be at most {limit:,} bytes")
    digest = hashlib.sha256(data).hexdigest()
    if data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff"):
        width, height, kind = _raster_size(data, name)
    elif _looks_like_svg(data):
        width, height = _svg_size(data, name)
        kind = "svg"
    else:
        raise Refused(f"{name}: not a PNG, JPEG or SVG image (judged by its content, not its name)")
    return LogoInfo(kind=kind, width=width, height=height, size_bytes=len(data), sha256=digest)


def _raster_size(data: bytes, name: str) -> tuple[float, float, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        # Only the header is read here: the pixel limit is checked before anything is decoded.
        with Image.open(io.BytesIO(data)) as image:
            kind = (image.format or "").lower()
            width, height = image.size
            if kind not in ("png", "jpeg"):
                raise Refused(f"{name}: a {image.format or 'unknown'} image; use PNG, JPEG or SVG")
            limit = logo_max_pixels()
            if max(width, height) > limit:
                raise Refused(
                    f"{name}: {width} × {height} pixels; a logo may be at most {limit} pixels on its longest side"
                )
            image.verify()  # a truncated or corrupt file is refused now, not when a PDF is drawn
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Refused(f"{name}: not a readable PNG or JPEG image ({exc})") from None
    return float(width), float(height), kind


def _looks_like_svg(data: bytes) -> bool:
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<?xml", b"<svg", b"<!--")) and b"<svg" in data[:65536].lower()


_LENGTH = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(px|pt|mm|cm|in)?\s*")


def _svg_size(data: bytes, name: str) -> tuple[float, float]:
    from lxml import etree

    lowered = data.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise Refused(f"{name}: an SVG logo may not declare a DOCTYPE or entities")
    if b"@import" in lowered:
        raise Refused(f"{name}: an SVG logo may not import style sheets")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise Refused(f"{name}: not a well-formed SVG file ({exc})") from None
    if etree.QName(root).localname != "svg":
        raise Refused(f"{name}: the document is not an SVG image")
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        local = etree.QName(element).localname.lower()
        if local in _SVG_FORBIDDEN:
            raise Refused(f"{name}: an SVG logo may not contain <{local}> elements")
        for attr in ("href", _XLINK_HREF):
            target = element.get(attr)
            if target is not None and not target.startswith("#"):
                raise Refused(f"{name}: an SVG logo may only refer to its own parts (found {target[:60]!r})")
    width, height = _svg_length(root.get("width")), _svg_length(root.get("height"))
    box = (root.get("viewBox") or "").replace(",", " ").split()
    if (width is None or height is None) and len(box) == 4:
        with contextlib.suppress(ValueError):
            width, height = width or float(box[2]), height or float(box[3])
    if not width or not height or width <= 0 or height <= 0:
        raise Refused(f"{name}: the SVG gives no size (width and height, or a viewBox)")
    return width, height


def _svg_length(value: str | None) -> float | None:
    match = _LENGTH.fullmatch(value or "")
    return float(match.group(1)) if match else None


# --- email templates ------------------------------------------------------------------------

# What the statement email templates are given; statements/email_templates.py builds the real one
# with the same keys. README ("Statement emails") documents every variable.
EMAIL_SAMPLE_CONTEXT: dict[str, Any] = {
    "organization": "Research Computing",
    "contact_email": "billing@example.edu",
    "address": "1 University Way\nSpringfield",
    "contact_line": "Tel. +1 555 0100",
    "payment_instructions": "Pay by internal transfer to fund 10-2000.",
    "footer": "Thank you for using research computing.",
    "accent": DEFAULT_ACCENT,
    "period": "2025-01",
    "period_label": "January 2025",
    "period_note": "Storage prices change from February.",
    "pi_name": "Ada Lovelace",
    "pi_email": "ada@example.edu",
    "statements": [
        {
            "label": "2025-01-0001 v1",
            "number": "2025-01-0001",
            "version": 1,
            "revised": False,
            "project": "genomics",
            "project_name": "Genomics",
            "fund_org": "BIO-2024-001",
            "list": "$1,000.00",
            "discount": "$100.00",
            "discount_percent": "10 %",
            "due": "$900.00",
            "held_back": "",
            "held_back_count": 0,
            "filename": "2025-01_ada_genomics.pdf",
        }
    ],
    "count": 1,
    "currency": "USD",
    "total": "$900.00",
    "list_total": "$1,000.00",
    "discount_total": "$100.00",
    "held_back_total": "",
    "any_revised": False,
    "portal_url": "https://billing.example.edu/portal/",
}

EMAIL_TEMPLATE_FIELDS = ("email_subject_template", "email_text_template", "email_html_template")


def email_template_problem(source: str) -> str | None:
    """Why a template text cannot be used (syntax error, unknown tag or filter, an error while
    rendering the sample statement email), or None."""
    if not (source or "").strip():
        return None
    try:
        template = engines["django"].from_string(source)
        template.render(dict(EMAIL_SAMPLE_CONTEXT))
    except TemplateSyntaxError as exc:
        return f"template error: {exc}"
    except Exception as exc:  # a filter failing on the sample values
        return f"the template fails on a sample statement email: {type(exc).__name__}: {exc}"
    return None


# --- applying changes -------------------------------------------------------------------------


def branding_changes_clean(changes: dict[str, Any]) -> dict[str, Any]:
    """The branding part of a settings change, checked: the accent colour normalised, the email
    templates rendered against a sample, and a new logo (bytes or an uploaded file; "" or None
    removes it) checked and stored in media storage under a name made from its content. Returns
    the changes to write."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    cleaned = dict(changes)
    if "accent_color" in cleaned:
        cleaned["accent_color"] = accent_colour_clean(cleaned["accent_color"])
    for key in EMAIL_TEMPLATE_FIELDS:
        if key in cleaned:
            problem = email_template_problem(cleaned[key] or "")
            if problem:
                raise Refused(f"{key.replace('_', ' ')}: {problem}")
    if "logo" in cleaned:
        upload = cleaned["logo"]
        if not upload:
            cleaned["logo"] = ""
        else:
            name = getattr(upload, "name", "logo") or "logo"
            if isinstance(upload, bytes):
                data = upload
            else:
                upload.seek(0)
                data = upload.read(logo_max_bytes() + 1)
            info = logo_inspect(data, name=str(name).rsplit("/", 1)[-1])
            stored = default_storage.save(
                f"branding/logo-{info.sha256[:16]}.{info.extension}", ContentFile(data)
            )
            cleaned["logo"] = stored
    return cleaned


def period_statement_note_set(*, period: str, note: str, actor: Any = None, actor_name: str = "") -> Any:
    """The note printed on every statement of a period rendered from now on. A finalized period's
    statements never change: its note is refused. Audited (auditlog records the change)."""
    from django.db import transaction

    from .models import BillingPeriod

    with transaction.atomic():
        obj = BillingPeriod.objects.select_for_update().filter(period=period).first()
        if obj is None:
            raise Refused(f"no billing period {period}")
        if obj.is_finalized:
            raise Refused(f"period {period} is finalized: its statements and their note cannot change")
        text = (note or "").strip()
        if len(text) > 2000:
            raise Refused("the note on statements may be at most 2,000 characters")
        if obj.statement_note != text:
            obj.statement_note = text
            obj.save(update_fields=["statement_note"])
    return obj
