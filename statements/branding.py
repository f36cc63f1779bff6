"""A site's branding on statement PDFs: logo, address and contact, accent colour, payment
instructions, footer and the period's note.

Branding is presentation, not content: it is not part of a statement's content hash, so changing
it never issues a new version. A PDF is rendered once per version (and for every preview), with the
branding in force then; an issued PDF keeps the look it was issued with, and its checksum.

The logo is read from media storage (local or S3) once per process and name: a new logo is stored
under a new name (made from its content), so a cached one is never stale. A logo that cannot be
read or drawn is left out with a warning: a statement is never refused for its logo.
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass
from typing import Any

from django.core.files.storage import default_storage
from reportlab.platypus import Flowable, Image

from billing.branding import DEFAULT_ACCENT, HEX_COLOUR
from billing.models import BillingPeriod, BillingSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Logo:
    name: str  # storage name, for messages
    kind: str  # png | jpeg | svg
    data: bytes


@dataclass(frozen=True)
class Branding:
    """What a statement PDF shows of the site beside the statement itself."""

    accent: str = DEFAULT_ACCENT
    address: str = ""
    contact_line: str = ""
    payment_instructions: str = ""
    footer: str = ""
    period_note: str = ""
    logo: Logo | None = None

    @property
    def accent_hex(self) -> str:
        """The accent colour as '#rrggbb', or "" for the built-in one (or a value that is not a colour)."""
        value = (self.accent or "").lower()
        return value if HEX_COLOUR.fullmatch(value) and value != DEFAULT_ACCENT else ""

    def texts(self) -> list[str]:
        """Every text it adds to a PDF (the PDF picks a Unicode font when one needs it)."""
        return [self.address, self.contact_line, self.payment_instructions, self.footer, self.period_note]


def statement_branding(org: BillingSettings, period: BillingPeriod | None) -> Branding:
    return Branding(
        accent=org.accent_color or DEFAULT_ACCENT,
        address=org.organization_address,
        contact_line=org.contact_line,
        payment_instructions=org.payment_instructions,
        footer=org.statement_footer,
        period_note=period.statement_note if period is not None else "",
        logo=logo_load(org.logo.name) if org.logo else None,
    )


@functools.lru_cache(maxsize=4)
def logo_load(name: str) -> Logo | None:
    from billing.branding import logo_inspect

    try:
        with default_storage.open(name, "rb") as fh:
            data = fh.read()
        info = logo_inspect(data, name=name)
    except Exception as exc:
        logger.warning("statement logo %s left out: %s", name, exc)
        return None
    return Logo(name=name, kind=info.kind, data=data)


def logo_flowable(logo: Logo | None, max_width: float, max_height: float) -> Flowable | None:
    """The logo scaled to fit the box, keeping its proportions; None when it cannot be drawn."""
    if logo is None:
        return None
    try:
        if logo.kind == "svg":
            return _svg_flowable(logo, max_width, max_height)
        image = Image(io.BytesIO(logo.data))
        scale = min(max_width / image.imageWidth, max_height / image.imageHeight)
        image.drawWidth, image.drawHeight = image.imageWidth * scale, image.imageHeight * scale
        image.hAlign = "LEFT"
        return image
    except Exception as exc:
        logger.warning("statement logo %s left out: %s", logo.name, exc)
        return None


def _svg_flowable(logo: Logo, max_width: float, max_height: float) -> Any:
    # svglib turns the SVG into a reportlab Drawing: vector graphics in the PDF, nothing rasterized.
    from svglib.svglib import svg2rlg

    drawing = svg2rlg(io.BytesIO(logo.data))
    if drawing is None or not drawing.width or not drawing.height:
        raise ValueError("svglib could not read the SVG")
    scale = min(max_width / drawing.width, max_height / drawing.height)
    drawing.scale(scale, scale)
    drawing.width, drawing.height = drawing.width * scale, drawing.height * scale
    drawing.hAlign = "LEFT"
    return drawing
