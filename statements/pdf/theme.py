"""The statement's look: colours, fonts (a Unicode font when the text needs one), page size, styles."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT, TA_RIGHT
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus.tables import CellStyle

from .cells import cell_style

INK = colors.HexColor("#1f2933")


MUTED = colors.HexColor("#616e7c")


RULE = colors.HexColor("#cbd2d9")


BAND = colors.HexColor("#f0f4f8")


ACCENT = colors.HexColor("#1d4e89")


NOTE_BG = colors.HexColor("#fff8e1")


NOTE_RULE = colors.HexColor("#f0b429")


_UNICODE_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
)


@dataclass(frozen=True)
class Fonts:
    regular: str
    bold: str


@dataclass
class Theme:
    """Page geometry and styles for one font family; built once per process, family and accent."""

    fonts: Fonts
    page_size: tuple[float, float]
    accent: colors.Color
    margin: float
    width: float  # usable width
    styles: dict[str, ParagraphStyle]
    cells: dict[str, CellStyle]  # of Grid tables: shared, never changed


def _page_size() -> tuple[float, float]:
    name = str(getattr(settings, "OPENCHARGEBACK_PDF_PAGE_SIZE", "letter")).lower()
    return A4 if name == "a4" else LETTER


@functools.lru_cache(maxsize=1)
def _unicode_fonts() -> Fonts | None:
    """DejaVu Sans, registered once, for text the standard PDF fonts cannot show (e.g. 'Ł', '₹')."""
    configured = getattr(settings, "OPENCHARGEBACK_PDF_UNICODE_FONT_DIR", "")
    for folder in ([configured] if configured else []) + list(_UNICODE_FONT_DIRS):
        regular, bold = Path(folder) / "DejaVuSans.ttf", Path(folder) / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            pdfmetrics.registerFont(TTFont("OCB-Sans", str(regular)))
            pdfmetrics.registerFont(TTFont("OCB-Sans-Bold", str(bold)))
            pdfmetrics.registerFontFamily("OCB-Sans", normal="OCB-Sans", bold="OCB-Sans-Bold")
            return Fonts("OCB-Sans", "OCB-Sans-Bold")
    return None


STANDARD_FONTS = Fonts("Helvetica", "Helvetica-Bold")


@functools.lru_cache(maxsize=8)
def theme(
    fonts: Fonts = STANDARD_FONTS, page_size: tuple[float, float] | None = None, accent: str = ""
) -> Theme:
    """`accent`: the site's accent colour (statements/branding.py), the built-in one when empty."""
    size = page_size or _page_size()
    accent_colour = colors.HexColor(accent) if accent else ACCENT
    margin = 16 * mm
    regular, bold = fonts.regular, fonts.bold

    def style(name: str, **kwargs: Any) -> ParagraphStyle:
        base: dict[str, Any] = {
            "fontName": regular,
            "fontSize": 8.5,
            "leading": 10.5,
            "textColor": INK,
            "splitLongWords": 1,
        }
        base.update(kwargs)
        return ParagraphStyle(name, **base)

    styles = {
        "org": style("org", fontName=bold, fontSize=15, leading=18, textColor=accent_colour),
        "org_contact": style("org_contact", fontSize=8.5, leading=11, textColor=MUTED),
        "title": style("title", fontName=bold, fontSize=15, leading=18, alignment=TA_RIGHT),
        "meta": style("meta", fontSize=8.5, leading=11, alignment=TA_RIGHT),
        "label": style("label", fontName=bold, fontSize=7, leading=9, textColor=MUTED),
        "value": style("value", fontSize=9, leading=11.5),
        "value_bold": style("value_bold", fontName=bold, fontSize=9.5, leading=12),
        "h2": style("h2", fontName=bold, fontSize=10.5, leading=13, textColor=accent_colour, spaceBefore=4),
        "cell": style("cell", fontSize=8, leading=9.6),
        "cell_small": style("cell_small", fontSize=6.8, leading=8.2, textColor=MUTED),
        "cell_bold": style("cell_bold", fontName=bold, fontSize=8, leading=9.6),
        "figure_label": style("figure_label", fontName=bold, fontSize=7.5, leading=9, textColor=MUTED),
        "figure": style("figure", fontName=bold, fontSize=14, leading=17, alignment=TA_LEFT),
        "figure_due": style("figure_due", fontName=bold, fontSize=16, leading=19, textColor=accent_colour),
        "figure_note": style("figure_note", fontSize=8, leading=10, textColor=MUTED),
        "note": style("note", fontSize=8.5, leading=11),
        "footnote": style("footnote", fontSize=7, leading=9, textColor=MUTED),
    }
    # The tables' cells. Data tables: a header row (bold, muted) over body rows; "_right" for
    # figures. `reduction`: the named parts of a discount, under their line.
    data_cell: dict[str, Any] = {
        "fontsize": 8,
        "leading": 9.6,
        "valign": "TOP",
        "topPadding": 2.5,
        "bottomPadding": 2.5,
        "leftPadding": 3,
        "rightPadding": 3,
    }
    cells: dict[str, CellStyle] = {}
    for name, kind in (
        ("head", {"fontname": bold, "color": MUTED}),
        ("body", {"fontname": regular, "color": INK}),
        ("total", {"fontname": bold, "color": INK}),
        ("reduction", {"fontname": regular, "color": MUTED, "fontsize": 6.8}),
    ):
        cells[name] = cell_style(name, **{**data_cell, **kind})
        cells[f"{name}_right"] = cell_style(f"{name}_right", **{**data_cell, **kind, "alignment": "RIGHT"})
    # Boxes laid out as tables (their cells hold flowables, which bring their own fonts).
    cells["header"] = cell_style("header", valign="TOP", leftPadding=0, rightPadding=0, bottomPadding=8)
    cells["who_left"] = cell_style("who_left", valign="TOP", leftPadding=0, rightPadding=12)
    cells["who_right"] = cell_style("who_right", valign="TOP", leftPadding=0, rightPadding=0)
    cells["figure"] = cell_style("figure", valign="TOP", topPadding=7, bottomPadding=7, leftPadding=9)
    cells["note"] = cell_style("note", topPadding=5, bottomPadding=5, leftPadding=8)
    return Theme(
        fonts=fonts,
        page_size=size,
        accent=accent_colour,
        margin=margin,
        width=size[0] - 2 * margin,
        styles=styles,
        cells=cells,
    )


def _needs_unicode(texts: Sequence[str]) -> bool:
    for text in texts:
        try:
            text.encode("cp1252")
        except UnicodeEncodeError:
            return True
    return False
