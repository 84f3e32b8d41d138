"""The inspection report as a PDF: the sections of ``report_text``, typeset with reportlab.

An agency files PDFs; it does not read Markdown. The PDF is one of the pack's signed files,
so altering it breaks the signature like altering any other. Every page carries the
recorder, the period and the signing key's fingerprint, so a printed page on its own says
where it came from.
"""

from __future__ import annotations

import re
from html import escape
from io import BytesIO
from typing import Any

from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    KeepTogether,
    Paragraph,
    Preformatted,
    SimpleDocTemplate,
    Spacer,
    TableStyle,
)
from reportlab.platypus import Table as PdfTable

from custodes.audit.report_text import Block, Bullets, Para, Readable, Table

_STRONG = re.compile(r"\*\*(.+?)\*\*")


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["BodyText"], fontSize=9, leading=12,
                          alignment=TA_LEFT)
    return {
        "title": ParagraphStyle("title", parent=base["Title"], fontSize=16, leading=20,
                                alignment=TA_LEFT),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], fontSize=12, leading=15,
                             spaceBefore=10, spaceAfter=4),
        "body": body,
        "strong": ParagraphStyle("strong", parent=body, textColor=colors.HexColor("#9b1c1c"),
                                 fontName="Helvetica-Bold"),
        "cell": ParagraphStyle("cell", parent=body, fontSize=7.5, leading=9.5),
        "head": ParagraphStyle("head", parent=body, fontSize=7.5, leading=9.5,
                               fontName="Helvetica-Bold"),
        "code": ParagraphStyle("code", parent=base["Code"], fontSize=8, leading=10,
                               backColor=colors.HexColor("#f2f2f2"), borderPadding=3,
                               leftIndent=4, spaceBefore=2, spaceAfter=4),
    }


def _inline(text: str) -> str:
    # Paragraph reads a small HTML subset: escape the facts, then mark **strong** words.
    return _STRONG.sub(r"<b>\1</b>", escape(text))


def _flowables(block: Block, st: dict[str, ParagraphStyle], width: float) -> list[Any]:
    if isinstance(block, Para):
        if block.code:
            return [Preformatted(block.text, st["code"], maxLineLength=110)]
        return [Paragraph(_inline(block.text), st["strong" if block.strong else "body"])]
    if isinstance(block, Bullets):
        items = block.items or [block.empty]
        return [Paragraph(_inline(item), st["body"], bulletText="•") for item in items]
    return _table(block, st, width)


def _table(table: Table, st: dict[str, ParagraphStyle], width: float) -> list[Any]:
    if not table.rows:
        return [Paragraph(_inline(table.empty), st["body"])]
    data = [[Paragraph(_inline(h), st["head"]) for h in table.header]]
    data += [[Paragraph(_inline(cell), st["cell"]) for cell in row] for row in table.rows]
    # Columns share the width by how much they hold, within bounds, so a purpose sentence
    # gets room and a count does not.
    weights = [min(max(4, *(len(str(r[i])) for r in [table.header, *table.rows])), 40)
               for i in range(len(table.header))]
    total = sum(weights)
    pdf = PdfTable(data, colWidths=[width * w / total for w in weights], repeatRows=1)
    pdf.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e6e6e6")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3),
    ]))
    return [pdf, Spacer(1, 4)]


def render_pdf(report: Readable) -> bytes:
    """The report as PDF bytes (A4 landscape: the tables are wide)."""
    out = BytesIO()
    page = landscape(A4)
    margin = 14 * mm
    doc = SimpleDocTemplate(out, pagesize=page, leftMargin=margin, rightMargin=margin,
                            topMargin=margin, bottomMargin=16 * mm, title=report.title,
                            author="custodes", subject=report.subtitle,
                            invariant=True)  # no creation date inside: same facts, same bytes
    st = _styles()
    width = page[0] - 2 * margin
    story: list[Any] = [Paragraph(_inline(report.title), st["title"]),
                        Paragraph(_inline(report.subtitle), st["body"]), Spacer(1, 6)]
    for section in report.sections:
        blocks = [b for block in section.blocks for b in _flowables(block, st, width)]
        # A heading never ends a page on its own.
        story += [KeepTogether([Paragraph(_inline(section.title), st["h2"]), *blocks[:1]]),
                  *blocks[1:]]

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawString(margin, 8 * mm, f"{report.title}, {report.subtitle}. Signing key "
                          f"{report.fingerprint}")
        canvas.drawRightString(page[0] - margin, 8 * mm, f"page {doc.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()
