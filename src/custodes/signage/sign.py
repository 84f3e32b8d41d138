"""The first-layer sign: one A4 page per site, to print and put up where the cameras begin.

What European guidance asks of the first layer: that recording happens (a pictogram), who is
responsible, why, for how long, whether people are identified, whom to ask, and where the full
notice is (here a QR code to the second layer, with its address written out for those without a
phone). The pictogram is drawn with vector shapes, so the sign prints sharp at any size and
carries no picture file of unknown origin.

Fonts: reportlab's built-in Helvetica, which covers Latin-1 (Western European letters); text
outside it prints as blanks, so controllers' names in other scripts need a TrueType font (not
done).
"""

from __future__ import annotations

from io import BytesIO

from reportlab.graphics import renderPDF
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfgen.canvas import Canvas

from custodes.signage.facts import Notice, SiteNotice, hours_text

YELLOW = colors.HexColor("#ffd200")
INK = colors.HexColor("#111111")
MARGIN = 18 * mm


def draw_pictogram(c: Canvas, x: float, y: float, size: float) -> None:
    """A surveillance camera on a wall bracket, in a ``size`` square whose lower left is (x, y):
    black on the sign's yellow, like the usual CCTV pictogram."""
    s = size / 100.0
    c.saveState()
    c.translate(x, y)
    c.scale(s, s)
    c.setFillColor(INK)
    c.setStrokeColor(INK)
    # Wall plate and bracket.
    c.rect(4, 18, 8, 44, stroke=0, fill=1)
    c.setLineWidth(6)
    c.line(12, 40, 34, 52)
    # The body, tilted down towards the viewer, with its sun hood and lens.
    c.saveState()
    c.translate(30, 50)
    c.rotate(-18)
    c.roundRect(0, 0, 58, 24, 5, stroke=0, fill=1)
    c.rect(4, 24, 60, 5, stroke=0, fill=1)  # hood
    c.rect(58, 4, 10, 16, stroke=0, fill=1)  # lens barrel
    c.setFillColor(YELLOW)
    c.circle(70, 12, 5, stroke=0, fill=1)  # the glass
    c.setFillColor(INK)
    c.circle(70, 12, 2.5, stroke=0, fill=1)
    c.restoreState()
    # Field of view: two rays from the lens.
    c.setLineWidth(2.5)
    c.setDash(5, 4)
    c.line(94, 34, 100, 6)
    c.line(94, 34, 78, 2)
    c.restoreState()


def _qr(c: Canvas, url: str, x: float, y: float, size: float) -> None:
    widget = QrCodeWidget(url, barLevel="M")
    x0, y0, x1, y1 = widget.getBounds()
    drawing = Drawing(size, size, transform=[size / (x1 - x0), 0, 0, size / (y1 - y0), 0, 0])
    drawing.add(widget)
    renderPDF.draw(drawing, c, x, y)


class _Writer:
    """Lines of text down the page, wrapped to the width."""

    def __init__(self, c: Canvas, x: float, top: float, width: float) -> None:
        self.c, self.x, self.y, self.width = c, x, top, width

    def text(self, text: str, size: float = 13, *, bold: bool = False, gap: float = 3) -> None:
        font = "Helvetica-Bold" if bold else "Helvetica"
        self.c.setFont(font, size)
        for line in simpleSplit(text, font, size, self.width):
            self.y -= size * 1.25
            self.c.drawString(self.x, self.y, line)
        self.y -= gap

    def label(self, label: str, value: str, size: float = 13) -> None:
        self.text(label, size * 0.8, bold=True, gap=0)
        self.text(value, size, gap=8)


def draw_sign(c: Canvas, notice: Notice, site: SiteNotice) -> None:
    width, height = A4
    legal = notice.legal
    band = 78 * mm
    c.setFillColor(YELLOW)
    c.rect(0, height - band, width, band, stroke=0, fill=1)
    draw_pictogram(c, MARGIN, height - band + 10 * mm, 58 * mm)
    c.setFillColor(INK)
    c.setFont("Helvetica-Bold", 34)
    c.drawString(MARGIN + 66 * mm, height - 32 * mm, "Video")
    c.drawString(MARGIN + 66 * mm, height - 46 * mm, "surveillance")
    c.setFont("Helvetica", 14)
    c.drawString(MARGIN + 66 * mm, height - 58 * mm, site.site_name)
    c.drawString(MARGIN + 66 * mm, height - 65 * mm, "Images are recorded. No sound is recorded.")

    w = _Writer(c, MARGIN, height - band - 6 * mm, width - 2 * MARGIN)
    w.label("Responsible (controller)", legal.controller
            + (f", {legal.controller_address}" if legal.controller_address else ""))
    w.label("Purpose", "; ".join(site.purposes) or "no camera is in operation at this site")
    w.label("Kept for", f"at most {hours_text(site.retention_hours)}, then deleted "
            "automatically (longer only for a specific incident under a recorded hold)")
    w.label("Identification", notice.identification_text)
    w.label("Data-protection contact", legal.contact)
    w.label("Your rights", "You may ask for the footage of you (others are blurred), and "
            "complain to the data-protection authority. The full notice, with the legal basis, "
            "explains how.")

    qr = 48 * mm
    _qr(c, legal.notice_url, width - MARGIN - qr, MARGIN + 8 * mm, qr)
    c.setFont("Helvetica-Bold", 12)
    c.drawString(MARGIN, MARGIN + 40 * mm, "Full notice (second layer):")
    c.setFont("Helvetica", 11)
    line_y = MARGIN + 34 * mm
    for line in simpleSplit(legal.notice_url, "Helvetica", 11, width - 3 * MARGIN - qr):
        c.drawString(MARGIN, line_y, line)
        line_y -= 13
    c.setFont("Helvetica", 8)
    c.setFillColor(colors.HexColor("#555555"))
    c.drawString(MARGIN, MARGIN, f"Decision {legal.decision_reference} · DPIA "
                 f"{legal.dpia_reference} · recorder {notice.node} ({notice.profile.value} "
                 "profile)")


def sign_pdf(notice: Notice, site: SiteNotice) -> bytes:
    out = BytesIO()
    c = Canvas(out, pagesize=A4, pageCompression=1)
    c.setTitle(f"Video surveillance: {site.site_name}")
    c.setAuthor(notice.legal.controller)
    c.setSubject("First-layer information sign (CCTV)")
    draw_sign(c, notice, site)
    c.showPage()
    c.save()
    return out.getvalue()
