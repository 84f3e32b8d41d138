"""The second-layer notice: everything the sign leaves out, as HTML (to publish at the sign's
QR code address) and as PDF (to hand out and to file). Both are made from the same sections.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from xml.sax.saxutils import escape

from jinja2 import Environment, select_autoescape
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from custodes.privacy.policy import pictures_on_small_clients
from custodes.signage.facts import Notice, hours_text


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: list[str]
    table: list[list[str]] | None = None  # first row: the header


def sections(notice: Notice) -> list[Section]:
    legal = notice.legal
    return [
        Section("Who is responsible", [
            f"Controller: {legal.controller}"
            + (f", {legal.controller_address}" if legal.controller_address else ""),
            f"Data-protection contact: {legal.contact}",
        ]),
        Section("Why, where and for how long", [
            "Each camera has one stated purpose. Footage is deleted automatically when it is "
            "older than its camera's retention; no camera may keep footage longer than "
            f"{hours_text(notice.ceiling_days * 24)}, except footage kept under a recorded "
            "hold for a specific incident.",
        ], [["Site", "Camera", "Place", "Purpose", "Kept for"]] + [
            [site.site_name, cam.name, cam.location, cam.purpose, hours_text(cam.retention_hours)]
            for site in notice.sites for cam in site.cameras
        ]),
        Section("Legal basis and decisions", [
            f"Legal basis: {legal.legal_basis}",
            f"Data-protection impact assessment: {legal.dpia_reference}",
            f"Written decision to install and run the system: {legal.decision_reference}",
        ]),
        Section("Identification of persons", [notice.identification_text]),
        Section("What is not done", [
            "No sound is recorded.",
            "No emotion recognition and no other inference about people is made.",
            "Pictures are never sent to phones or other small devices."
            if not pictures_on_small_clients(notice.profile) else
            "Pictures reach phones only of police officers inside an approved case.",
        ]),
        Section("Who sees the footage", [
            "Only named staff, each limited to what their role needs. Every viewing, export, "
            "search and deletion is written to a signed log that the data-protection authority "
            "can inspect.",
        ]),
        Section("Your rights", [
            "You may ask for a copy of the footage of you; other people in it are blurred. You "
            "may ask for footage to be erased or its use restricted, and object to it. Write to "
            "the data-protection contact above.",
            "You may complain to the data-protection authority.",
        ]),
    ]


_HTML = Environment(autoescape=select_autoescape(default=True)).from_string("""\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Video surveillance: information notice — {{ legal.controller }}</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em;
       color: #111; }
h1 { border-bottom: 6px solid #ffd200; padding-bottom: .2em; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #bbb; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
footer { color: #555; font-size: 13px; margin-top: 2em; }
</style>
</head>
<body>
<h1>Video surveillance: information notice</h1>
{% for section in sections %}
<section>
<h2>{{ section.title }}</h2>
{% for p in section.paragraphs %}<p>{{ p }}</p>
{% endfor %}
{% if section.table %}<table>
<thead><tr>{% for h in section.table[0] %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in section.table[1:] %}
<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}
</tbody>
</table>{% endif %}
</section>
{% endfor %}
<footer>Recorder {{ node }} ({{ profile }} profile). Made by custodes from the recorder's
configuration.</footer>
</body>
</html>
""")


def notice_html(notice: Notice) -> str:
    return _HTML.render(sections=sections(notice), legal=notice.legal, node=notice.node,
                        profile=notice.profile.value)


def notice_pdf(notice: Notice) -> bytes:
    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["BodyText"], fontSize=10, leading=13.5)
    cell = ParagraphStyle("cell", parent=body, fontSize=8.5, leading=11)
    story: list[object] = [Paragraph("Video surveillance: information notice", base["Title"])]
    for section in sections(notice):
        story.append(Paragraph(escape(section.title), base["Heading2"]))
        story.extend(Paragraph(escape(p), body) for p in section.paragraphs)
        if section.table:
            rows = [[Paragraph(escape(v), cell) for v in row] for row in section.table]
            table = Table(rows, repeatRows=1, colWidths=[30 * mm, 24 * mm, 22 * mm, 72 * mm,
                                                         22 * mm])
            table.setStyle(TableStyle([
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f3f3f3")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]))
            story += [Spacer(1, 4), table]
    story += [Spacer(1, 10), Paragraph(escape(
        f"Recorder {notice.node} ({notice.profile.value} profile). Made by custodes from the "
        "recorder's configuration."), cell)]
    out = BytesIO()
    SimpleDocTemplate(out, pagesize=A4, title="Video surveillance: information notice",
                      author=notice.legal.controller, leftMargin=18 * mm, rightMargin=18 * mm,
                      topMargin=16 * mm, bottomMargin=16 * mm).build(story)
    return out.getvalue()
