"""PDF statements with reportlab (platypus).

Fonts, paragraph and table styles are built once per process (`theme()`); a render only builds
flowables. Every free-text value (names, project ids, fund/orgs, references, resource names)
is a Paragraph in a fixed-width cell, so long values wrap, words longer than a cell included,
and nothing overlaps. The detail table flows over as many pages as it needs and repeats its
header row; every page carries "Page x of y" and the statement number in its footer.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from django.conf import settings
from django.utils import timezone
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT, TA_RIGHT
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from billing.rating.selectors import how_calculated
from chargeback.money import currency_symbol, format_money

from .branding import Branding, logo_flowable
from .selectors import discount_percent, format_percent

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
    """Page geometry and styles for one font family; built once per process and family."""

    fonts: Fonts
    page_size: tuple[float, float]
    accent: colors.Color
    margin: float
    width: float  # usable width
    styles: dict[str, ParagraphStyle]
    table_head: list[tuple]


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
    table_head = [
        ("FONTNAME", (0, 0), (-1, 0), bold),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("LEADING", (0, 0), (-1, -1), 9.6),
        ("FONTNAME", (0, 1), (-1, -1), regular),
        ("TEXTCOLOR", (0, 0), (-1, 0), MUTED),
        ("TEXTCOLOR", (0, 1), (-1, -1), INK),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, INK),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
    ]
    return Theme(
        fonts=fonts,
        page_size=size,
        accent=accent_colour,
        margin=margin,
        width=size[0] - 2 * margin,
        styles=styles,
        table_head=table_head,
    )


def _needs_unicode(texts: Sequence[str]) -> bool:
    for text in texts:
        try:
            text.encode("cp1252")
        except UnicodeEncodeError:
            return True
    return False


# --- input ----------------------------------------------------------------------------------


@dataclass
class LineData:
    source_name: str
    service_name: str
    kind: str
    list_amount: Decimal
    discount_amount: Decimal
    amount: Decimal
    # Rated usage and the discount by name (see billing.rating.selectors.LineExplanation).
    rating: dict[str, Any] = field(default_factory=dict)


@dataclass
class StatementData:
    """Everything a PDF shows, independent of the database."""

    number: str
    version: int
    period: str
    period_start: dt.date
    period_end: dt.date
    issued_at: dt.datetime
    currency: str
    organization: str
    contact_email: str
    pi_name: str
    pi_email: str
    pi_department: str
    project_code: str
    project_name: str
    fund_org: str
    cost_center: str
    reference_1_label: str
    reference_1: str
    reference_2_label: str
    reference_2: str
    list_total: Decimal
    discount_total: Decimal
    billed_total: Decimal
    held_back_count: int
    held_back_amount: Decimal
    lines: list[LineData]
    details: list[list[Any]]
    replaces: str = ""
    source_names: dict[str, str] | None = None
    draft: bool = False  # a preview (generate --dry-run): DRAFT across every page, nothing issued
    branding: Branding = field(default_factory=Branding)  # logo, address, colours, notes

    @property
    def label(self) -> str:
        return f"{self.number} v{self.version}"


# --- canvas with "page x of y" ---------------------------------------------------------------


class _NumberedCanvas(rl_canvas.Canvas):
    """Keeps every page until save() so the footer can say 'Page x of y'."""

    def __init__(
        self,
        *args: Any,
        footer: tuple[str, str, Fonts] = ("", "", STANDARD_FONTS),
        draft: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []
        self._footer = footer
        self._draft = draft

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for number, state in enumerate(self._pages, start=1):
            self.__dict__.update(state)
            if self._draft:
                self._draw_draft_mark()
            self._draw_footer(number, total)
            super().showPage()
        super().save()

    def _draw_draft_mark(self) -> None:
        """DRAFT across the page, light enough to read the statement through it."""
        width, height = self._pagesize
        self.saveState()
        self.setFillColor(colors.Color(0.85, 0.1, 0.1, alpha=0.18))
        self.setFont(self._footer[2].bold, 110)
        self.translate(width / 2, height / 2)
        self.rotate(40)
        self.drawCentredString(0, -35, "DRAFT")
        self.restoreState()

    def _draw_footer(self, number: int, total: int) -> None:
        left, middle, fonts = self._footer
        width, _ = self._pagesize
        margin = 16 * mm
        self.saveState()
        self.setStrokeColor(RULE)
        self.setLineWidth(0.5)
        self.line(margin, 12 * mm, width - margin, 12 * mm)
        self.setFont(fonts.regular, 7)
        self.setFillColor(MUTED)
        self.drawString(margin, 8.5 * mm, left)
        self.drawCentredString(width / 2, 8.5 * mm, middle)
        self.drawRightString(width - margin, 8.5 * mm, f"Page {number} of {total}")
        self.restoreState()


# --- building ---------------------------------------------------------------------------------


class _Text(Flowable):
    """Plain text in a paragraph style: drawn as one line when it fits the width it is given,
    else laid out by a Paragraph (built only then: most values are short)."""

    def __init__(self, text: str, style: ParagraphStyle) -> None:
        super().__init__()
        self.text = text
        self.style = style
        self._para: Paragraph | None = None

    def _paragraph(self) -> Paragraph:
        if self._para is None:
            self._para = Paragraph(escape(self.text), self.style)
        return self._para

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        st = self.style
        if self._para is None and stringWidth(self.text, st.fontName, st.fontSize) <= available_width:
            self.width, self.height = available_width, st.leading
            return self.width, self.height
        return self._paragraph().wrap(available_width, available_height)

    def split(self, available_width: float, available_height: float) -> list[Flowable]:
        return self._paragraph().split(available_width, available_height) if self._para is not None else []

    def getSpaceBefore(self) -> float:
        return self.style.spaceBefore

    def getSpaceAfter(self) -> float:
        return self.style.spaceAfter

    def draw(self) -> None:
        if self._para is not None:
            self._para.drawOn(self.canv, 0, 0)
            return
        st, canvas = self.style, self.canv
        canvas.setFont(st.fontName, st.fontSize)
        canvas.setFillColor(st.textColor)
        baseline = self.height - st.fontSize
        if st.alignment == TA_RIGHT:
            canvas.drawRightString(self.width, baseline, self.text)
        else:
            canvas.drawString(0, baseline, self.text)


def _p(text: str, style: ParagraphStyle) -> Flowable:
    return _Text(text, style)


_CELL_PADDING = 6  # left + right padding of table cells (table_head)


def _fits(text: str, style: ParagraphStyle, width: float) -> bool:
    return "\n" not in text and stringWidth(text, style.fontName, style.fontSize) <= width - _CELL_PADDING


def _cell(text: str, style: ParagraphStyle, width: float) -> str | Flowable:
    """A table cell: the plain string when it fits on one line (drawn in the table's body font,
    which matches `style`), else a wrapping Paragraph. Plain strings are far cheaper to lay out."""
    return text if _fits(text, style, width) else _p(text, style)


class _TwoLines(Flowable):
    """A resource cell: its name over its id in small grey type, each known to fit on one line."""

    def __init__(self, first: str, second: str, th: Theme) -> None:
        super().__init__()
        self._first, self._second = first, second
        self._s1, self._s2 = th.styles["cell"], th.styles["cell_small"]

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        self.width = available_width
        self.height = self._s1.leading + self._s2.leading
        return self.width, self.height

    def draw(self) -> None:
        canvas = self.canv
        canvas.setFont(self._s1.fontName, self._s1.fontSize)
        canvas.setFillColor(self._s1.textColor)
        canvas.drawString(0, self.height - self._s1.fontSize, self._first)
        canvas.setFont(self._s2.fontName, self._s2.fontSize)
        canvas.setFillColor(self._s2.textColor)
        canvas.drawString(0, self.height - self._s1.leading - self._s2.fontSize, self._second)


def _resource_cell(name: str, resource_id: str, th: Theme, width: float) -> Any:
    s = th.styles
    if not (resource_id and name and resource_id != name):
        return _cell(name or resource_id or "(no resource)", s["cell"], width)
    if _fits(name, s["cell"], width) and _fits(resource_id, s["cell_small"], width):
        return _TwoLines(name, resource_id, th)
    return [_p(name, s["cell"]), _p(resource_id, s["cell_small"])]


def _money(value: Decimal, currency: str, unicode_ok: bool) -> str:
    text = format_money(value, currency)
    if not unicode_ok and _needs_unicode([text]):
        # The standard fonts cannot show this symbol: use the ISO code instead.
        text = text.replace(currency_symbol(currency), f"{currency.upper()} ")
    return text


def _period_label(data: StatementData) -> str:
    return data.period_start.strftime("%B %Y")


def _issued_text(value: dt.datetime) -> str:
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return local.strftime("%Y-%m-%d %H:%M %Z").strip()


def build_flowables(data: StatementData, th: Theme, unicode_ok: bool) -> list[Flowable]:
    s = th.styles
    money = functools.partial(_money, currency=data.currency, unicode_ok=unicode_ok)
    w = th.width
    story: list[Flowable] = []

    # Header: organisation and contact | statement number, version, period.
    brand = data.branding
    org_cell: list[Flowable] = []
    logo = logo_flowable(brand.logo, w * 0.5, 18 * mm)
    if logo is not None:
        org_cell += [logo, Spacer(1, 4)]
    org_cell.append(_p(data.organization, s["org"]))
    org_cell += [_p(line, s["org_contact"]) for line in brand.address.splitlines() if line.strip()]
    if brand.contact_line:
        org_cell.append(_p(brand.contact_line, s["org_contact"]))
    if data.contact_email:
        org_cell.append(_p(f"Questions: {data.contact_email}", s["org_contact"]))
    meta_cell: list[Flowable] = [
        Paragraph("STATEMENT", s["title"]),
        _p(f"No. {data.number} · version {data.version}", s["meta"]),
        _p(
            f"Period {data.period} ({_period_label(data)}, {data.period_start:%b} {data.period_start.day}"
            f" – {data.period_end:%b} {data.period_end.day})",
            s["meta"],
        ),
        _p(f"Issued {_issued_text(data.issued_at)}", s["meta"]),
    ]
    header = Table([[org_cell, meta_cell]], colWidths=[w * 0.55, w * 0.45])
    header.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                ("LINEBELOW", (0, 0), (-1, 0), 1.2, th.accent),
                ("BOTTOMPADDING", (0, 0), (-1, 0), 8),
            ]
        )
    )
    story += [header, Spacer(1, 8)]

    # Who and what: PI | project and accounting fields, each a label over a wrapping value.
    def field_rows(pairs: list[tuple[str, str]]) -> list[Flowable]:
        cell: list[Flowable] = []
        for label, value in pairs:
            if value:
                cell += [_p(label.upper(), s["label"]), _p(value, s["value"]), Spacer(1, 3)]
        return cell

    project_title = data.project_code or "(no project)"
    pi_cell = [_p("BILLED TO", s["label"]), _p(data.pi_name or data.pi_email, s["value_bold"])]
    if data.pi_name:  # the name first, the email beside it (below, in the narrow column)
        pi_cell.append(_p(data.pi_email, s["value"]))
    if data.pi_department:
        pi_cell.append(_p(data.pi_department, s["value"]))
    project_cell = [_p("PROJECT", s["label"]), _p(project_title, s["value_bold"])]
    if data.project_name and data.project_name != data.project_code:
        project_cell.append(_p(data.project_name, s["value"]))
    project_cell.append(Spacer(1, 3))
    project_cell += field_rows(
        [
            ("Fund/org", data.fund_org),
            ("Cost center", data.cost_center),
            (data.reference_1_label or "Reference 1", data.reference_1),
            (data.reference_2_label or "Reference 2", data.reference_2),
        ]
    )
    who = Table([[pi_cell, project_cell]], colWidths=[w * 0.45, w * 0.55])
    who.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (0, 0), 12),
                ("RIGHTPADDING", (1, 0), (1, 0), 0),
            ]
        )
    )
    story += [who, Spacer(1, 8)]

    # Summary: list price, discount (amount and %), amount due.
    percent = format_percent(discount_percent(data.list_total, data.discount_total))
    boxes = [
        [_p("LIST PRICE", s["figure_label"]), _p(money(data.list_total), s["figure"])],
        [
            _p("DISCOUNT / SUBSIDY", s["figure_label"]),
            _p(money(data.discount_total), s["figure"]),
            _p(f"({percent} of list)" if percent else "", s["figure_note"]),
        ],
        [_p("AMOUNT DUE", s["figure_label"]), _p(money(data.billed_total), s["figure_due"])],
    ]
    summary = Table([boxes], colWidths=[w / 3] * 3)
    summary.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), BAND),
                ("BOX", (0, 0), (-1, -1), 0.5, RULE),
                ("LINEAFTER", (0, 0), (1, 0), 0.5, RULE),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 7),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 7),
                ("LEFTPADDING", (0, 0), (-1, -1), 9),
            ]
        )
    )
    story += [summary, Spacer(1, 8)]

    notes: list[str] = []
    if data.held_back_count:
        n = data.held_back_count
        notes.append(
            f"<b>Held back for review:</b> {n} charge{'' if n == 1 else 's'} totalling "
            f"{escape(money(data.held_back_amount))} {'is' if n == 1 else 'are'} awaiting review and "
            f"{'is' if n == 1 else 'are'} not included in the amount due. Approved charges will appear on "
            "a revised statement."
        )
    if data.replaces:
        notes.append(f"<b>Revised statement:</b> this version replaces {escape(data.replaces)}.")
    if brand.period_note:
        notes.append(f"<b>Note for {escape(_period_label(data))}:</b> {_lines(brand.period_note)}")
    if brand.payment_instructions:
        pay = Table(
            [[Paragraph(f"<b>How to pay:</b> {_lines(brand.payment_instructions)}", s["note"])]],
            colWidths=[w],
        )
        pay.setStyle(
            TableStyle(
                [
                    ("BOX", (0, 0), (-1, -1), 0.5, RULE),
                    ("LINEBEFORE", (0, 0), (0, -1), 2.5, th.accent),
                    ("TOPPADDING", (0, 0), (-1, -1), 5),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
                    ("LEFTPADDING", (0, 0), (-1, -1), 8),
                ]
            )
        )
        story += [pay, Spacer(1, 6)]
    for text in notes:
        box = Table([[Paragraph(text, s["note"])]], colWidths=[w])
        box.setStyle(
            TableStyle(
                [
                    ("BACKGROUND", (0, 0), (-1, -1), NOTE_BG),
                    ("LINEBEFORE", (0, 0), (0, -1), 2.5, NOTE_RULE),
                    ("TOPPADDING", (0, 0), (-1, -1), 5),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
                    ("LEFTPADDING", (0, 0), (-1, -1), 8),
                ]
            )
        )
        story += [box, Spacer(1, 6)]

    # Charges by source × service.
    story.append(_p("Charges by service", s["h2"]))
    story.append(Spacer(1, 3))
    amount_w = 78
    widths = [w - 3 * amount_w - 190, 190, amount_w, amount_w, amount_w]
    rows: list[list[Any]] = [["Source", "Service", "List", "Discount", "Amount"]]
    # Rated lines carry their usage under the service and one row per named part of their discount.
    banded: list[int] = []
    detail_rows: list[int] = []
    for number, line in enumerate(data.lines):
        service = line.service_name or "(no service)"
        if line.kind:
            service = f"{service} ({line.kind.lower()})"
        usage = " · ".join(u["text"] for u in line.rating.get("usage", []))
        service_cell: Any = (
            [_p(service, s["cell"]), _p(usage, s["cell_small"])]
            if usage
            else _cell(service, s["cell"], widths[1])
        )
        rows.append(
            [
                _cell(line.source_name, s["cell"], widths[0]),
                service_cell,
                money(line.list_amount),
                money(line.discount_amount),
                money(line.amount),
            ]
        )
        if number % 2:
            banded.append(len(rows) - 1)
        for reduction in line.rating.get("reductions", []):
            rows.append(
                [
                    "",
                    _cell(reduction["name"], s["cell_small"], widths[1]),
                    "",
                    money(-Decimal(reduction["amount"])),
                    "",
                ]
            )
            detail_rows.append(len(rows) - 1)
            if number % 2:
                banded.append(len(rows) - 1)
    rows.append(
        [
            "",
            "Total",
            *map(money, (data.list_total, data.discount_total, data.billed_total)),
        ]
    )
    if detail_rows:
        backgrounds = [("BACKGROUND", (0, r), (-1, r), BAND) for r in banded]
        backgrounds += [("FONTSIZE", (0, r), (-1, r), 6.8) for r in detail_rows]
        backgrounds += [("TEXTCOLOR", (0, r), (-1, r), MUTED) for r in detail_rows]
    else:
        backgrounds = [("ROWBACKGROUNDS", (0, 1), (-1, -2), [colors.white, BAND])]
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                *th.table_head,
                ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
                ("LINEABOVE", (0, -1), (-1, -1), 0.8, INK),
                ("FONTNAME", (1, -1), (-1, -1), th.fonts.bold),
                *backgrounds,
            ]
        )
    )
    story += [table, Spacer(1, 10)]
    explanation = how_calculated(line.rating for line in data.lines)
    if explanation:
        story += [
            _p("How this was calculated", s["h2"]),
            Spacer(1, 2),
            Paragraph(escape(" ".join(explanation)), s["note"]),
            Spacer(1, 10),
        ]

    # Detail by resource: flows across pages, header repeated.
    if data.details:
        story.append(_p("Detail by resource", s["h2"]))
        story.append(Spacer(1, 3))
        names = data.source_names or {}
        with_usage = any(d[5] is not None for d in data.details)
        amount_w = 70
        usage_w = 72 if with_usage else 0
        service_w = 150
        widths = [w - service_w - usage_w - 2 * amount_w, service_w, usage_w, amount_w, amount_w]
        rows = [["Resource", "Source · service", "Usage", "List", "Amount"]]
        for (
            source,
            service,
            kind,
            resource_id,
            resource_name,
            qty,
            unit,
            list_cost,
            billed,
            _count,
        ) in data.details:
            service_text = f"{names.get(source, source)} · {service or '(no service)'}"
            if kind:
                service_text += f" ({kind.lower()})"
            usage = ""
            if qty is not None:
                usage = f"{_quantity(Decimal(qty))} {unit}".strip()
            rows.append(
                [
                    _resource_cell(resource_name, resource_id, th, widths[0]),
                    _cell(service_text, s["cell"], widths[1]),
                    _cell(usage, s["cell"], widths[2]) if usage else "",
                    money(Decimal(list_cost)),
                    money(Decimal(billed)),
                ]
            )
        if not with_usage:
            widths = [widths[0], widths[1], widths[3], widths[4]]
            rows = [[r[0], r[1], r[3], r[4]] for r in rows]
        detail = Table(rows, colWidths=widths, repeatRows=1)
        detail.setStyle(
            TableStyle(
                [
                    *th.table_head,
                    ("ALIGN", (-2, 0), (-1, -1), "RIGHT"),
                    ("LINEBELOW", (0, 1), (-1, -1), 0.25, RULE),
                ]
            )
        )
        story += [detail, Spacer(1, 8)]

    story.append(
        _p(
            f"Amounts in {data.currency}. Each line above is the exact sum of its charges, rounded once "
            "(half up) to the minor unit; the totals are sums of those lines. Detail amounts are rounded "
            "individually and may differ from their line by a cent. Discount is list price minus amount "
            "billed. Credits and adjustments are shown as negative lines.",
            s["footnote"],
        )
    )
    if brand.footer:
        story += [Spacer(1, 6), Paragraph(_lines(brand.footer), s["note"])]
    return story


def _lines(text: str) -> str:
    """Free text typed by an admin, escaped, its line breaks kept."""
    return "<br/>".join(escape(line) for line in text.strip().splitlines())


def _quantity(value: Decimal) -> str:
    if value == value.to_integral_value():
        return f"{value:,.0f}"
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return text


_NO_PADDING = {"leftPadding": 0, "rightPadding": 0, "topPadding": 0, "bottomPadding": 0}


class _StatementDoc(BaseDocTemplate):
    def __init__(self, buffer: io.BytesIO, data: StatementData, th: Theme):
        self._data = data
        self._th = th
        super().__init__(
            buffer,
            pagesize=th.page_size,
            leftMargin=th.margin,
            rightMargin=th.margin,
            topMargin=th.margin,
            bottomMargin=18 * mm,
            title=f"{'DRAFT of statement' if data.draft else 'Statement'} {data.label} — {data.period}",
            author=data.organization,
            subject=f"{data.pi_email} · {data.project_code}",
            creator="OpenChargeback",
            invariant=1,
        )
        first = Frame(
            th.margin,
            18 * mm,
            th.width,
            th.page_size[1] - th.margin - 18 * mm,
            id="first",
            showBoundary=0,
            **_NO_PADDING,
        )
        later = Frame(
            th.margin,
            18 * mm,
            th.width,
            th.page_size[1] - th.margin - 18 * mm - 8 * mm,
            id="later",
            showBoundary=0,
            **_NO_PADDING,
        )
        self.addPageTemplates(
            [
                PageTemplate(id="First", frames=[first], autoNextPageTemplate="Later"),
                PageTemplate(id="Later", frames=[later], onPage=self._running_header),
            ]
        )

    def _running_header(self, canvas: rl_canvas.Canvas, doc: BaseDocTemplate) -> None:
        data, th = self._data, self._th
        canvas.saveState()
        canvas.setFont(th.fonts.regular, 7.5)
        canvas.setFillColor(MUTED)
        top = th.page_size[1] - th.margin + 2
        who = f"{data.pi_name} <{data.pi_email}>" if data.pi_name else data.pi_email
        right = "(continued)"
        room = th.width - canvas.stringWidth(right, th.fonts.regular, 7.5) - 12
        text = f"Statement {data.label} · {data.period} · {who} · {data.project_code or '(no project)'}"
        if canvas.stringWidth(text, th.fonts.regular, 7.5) > room:
            while len(text) > 10 and canvas.stringWidth(text + "…", th.fonts.regular, 7.5) > room:
                text = text[:-1]
            text += "…"
        canvas.drawString(th.margin, top, text)
        canvas.drawRightString(th.margin + th.width, top, right)
        canvas.restoreState()


def render_statement_pdf(data: StatementData) -> bytes:
    """The statement as PDF bytes."""
    texts = [
        data.organization,
        data.contact_email,
        data.pi_name,
        data.pi_email,
        data.pi_department,
        data.project_code,
        data.project_name,
        data.fund_org,
        data.cost_center,
        data.reference_1,
        data.reference_2,
        data.reference_1_label,
        data.reference_2_label,
        *(f"{ln.source_name}{ln.service_name}" for ln in data.lines),
        *(red["name"] for ln in data.lines for red in ln.rating.get("reductions", [])),
        *(u["text"] for ln in data.lines for u in ln.rating.get("usage", [])),
        *(f"{d[1]}{d[3]}{d[4]}{d[6]}" for d in data.details),
        *(data.source_names or {}).values(),
        *data.branding.texts(),
    ]
    fonts = STANDARD_FONTS
    if _needs_unicode(texts) or _needs_unicode([currency_symbol(data.currency)]):
        fonts = _unicode_fonts() or STANDARD_FONTS
    unicode_ok = fonts is not STANDARD_FONTS
    th = theme(fonts, accent=data.branding.accent_hex)
    buffer = io.BytesIO()
    doc = _StatementDoc(buffer, data, th)
    footer_left = f"Generated {_issued_text(data.issued_at)} · OpenChargeback"
    footer_middle = (
        f"DRAFT of statement {data.label}: not issued" if data.draft else f"Statement {data.label}"
    )
    doc.build(
        build_flowables(data, th, unicode_ok),
        canvasmaker=functools.partial(
            _NumberedCanvas, footer=(footer_left, footer_middle, fonts), draft=data.draft
        ),
    )
    return buffer.getvalue()
