"""Tables and stacked lines drawn cheaply, looking exactly as ReportLab's would.

A statement has about a hundred table cells and a few dozen short lines. ReportLab's Table
applies every style command to every cell it covers and draws every cell in a PDF text object of
its own (with a graphics state saved and restored around each flowable): that was most of a
PDF's rendering time. Here:

- `Grid` is a Table whose cells share CellStyle objects built once per theme (`grid_styles`),
  given per row, so its TableStyle holds only lines and backgrounds; and it draws consecutive
  one-line texts (plain strings, and flowables that say what they draw with `text_runs`) in one
  text object, at the positions Table computes.
- `TextStack` is a table cell's flowables stacked as Table stacks a list of them, its one-line
  texts drawn in one text object.
- `memo_paragraph` keeps the line breaking of a paragraph per process: the same footnote on every
  statement is broken into lines once.

A run is (x, y, text, font name, font size, colour): one line of text at its baseline, in the
coordinates of the flowable that reports it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Sequence
from typing import Any

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, Paragraph, Spacer, Table
from reportlab.platypus.tables import CellStyle

Run = tuple[float, float, str, str, float, colors.Color]


def draw_runs(canvas: Canvas, runs: Iterable[Run]) -> None:
    """Draw runs in one text object. The font and colour it sets are undone afterwards (q … Q), as
    drawing each run on its own would have left the canvas's state alone."""
    text = None
    font: tuple[str, float] | None = None
    colour = None
    for x, y, string, font_name, font_size, fill in runs:
        if text is None:
            canvas.saveState()
            text = canvas.beginText()
        if font != (font_name, font_size):
            font = (font_name, font_size)
            text.setFont(font_name, font_size)
        if fill is not colour:
            colour = fill
            text.setFillColor(fill)
        text.setTextOrigin(x, y)
        text._textOut(string)  # as Paragraph draws: the cursor's advance is not needed
    if text is not None:
        canvas.drawText(text)
        canvas.restoreState()


def text_runs(flowable: Any) -> list[Run] | None:
    """What a wrapped flowable draws, as runs, when it draws only one-line texts (else None)."""
    runs = getattr(flowable, "text_runs", None)
    return runs() if runs is not None else None


def cell_style(name: str, **attributes: Any) -> CellStyle:
    style = CellStyle(name)
    for attribute, value in attributes.items():
        setattr(style, attribute, value)
    return style


class Grid(Table):
    """A Table given its cells' styles (`cell_styles`: a CellStyle per cell, shared and never
    changed: the TableStyle must hold only lines and backgrounds). Plain string cells with TOP
    alignment and one-line flowables are drawn in batches (`draw_runs`) in the order Table draws
    them; any other cell is drawn by Table."""

    _CELL_COMMANDS = frozenset({"BACKGROUND", "ROWBACKGROUNDS", "COLBACKGROUNDS"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("cellStyles") is None:
            raise ValueError("Grid needs cellStyles")
        super().__init__(*args, **kwargs)

    def _addCommand(self, cmd: Sequence[Any]) -> None:
        if cmd[0] not in self._CELL_COMMANDS and not cmd[0].startswith(("LINE", "BOX", "GRID", "INNERGRID")):
            raise ValueError(f"Grid: {cmd[0]} would change shared cell styles; give them per cell")
        super()._addCommand(cmd)

    def draw(self) -> None:
        self._runs: list[Run] = []
        super().draw()

    def _flush(self) -> None:
        if self._runs:
            draw_runs(self.canv, self._runs)
            self._runs = []

    def _drawCell(
        self, cellval: Any, cellstyle: CellStyle, pos: tuple[float, float], size: tuple[float, float]
    ) -> None:
        colpos, rowpos = pos
        colwidth, rowheight = size
        runs = self._cell_runs(cellval, cellstyle, colpos, rowpos + rowheight, colwidth)
        if runs is None:
            self._flush()
            super()._drawCell(cellval, cellstyle, pos, size)
        else:
            self._runs += runs

    def _cell_runs(
        self, value: Any, style: CellStyle, left: float, top: float, width: float
    ) -> list[Run] | None:
        """The runs of a cell as Table._drawCell would place them, or None for Table to draw it."""
        if style.valign != "TOP" or style.href or style.destination or style.direction or style.shaping:
            return None
        if isinstance(value, str):
            if "\n" in value or style.alignment not in ("LEFT", "RIGHT"):
                return None
            if not value:
                return []  # nothing to see
            y = top - style.topPadding - style.fontsize
            if style.alignment == "LEFT":
                x = left + style.leftPadding
            else:
                x = left + width - style.rightPadding - stringWidth(value, style.fontname, style.fontsize)
            return [(x, y, value, style.fontname, style.fontsize, style.color)]
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                return None
            value = value[0]
        if not isinstance(value, Flowable) or style.alignment != "LEFT":
            return None
        runs = text_runs(value)
        if runs is None:
            return None
        # Table draws a lone flowable at its cell's top-left, less the padding (its space before
        # is added and taken away again).
        dx, dy = left + style.leftPadding, top - style.topPadding - value.height
        return [(x + dx, y + dy, text, font, size, fill) for x, y, text, font, size, fill in runs]

    def _drawLines(self) -> None:
        self._flush()
        super()._drawLines()


class TextStack(Flowable):
    """Flowables one below the other as a Table cell stacks a list of them (each one's space
    before and after counted between them, not above the first or below the last); the ones that
    draw one-line texts are drawn together."""

    def __init__(self, items: Sequence[Flowable]) -> None:
        super().__init__()
        self._items = list(items)
        self._placed: list[tuple[Flowable, float]] = []  # each item with its bottom, from our bottom

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        tops: list[tuple[Flowable, float]] = []
        y = 0.0
        widest = 0.0
        first_before = None
        after = 0.0
        for item in self._items:
            w, h = item.wrapOn(getattr(self, "canv", None), available_width, available_height)
            before, after = item.getSpaceBefore(), item.getSpaceAfter()
            if first_before is None:
                first_before = before
            widest = max(widest, w)
            y += before
            tops.append((item, y + h))  # depth of the item's bottom below our top (plus the first space)
            y += h + after
        total = y - (first_before or 0.0) - after
        self._placed = [(item, total + (first_before or 0.0) - depth) for item, depth in tops]
        self.width, self.height = widest, total
        return widest, total

    def text_runs(self) -> list[Run] | None:
        runs: list[Run] = []
        for item, bottom in self._placed:
            if isinstance(item, Spacer):
                continue
            item_runs = text_runs(item)
            if item_runs is None:
                return None
            runs += [(x, y + bottom, text, font, size, fill) for x, y, text, font, size, fill in item_runs]
        return runs

    def draw(self) -> None:
        pending: list[Run] = []
        for item, bottom in self._placed:
            if isinstance(item, Spacer):
                continue
            item_runs = text_runs(item)
            if item_runs is not None:
                pending += [
                    (x, y + bottom, text, font, size, fill) for x, y, text, font, size, fill in item_runs
                ]
                continue
            draw_runs(self.canv, pending)
            pending = []
            item.drawOn(self.canv, 0, bottom)
        draw_runs(self.canv, pending)


class _MemoParagraph(Paragraph):
    """A Paragraph whose line breaking is kept per process for its text, style and width (the
    broken lines are only read when drawing). Only copies of a memo_paragraph keep theirs: the
    pieces of a split paragraph are new instances and break their lines as any Paragraph."""

    _memo = False

    def breakLines(self, width: Any) -> Any:
        if not self._memo:
            return super().breakLines(width)
        # The style is kept with the lines, so its id is not reused while they are kept.
        key = (self.text, id(self.style), tuple(width) if isinstance(width, list) else width)
        found = _broken_lines.get(key)
        if found is None or found[0] is not self.style:
            found = (self.style, super().breakLines(width))
            if len(_broken_lines) >= 512:
                _broken_lines.clear()
            _broken_lines[key] = found
        return found[1]


_broken_lines: dict[tuple[Any, ...], tuple[ParagraphStyle, Any]] = {}


@functools.lru_cache(maxsize=256)
def _parsed_paragraph(markup: str, style: ParagraphStyle) -> _MemoParagraph:
    paragraph = _MemoParagraph(markup, style)
    paragraph._memo = True
    return paragraph


def memo_paragraph(markup: str, style: ParagraphStyle) -> Paragraph:
    """Paragraph(markup, style), its markup parsed and its lines broken once per process (for
    the same width). A fresh flowable each time: only the parsed text and lines are shared."""
    return copy.copy(_parsed_paragraph(markup, style))
