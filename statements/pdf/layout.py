"""The statement laid out (header, lines, totals, notes) and rendered to PDF bytes."""

from __future__ import annotations

import functools
import io
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    PageTemplate,
    Paragraph,
    Spacer,
)

from billing.rating.selectors import how_calculated
from chargeback.money import currency_symbol
from chargeback.percent import discount_percent_text

from ..branding import logo_flowable
from .cells import Grid, TextStack, memo_paragraph
from .data import StatementData
from .parts import _cell, _issued_text, _money, _NumberedCanvas, _p, _period_label, _resource_cell
from .theme import (
    BAND,
    INK,
    MUTED,
    NOTE_BG,
    NOTE_RULE,
    RULE,
    STANDARD_FONTS,
    Theme,
    _needs_unicode,
    _unicode_fonts,
    theme,
)


def build_flowables(data: StatementData, th: Theme, unicode_ok: bool) -> list[Flowable]:
    s, c = th.styles, th.cells
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
        memo_paragraph("STATEMENT", s["title"]),
        _p(f"No. {data.number} · version {data.version}", s["meta"]),
        _p(
            f"Period {data.period} ({_period_label(data)}, {data.period_start:%b} {data.period_start.day}"
            f" – {data.period_end:%b} {data.period_end.day})",
            s["meta"],
        ),
        _p(f"Issued {_issued_text(data.issued_at)}", s["meta"]),
    ]
    header = Grid(
        [[TextStack(org_cell), TextStack(meta_cell)]],
        colWidths=[w * 0.55, w * 0.45],
        cellStyles=[[c["header"], c["header"]]],
        style=[("LINEBELOW", (0, 0), (-1, 0), 1.2, th.accent)],
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
    who = Grid(
        [[TextStack(pi_cell), TextStack(project_cell)]],
        colWidths=[w * 0.45, w * 0.55],
        cellStyles=[[c["who_left"], c["who_right"]]],
    )
    story += [who, Spacer(1, 8)]

    # Summary: list price, discount (amount and %), amount due.
    percent = discount_percent_text(data.list_total, data.discount_total)
    boxes = [
        [_p("LIST PRICE", s["figure_label"]), _p(money(data.list_total), s["figure"])],
        [
            _p("DISCOUNT / SUBSIDY", s["figure_label"]),
            _p(money(data.discount_total), s["figure"]),
            _p(f"({percent} of list)" if percent else "", s["figure_note"]),
        ],
        [_p("AMOUNT DUE", s["figure_label"]), _p(money(data.billed_total), s["figure_due"])],
    ]
    summary = Grid(
        [[TextStack(box) for box in boxes]],
        colWidths=[w / 3] * 3,
        cellStyles=[[c["figure"]] * 3],
        style=[
            ("BACKGROUND", (0, 0), (-1, -1), BAND),
            ("BOX", (0, 0), (-1, -1), 0.5, RULE),
            ("LINEAFTER", (0, 0), (1, 0), 0.5, RULE),
        ],
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
        pay = Grid(
            [[memo_paragraph(f"<b>How to pay:</b> {_lines(brand.payment_instructions)}", s["note"])]],
            colWidths=[w],
            cellStyles=[[c["note"]]],
            style=[("BOX", (0, 0), (-1, -1), 0.5, RULE), ("LINEBEFORE", (0, 0), (0, -1), 2.5, th.accent)],
        )
        story += [pay, Spacer(1, 6)]
    for text in notes:
        box = Grid(
            [[memo_paragraph(text, s["note"])]],
            colWidths=[w],
            cellStyles=[[c["note"]]],
            style=[
                ("BACKGROUND", (0, 0), (-1, -1), NOTE_BG),
                ("LINEBEFORE", (0, 0), (0, -1), 2.5, NOTE_RULE),
            ],
        )
        story += [box, Spacer(1, 6)]

    # Charges by source × service.
    story.append(_p("Charges by service", s["h2"]))
    story.append(Spacer(1, 3))
    amount_w = 78
    widths = [w - 3 * amount_w - 190, 190, amount_w, amount_w, amount_w]
    rows: list[list[Any]] = [["Source", "Service", "List", "Discount", "Amount"]]
    line_cells = [c["body"]] * 2 + [c["body_right"]] * 3
    part_cells = [c["reduction"]] * 2 + [c["reduction_right"]] * 3
    cell_styles = [[c["head"]] * 2 + [c["head_right"]] * 3]
    # Rated lines carry their usage under the service and one row per named part of their discount.
    banded: list[int] = []
    detail_rows: list[int] = []
    for number, line in enumerate(data.lines):
        service = line.service_name or "(no service)"
        if line.kind:
            service = f"{service} ({line.kind.lower()})"
        usage = " · ".join(u["text"] for u in line.rating.get("usage", []))
        service_cell: Any = (
            TextStack([_p(service, s["cell"]), _p(usage, s["cell_small"])])
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
        cell_styles.append(line_cells)
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
            cell_styles.append(part_cells)
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
    cell_styles.append([c["body"], c["total"]] + [c["total_right"]] * 3)
    if detail_rows:  # the named parts of discounts (smaller, muted) share their line's band
        backgrounds = [("BACKGROUND", (0, r), (-1, r), BAND) for r in banded]
    else:
        backgrounds = [("ROWBACKGROUNDS", (0, 1), (-1, -2), [colors.white, BAND])]
    table = Grid(
        rows,
        colWidths=widths,
        repeatRows=1,
        cellStyles=cell_styles,
        style=[_HEAD_RULE, ("LINEABOVE", (0, -1), (-1, -1), 0.8, INK), *backgrounds],
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
        text_columns = len(widths) - 2
        body_cells = [c["body"]] * text_columns + [c["body_right"]] * 2
        detail = Grid(
            rows,
            colWidths=widths,
            repeatRows=1,
            cellStyles=[[c["head"]] * text_columns + [c["head_right"]] * 2] + [body_cells] * (len(rows) - 1),
            style=[_HEAD_RULE, ("LINEBELOW", (0, 1), (-1, -1), 0.25, RULE)],
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
        story += [Spacer(1, 6), memo_paragraph(_lines(brand.footer), s["note"])]
    return story


# Below a data table's header row.
_HEAD_RULE = ("LINEBELOW", (0, 0), (-1, 0), 0.8, INK)


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
