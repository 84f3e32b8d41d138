"""Issue 11, the inspector: a page that finds the pack, and a report a person can read.

The report is checked as the inspector gets it: the PDF inside the signed pack is rendered to
a picture and its text extracted (pypdfium2), the pack is verified with plain ``openssl`` as
the report tells the inspector to, and the page names the key's fingerprint.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
import yaml
from fastapi import FastAPI

from custodes.app import Node
from custodes.audit.actions import Action
from custodes.audit.log import AuditLog
from custodes.audit.report import write_pack
from custodes.audit.report_text import Clock
from custodes.auth.roles import Role
from custodes.auth.users import ensure_admin
from custodes.config import load_config, parse_config
from custodes.keys import NodeKeys
from custodes.privacy.pinning import pin_profile
from custodes.record.holds import add_hold
from custodes.record.layout import Layout
from custodes.record.manifest import key_fingerprint, verify_bundle
from custodes.store.db import Store
from test_auth import add_user, client, make_app, node_config, signed_in
from test_report import CONFIG

# What a Python value or an internal name looks like when it leaks into prose.
LEAKS = [re.compile(p) for p in (
    r"\bNone\b", r"\{'", r"'\}", r"\bTrue\b", r"\bFalse\b", r"\bsubject_access\b",
    r"\b1[5-9]\d{8}(\.\d+)?\b",  # epoch seconds, 2017..2033
)]


def pdf_text(path: Path) -> tuple[str, list[np.ndarray]]:
    """All text of the PDF and each page rendered as a picture."""
    pdf = pdfium.PdfDocument(path)
    try:
        texts, pictures = [], []
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            texts.append(textpage.get_text_range())
            pictures.append(np.asarray(page.render(scale=1).to_pil().convert("L")))
            textpage.close()
            page.close()
    finally:
        pdf.close()
    return "\n".join(texts), pictures


def make_pack(tmp_path: Path, config_text: str = CONFIG) -> tuple[Path, NodeKeys]:
    path = tmp_path / "custodes.yaml"
    path.write_text(config_text)
    config = load_config(path)
    Layout(config.storage.path).create()
    keys = NodeKeys.load_or_create(config.key_dir)
    with Store(Layout(config.storage.path).database) as store:
        audit = AuditLog(store, keys)
        ensure_admin(store, audit)
        pin_profile(store, audit, config.profile)
        # A refusal recorded without a reason: the report must not say "None".
        audit.record_refusal("dora", Action.FACE_SEARCH, "case 1", None)
        now = time.time()
        add_hold(store, camera="hall", start=now - 3600, end=now, reason="complaint 17",
                 created_by="dpo", expires_at=None)
        pack = write_pack(config, store, keys, audit, tmp_path / "pack", actor="ines",
                          since=now - 86400, now=now)
    return pack.folder, keys


def test_the_pdf_report_is_signed_and_reads_as_words(tmp_path: Path) -> None:
    folder, keys = make_pack(tmp_path)
    assert verify_bundle(folder, keys.public_pem).ok
    text, pictures = pdf_text(folder / "report.pdf")
    fingerprint = key_fingerprint(keys.public_pem)

    assert pictures
    assert all(p.min() < 100 for p in pictures)  # every page has ink on it
    assert fingerprint in text
    assert "Inspection report: recorder school-7" in text
    assert "complaint 17" in text
    assert "reason: not recorded" in text  # the refusal without a reason, in words
    assert "openssl pkeyutl -verify -pubin -inkey signing.pub" in text
    assert "another channel" in text
    assert "custodes export verify" not in text  # the agency has no custodes
    assert "All times are in UTC" in text
    markdown = (folder / "report.md").read_text()
    for leak in LEAKS:
        assert not leak.search(text), (leak.pattern, leak.search(text))
        assert not leak.search(markdown), (leak.pattern, leak.search(markdown))

    # The PDF is one of the signed files: changing a byte of it breaks the pack.
    data = bytearray((folder / "report.pdf").read_bytes())
    data[len(data) // 2] ^= 1
    (folder / "report.pdf").write_bytes(bytes(data))
    assert any("report.pdf" in p for p in verify_bundle(folder, keys.public_pem).problems)


def test_the_pack_verifies_with_the_openssl_commands_the_report_prints(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is missing in CI")
        pytest.skip("no openssl here")
    folder, keys = make_pack(tmp_path)
    text, _ = pdf_text(folder / "report.pdf")
    command = re.search(r"openssl pkeyutl -verify [^\n]+", text)
    assert command is not None
    ok = subprocess.run(command.group(0).split(), cwd=folder, capture_output=True, text=True,
                        check=False)
    assert "Signature Verified Successfully" in ok.stdout, ok.stdout + ok.stderr
    der = subprocess.run([openssl, "pkey", "-pubin", "-in", "signing.pub", "-outform", "DER"],
                         cwd=folder, capture_output=True, check=True).stdout
    digest = subprocess.run([openssl, "dgst", "-sha256"], input=der[-32:],
                            capture_output=True, check=True).stdout.decode()
    assert digest.split("= ")[1].strip() == key_fingerprint(keys.public_pem).split(":")[1]

    (folder / "manifest.json").write_text((folder / "manifest.json").read_text()
                                          .replace("ines", "someone else"))
    bad = subprocess.run(command.group(0).split(), cwd=folder, capture_output=True, text=True,
                         check=False)
    assert bad.returncode != 0
    assert "Signature Verified Successfully" not in bad.stdout


def test_report_times_are_in_the_site_zone(tmp_path: Path) -> None:
    folder, _ = make_pack(tmp_path, CONFIG.replace("  name: school-7\n",
                                                   "  name: school-7\n  timezone: Europe/Oslo\n"))
    text, _ = pdf_text(folder / "report.pdf")
    assert "local to the site (Europe/Oslo)" in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0[12]:00", text)
    assert " UTC to " not in text
    assert Clock("Europe/Oslo").at("2026-01-15T12:00:00.000Z") == "2026-01-15 13:00:00 +01:00"
    assert Clock("Europe/Oslo").at("2026-07-15T12:00:00.000Z") == "2026-07-15 14:00:00 +02:00"
    assert Clock().at(None, none="never") == "never"


# -- the page ------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    node = Node(parse_config(yaml.safe_dump(node_config(tmp_path))))
    node.layout.create()
    node.store.open()
    try:
        yield make_app(node)
    finally:
        node.store.close()


def test_the_inspector_lands_on_a_page_that_links_the_pack(app: FastAPI,
                                                           tmp_path: Path) -> None:
    node: Node = app.state.node
    ines = signed_in(app, add_user(app, "ines", Role.INSPECTOR))
    landing = ines.get("/", follow_redirects=False)
    assert (landing.status_code, landing.headers["location"]) == (303, "/inspection")
    page = ines.get("/inspection")
    assert page.status_code == 200
    assert 'action="/api/inspection/pack"' in page.text
    assert key_fingerprint(node.keys.public_pem) in page.text
    assert "another channel" in page.text
    assert "openssl pkeyutl -verify" in page.text
    assert 'data-nav="inspection"' in page.text

    # The form's request, as the browser sends it, gives the signed zip with the PDF inside.
    r = ines.get("/api/inspection/pack", params={"days": "7"})
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        zf.extractall(tmp_path / "unzipped")
        names = zf.namelist()
    [folder] = {n.split("/")[0] for n in names}
    pack = tmp_path / "unzipped" / folder
    assert (pack / "report.pdf").read_bytes().startswith(b"%PDF")
    assert verify_bundle(pack, node.keys.public_pem).ok
    text, _ = pdf_text(pack / "report.pdf")
    assert f"cd {folder}" in text  # the commands name the folder the inspector unzipped

    viewer = signed_in(app, add_user(app, "victor", Role.VIEWER))
    assert viewer.get("/inspection").status_code == 403
    assert 'href="/inspection"' not in viewer.get("/").text
    anonymous = client(app).get("/inspection", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/login")
