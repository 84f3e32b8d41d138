"""The signs and the second-layer notice: made by `custodes signage` from the config, rendered
to PNG (pypdfium2) and read back; the legal record's validation; what the inspection pack adds
(signs, notice, each camera's redacted view with its privacy zones, sound, retention achieved).

The rendered sign is kept as test-artifacts/signage/sign-school.png for a person to look at.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pypdfium2 as pdfium
import pytest
import yaml
from typer.testing import CliRunner

from custodes.audit.report import write_pack
from custodes.cli import app
from custodes.commands import node_data
from custodes.config import ConfigError, load_config, parse_config
from custodes.record.layout import Layout
from footage import add_segments, encode_clips

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "signage"

LEGAL = {
    "controller": "Municipality of Eastholm, Education Department",
    "controller_address": "Town Hall Square 1, 4001 Eastholm",
    "contact": "Data Protection Officer, dpo@eastholm.example, +47 555 01 234",
    "legal_basis": "GDPR Art. 6(1)(e); School Act section 9a-4",
    "dpia_reference": "DPIA-2026-017",
    "decision_reference": "Council decision 2026/143",
    "notice_url": "https://eastholm.example/privacy/cctv-north-school",
}


def config_dict(root: Path, legal: dict[str, Any] | None = LEGAL) -> dict[str, Any]:
    out: dict[str, Any] = {
        "profile": "school",
        "node": {"name": "north"},
        "sites": {"school": {"name": "North Primary School"}},
        "cameras": {
            "door": {"site": "school", "location": "entrance",
                     "purpose": "Safety at the main entrance outside school hours",
                     "main_url": "rtsp://127.0.0.1:1/door",
                     "record": {"retention_hours": 48},
                     "privacy_zones": [[[0.6, 0.0], [1.0, 0.0], [1.0, 0.5], [0.6, 0.5]]]},
            "hall": {"site": "school", "location": "corridor",
                     "purpose": "Preventing vandalism in the main corridor",
                     "main_url": "rtsp://127.0.0.1:1/hall"},
        },
        "storage": {"path": str(root / "var")},
    }
    if legal is not None:
        out["legal"] = legal
    return out


def write_config(root: Path, legal: dict[str, Any] | None = LEGAL) -> Path:
    path = root / "custodes.yaml"
    path.write_text(yaml.safe_dump(config_dict(root, legal), sort_keys=False))
    return path


def pdf_text_and_png(path: Path, png: Path | None = None) -> str:
    pdf = pdfium.PdfDocument(str(path))
    try:
        texts = []
        for index in range(len(pdf)):
            page = pdf[index]
            texts.append(page.get_textpage().get_text_range())
            if png is not None and index == 0:
                png.parent.mkdir(parents=True, exist_ok=True)
                page.render(scale=1.5).to_pil().save(png)
        return " ".join(" ".join(texts).split())  # lines joined: wrapped text reads whole
    finally:
        pdf.close()


def test_signage_prints_the_sign_and_the_notice_with_the_configs_values(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "signs"
    result = CliRunner().invoke(app, ["signage", "--config", str(config), str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["notice.html", "notice.pdf",
                                                     "sign-school.pdf"]
    png = ARTIFACTS / "sign-school.png"
    sign = pdf_text_and_png(out / "sign-school.pdf", png)
    for value in (LEGAL["controller"], LEGAL["contact"], "North Primary School",
                  "Safety at the main entrance outside school hours",
                  "Preventing vandalism in the main corridor", LEGAL["notice_url"],
                  LEGAL["dpia_reference"], LEGAL["decision_reference"],
                  "No face recognition", "No sound is recorded", "at most 3 days"):
        assert value in sign, value
    # The page is A4 and has the QR code: a square of dark modules decodes to the URL.
    pdf = pdfium.PdfDocument(str(out / "sign-school.pdf"))
    assert [round(v) for v in pdf[0].get_size()] == [595, 842]
    pdf.close()
    picture = cv2.imread(str(png))
    assert picture is not None
    url, _, _ = cv2.QRCodeDetector().detectAndDecode(picture)
    assert url == LEGAL["notice_url"]
    # The pictogram's band is the sign's yellow.
    top = picture[: picture.shape[0] // 5]
    assert np.mean(np.all(np.abs(top.astype(int) - [0, 210, 255]) < 40, axis=2)) > 0.4

    notice = pdf_text_and_png(out / "notice.pdf", ARTIFACTS / "notice.png")
    html = (out / "notice.html").read_text()
    for value in (LEGAL["legal_basis"], LEGAL["dpia_reference"], LEGAL["decision_reference"],
                  LEGAL["controller_address"], "door", "hall", "2 days", "3 days"):
        assert value in notice, value
        assert value in html, value


def test_the_html_notice_escapes_what_the_config_says(tmp_path: Path) -> None:
    config = write_config(tmp_path, {**LEGAL, "controller": "<script>alert(1)</script> & Co"})
    out = tmp_path / "signs"
    assert CliRunner().invoke(app, ["signage", "--config", str(config), str(out)]).exit_code == 0
    html = (out / "notice.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in html


def test_without_a_legal_record_no_sign_is_made_and_the_missing_keys_are_named(
    tmp_path: Path
) -> None:
    config = write_config(tmp_path, legal=None)
    result = CliRunner().invoke(app, ["signage", "--config", str(config), str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "decision_reference" in result.output
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("change", "key"), [
    ({"notice_url": "ftp://x.example/n"}, "legal.notice_url"),
    ({"contact": "   "}, "legal.contact"),
    ({"dpia_reference": None}, "legal.dpia_reference"),
    ({"extra": "x"}, "legal.extra"),
])
def test_the_legal_record_is_validated(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    legal = {k: v for k, v in {**LEGAL, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(config_dict(tmp_path, legal)))
    assert key in str(caught.value)


def test_the_inspection_pack_adds_signs_views_sound_and_retention(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    clips = encode_clips(tmp_path / "clips", count=2)
    now = time.time()
    with node_data(config) as data:
        layout = Layout(config.storage.path)
        add_segments(data.store, layout, "door", [now - 3600, now - 3598], clips)
        pack = write_pack(config, data.store, data.keys, data.audit, tmp_path / "pack",
                          actor="tester", since=now - 86400, now=now)
    names = {p.name for p in pack.folder.iterdir()}
    assert {"sign-school.pdf", "notice.pdf", "notice.html", "signage.json",
            "view-door.jpg"} <= names
    manifest = json.loads((pack.folder / "manifest.json").read_text())
    signed = {f["name"] if "name" in f else f["path"] for f in manifest["files"]}
    assert {"sign-school.pdf", "signage.json", "view-door.jpg"} <= signed
    record = json.loads((pack.folder / "signage.json").read_text())
    assert record["legal"]["decision_reference"] == LEGAL["decision_reference"]
    door = record["cameras"]["door"]
    assert door["snapshot"] == "view-door.jpg"
    assert door["audio_recorded"] is False
    assert door["privacy_zones"] == 1
    assert door["retention_hours"] == 48
    assert door["oldest_kept_hours"] == pytest.approx(1.0, abs=0.01)
    assert door["retention_achieved"] is True
    assert record["cameras"]["hall"]["snapshot_missing"] == "no footage recorded"
    view = cv2.imread(str(pack.folder / "view-door.jpg"))
    assert view is not None
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(ARTIFACTS / "view-door.jpg"), view)
    # The zone (right half of the top) is outlined in the signs' yellow (BGR 0, 210, 255).
    h, w = view.shape[:2]
    edge = view[h // 4, int(0.6 * (w - 1)) - 1: int(0.6 * (w - 1)) + 2]
    assert np.any(np.all(np.abs(edge.astype(int) - [0, 210, 255]) < 60, axis=1))
