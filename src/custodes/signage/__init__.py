"""Signage and the legal record: the first-layer sign per site, the second-layer notice, and
what the inspection pack adds from them (custodes.signage.pack)."""

from __future__ import annotations

from pathlib import Path

from custodes.config import Config
from custodes.signage.facts import notice_of
from custodes.signage.notice import notice_html, notice_pdf
from custodes.signage.sign import sign_pdf

NOTICE_HTML = "notice.html"
NOTICE_PDF = "notice.pdf"


def sign_name(site: str) -> str:
    return f"sign-{site}.pdf"


def write_signage(config: Config, out: Path) -> list[Path]:
    """Write a sign per site and the notice into the folder ``out`` (made if missing); the
    paths written. Raises MissingLegalRecord when the config has no `legal` section."""
    notice = notice_of(config)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for site in notice.sites:
        path = out / sign_name(site.site)
        path.write_bytes(sign_pdf(notice, site))
        written.append(path)
    (out / NOTICE_PDF).write_bytes(notice_pdf(notice))
    (out / NOTICE_HTML).write_text(notice_html(notice), encoding="utf-8")
    return [*written, out / NOTICE_PDF, out / NOTICE_HTML]
