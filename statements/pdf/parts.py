"""Pieces of the page: the "page x of y" canvas, text that fits its cell, money and dates as shown."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

from django.utils import timezone
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    Flowable,
    Paragraph,
)

from chargeback.money import currency_symbol, format_money

from .cells import Run, TextStack, draw_runs, memo_paragraph
from .data import StatementData
from .theme import MUTED, RULE, STANDARD_FONTS, Fonts, Theme, _needs_unicode


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
            self._para = memo_paragraph(escape(self.text), self.style)
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

    def text_runs(self) -> list[Run] | None:
        """Its one line, once wrapped (cells.py); None when it wraps over several."""
        if self._para is not None:
            return None
        st = self.style
        x = 0.0
        if st.alignment == TA_RIGHT:
            x = self.width - stringWidth(self.text, st.fontName, st.fontSize)
        return [(x, self.height - st.fontSize, self.text, st.fontName, st.fontSize, st.textColor)]

    def draw(self) -> None:
        if self._para is not None:
            self._para.drawOn(self.canv, 0, 0)
            return
        draw_runs(self.canv, self.text_runs() or [])


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

    def text_runs(self) -> list[Run]:
        s1, s2 = self._s1, self._s2
        return [
            (0.0, self.height - s1.fontSize, self._first, s1.fontName, s1.fontSize, s1.textColor),
            (
                0.0,
                self.height - s1.leading - s2.fontSize,
                self._second,
                s2.fontName,
                s2.fontSize,
                s2.textColor,
            ),
        ]

    def draw(self) -> None:
        draw_runs(self.canv, self.text_runs())


def _resource_cell(name: str, resource_id: str, th: Theme, width: float) -> Any:
    s = th.styles
    if not (resource_id and name and resource_id != name):
        return _cell(name or resource_id or "(no resource)", s["cell"], width)
    if _fits(name, s["cell"], width) and _fits(resource_id, s["cell_small"], width):
        return _TwoLines(name, resource_id, th)
    return TextStack([_p(name, s["cell"]), _p(resource_id, s["cell_small"])])


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
