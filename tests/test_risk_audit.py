"""The fleet risk audit: the shipped data, its replacement from a file, and the audit of
simulated cameras (ONVIF + RTSP on loopback) shown on the system page and in the pack."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from custodes.app import Node
from custodes.audit.actions import Action
from custodes.auth.roles import Role
from custodes.cameras import risk
from custodes.cameras.models import DeviceInfo, FindingCode
from custodes.cameras.risk import FirmwareRange, RiskDataError, firmware_affected
from custodes.cli import app
from custodes.config import load_config
from custodes.sim import SimServer
from custodes.sim.digest import AuthScheme
from custodes.sim.onvif import OnvifIdentity, OnvifSim, SimProfile
from test_auth import add_user, make_app, signed_in

cli = CliRunner()
USER, PASSWORD = "admin", "s3cret-Pw"
DAHUA = OnvifIdentity(manufacturer="Dahua", model="IPC-HFW2531S-S-S2",
                      firmware="2.800.0000000.16.R, Build Date: 2021-02-22", serial="DH-1")


def bundled() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(risk.bundled_path().read_text())
    return data


# --- the data ---------------------------------------------------------------------------------


def test_shipped_data_is_valid_and_every_entry_has_a_source() -> None:
    data = risk.load()
    assert data.version == "2026-12"
    cves = {v.cve for v in data.vulnerabilities}
    assert {"CVE-2021-33044", "CVE-2021-33045", "CVE-2021-36260", "CVE-2017-7921"} <= cves
    assert {c.vendor for c in data.covered} >= {"hikvision", "dahua", "hytera"}
    for source in data.sources:
        assert source.url.startswith("https://")
    for vuln in data.vulnerabilities:
        assert vuln.advisory.startswith("https://")
        # Nothing invented: where the file gives no firmware range it says where to look.
        if vuln.firmware is None:
            assert "vendor advisory: see URL" in vuln.note


def test_assess_by_vendor_and_model() -> None:
    data = risk.load()
    dahua = risk.assess(DeviceInfo("Dahua", "IPC-HFW2531S-S-S2", "2.800.0000000.16.R", "x"),
                        data)
    assert sorted((f.code, f.reference) for f in dahua if f.code is FindingCode.CHECK_FIRMWARE
                  ) == [(FindingCode.CHECK_FIRMWARE, "CVE-2021-33044"),
                        (FindingCode.CHECK_FIRMWARE, "CVE-2021-33045")]
    assert [f.code for f in dahua].count(FindingCode.FCC_COVERED) == 1
    hik = risk.assess(DeviceInfo("HIKVISION", "DS-2CD2032-I", "V5.3.0 build 150513", "y"), data)
    assert {f.reference for f in hik if f.code is FindingCode.CHECK_FIRMWARE} == {
        "CVE-2021-36260", "CVE-2017-7921"}
    # A vendor not in the data, and a listed vendor's product the entries do not name.
    assert risk.assess(DeviceInfo("Axis", "P3265-LVE", "10.12", "z"), data) == []
    other = risk.assess(DeviceInfo("Hikvision", "DS-KH6320-WTE1", "1.0", "z"), data)
    assert [f.code for f in other] == [FindingCode.FCC_COVERED]


@pytest.mark.parametrize(("firmware", "bounds", "expected"), [
    ("2.800.0000000.16.R, Build Date: 2021-02-22", FirmwareRange(fixed="2.800.2"), True),
    ("2.800.0000016.0.R, Build Date: 2022-08-26", FirmwareRange(fixed="2.800.2"), False),
    ("V5.4.0 build 160530", FirmwareRange(first="5.2.0", fixed="5.4.41"), True),
    ("V5.4.41 build 170312", FirmwareRange(first="5.2.0", fixed="5.4.41"), False),
    ("V5.1.0", FirmwareRange(first="5.2.0", fixed="5.4.41"), False),
    ("2.800.0000000.16.R, Build Date: 2021-02-22",
     FirmwareRange(build_date_before=date(2021, 6, 1)), True),
    ("2.800.0000000.16.R, Build Date: 2021-07-02",
     FirmwareRange(build_date_before=date(2021, 6, 1)), False),
    ("2.800.0000000.16.R", FirmwareRange(build_date_before=date(2021, 6, 1)), None),
    ("unknown", FirmwareRange(fixed="1.2"), None),
])
def test_firmware_ranges(firmware: str, bounds: FirmwareRange, expected: bool | None) -> None:
    assert firmware_affected(firmware, bounds) is expected


@pytest.mark.parametrize(("change", "reason"), [
    (lambda d: d["vulnerabilities"][0].update(source="nowhere"), "unknown source"),
    (lambda d: d["vulnerabilities"][0].update(cve="CVE-21-1"), "cve"),
    (lambda d: d["vulnerabilities"][0].update(vendor="acme"), "unknown vendor"),
    (lambda d: d.update(surprise=1), "surprise"),
    (lambda d: d.update(format=2), "format 2"),
    (lambda d: d.update(version="latest"), "YYYY-MM"),
    (lambda d: d["sources"][0].pop("url"), "url"),
])
def test_invalid_data_is_refused_with_a_reason(change: Any, reason: str) -> None:
    data = bundled()
    change(data)
    with pytest.raises(RiskDataError, match=reason):
        risk.parse(json.dumps(data), "test.json")
    with pytest.raises(RiskDataError, match="not JSON"):
        risk.parse("{", "test.json")


# --- the audit, end to end --------------------------------------------------------------------


@pytest.fixture
def fleet(sample_video: Path, tmp_path: Path) -> Iterator[Path]:
    """Three simulated cameras and the node's config naming them:
    - dahua: Digest RTSP, ONVIF with credentials, reports a listed model and firmware;
    - open: RTSP that plays without credentials, and no ONVIF service at all;
    - leaky: Basic-auth RTSP, ONVIF that lists its users to anyone, clock 10 min off."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    with SimServer() as rtsp, OnvifSim(discovery_port=None) as onvif:
        dahua = rtsp.add_camera("dahua", sample_video, username=USER, password=PASSWORD,
                                auth=AuthScheme.DIGEST)
        dahua_dev = onvif.add_device(DAHUA, [SimProfile("main", dahua, "H264", 320, 240, 15)],
                                     username=USER, password=PASSWORD)
        open_url = rtsp.add_camera("open", sample_video)
        leaky = rtsp.add_camera("leaky", sample_video, username=USER, password=PASSWORD)
        leaky_dev = onvif.add_device(
            OnvifIdentity(manufacturer="Acme", model="Cam-1", anonymous_users=True,
                          clock_offset_s=600),
            [SimProfile("main", leaky, "H264", 320, 240, 15)], username=USER, password=PASSWORD)
        camera = {"site": "s", "location": "corridor", "purpose": "Corridor overview"}
        config = {
            "sites": {"s": {"name": "School"}},
            "cameras": {
                "dahua": {**camera, "main_url": dahua, "username": USER, "password": PASSWORD,
                          "onvif_url": dahua_dev.url},
                "open": {**camera, "main_url": open_url,
                         "onvif_url": f"http://127.0.0.1:{closed_port}/onvif/device_service"},
                "leaky": {**camera, "main_url": leaky, "username": USER, "password": PASSWORD,
                          "onvif_url": leaky_dev.url},
            },
            "storage": {"path": str(tmp_path / "var")},
        }
        path = tmp_path / "custodes.yaml"
        path.write_text(yaml.safe_dump(config))
        yield path


def _findings(result: dict[str, Any], camera: str) -> dict[str, dict[str, Any]]:
    entry = next(c for c in result["cameras"] if c["camera"] == camera)
    return {f["code"]: f for f in entry["findings"]}


@pytest.mark.slow
def test_audit_flags_listed_firmware_open_streams_and_weak_settings(
    fleet: Path, tmp_path: Path
) -> None:
    # The shipped data: a Dahua model is named by KEV entries, firmware undecided.
    first = cli.invoke(app, ["cameras", "audit", "--config", str(fleet), "--json"])
    assert first.exit_code == 1, first.output  # critical findings
    result = json.loads(first.stdout)
    dahua = _findings(result, "dahua")
    assert {"check_firmware", "fcc_covered"} <= set(dahua)
    assert "known_exploited" not in dahua
    assert not {"rtsp_without_auth", "rtsp_basic_auth", "auth_failed"} & set(dahua)
    opened = _findings(result, "open")
    assert opened["rtsp_without_auth"]["severity"] == "critical"
    assert opened["unreachable"]["severity"] == "info"  # no ONVIF: said, not skipped
    assert "not checked" in opened["unreachable"]["message"]
    leaky = _findings(result, "leaky")
    assert leaky["users_listed_anonymously"]["severity"] == "critical"
    assert "rtsp_basic_auth" in leaky
    assert "clock_drift" in leaky
    assert "fcc_covered" not in leaky

    # Newer data from a file, with the affected firmware range known: now it is flagged.
    data = bundled()
    data["version"] = "2026-12-15"
    for vuln in data["vulnerabilities"]:
        if vuln["cve"] == "CVE-2021-33044":
            vuln["firmware"] = {"first": "2.800.0", "fixed": "2.800.2"}
            vuln["note"] = "test data: a range stated for the test"
    newer = tmp_path / "risk-newer.json"
    newer.write_text(json.dumps(data))
    updated = cli.invoke(app, ["cameras", "risk-data", "update", str(newer), "--config",
                               str(fleet)])
    assert updated.exit_code == 0, updated.output
    assert "2026-12-15 in force (was 2026-12)" in updated.output
    second = cli.invoke(app, ["cameras", "audit", "--config", str(fleet), "--json"])
    dahua = _findings(json.loads(second.stdout), "dahua")
    assert dahua["known_exploited"]["reference"] == "CVE-2021-33044"
    assert dahua["known_exploited"]["severity"] == "critical"
    assert dahua["check_firmware"]["reference"] == "CVE-2021-33045"

    # The old data again is refused unless asked for; a broken file changes nothing.
    older = cli.invoke(app, ["cameras", "risk-data", "update", str(risk.bundled_path()),
                             "--config", str(fleet)])
    assert older.exit_code == 2
    assert "older than the 2026-12-15 in force" in older.output
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**data, "vendors": "dahua"}))
    refused = cli.invoke(app, ["cameras", "risk-data", "update", str(broken), "--config",
                               str(fleet)])
    assert refused.exit_code == 2
    assert "vendors" in refused.output
    assert risk.load(tmp_path / "var").version == "2026-12-15"

    # Shown on the system page (to an inspector) and written into the inspection pack.
    node = Node(load_config(fleet))
    node.layout.create()
    node.store.open()
    try:
        web = make_app(node)
        page = signed_in(web, add_user(web, "insp", Role.INSPECTOR)).get("/system")
        assert page.status_code == 200
        assert 'id="camera-risk"' in page.text
        assert "CVE-2021-33044" in page.text
        assert "rtsp_without_auth" in page.text
        assert "users_listed_anonymously" in page.text
        scoped = signed_in(web, add_user(web, "scoped", Role.INSPECTOR, ["open"])).get(
            "/system")
        assert "rtsp_without_auth" in scoped.text
        assert "CVE-2021-33044" not in scoped.text
    finally:
        node.store.close()
    pack = tmp_path / "pack"
    made = cli.invoke(app, ["report", "--config", str(fleet), str(pack)])
    assert made.exit_code == 0, made.output
    facts = json.loads((pack / "report.json").read_text())
    risk_facts = facts["camera_risk"]
    assert risk_facts["ran"]
    assert risk_facts["audit_risk_data_version"] == "2026-12-15"
    codes = {f["code"] for c in risk_facts["cameras"] for f in c["findings"]}
    assert {"known_exploited", "rtsp_without_auth", "users_listed_anonymously"} <= codes
    assert "CVE-2021-33044" in (pack / "report.md").read_text()


def test_audit_is_recorded_and_no_audit_is_said(fleet: Path, tmp_path: Path) -> None:
    from custodes.cameras.audit import summary  # noqa: PLC0415

    config = load_config(fleet)
    before = summary(tmp_path / "var", config)
    assert not before["ran"]
    assert "custodes cameras audit" in before["note"]
    shown = cli.invoke(app, ["cameras", "risk-data", "show"])
    assert shown.exit_code == 0
    assert "cisa-kev" in shown.output
    assert "fcc-covered-list" in shown.output
    ran = cli.invoke(app, ["cameras", "audit", "--config", str(fleet)])
    assert ran.exit_code == 1
    assert "rtsp_without_auth" in ran.output
    assert PASSWORD not in ran.output
    node = Node(config)
    node.store.open()
    try:
        with node.store.read() as conn:
            rows = conn.exec_driver_sql("SELECT action, detail FROM audit_log").fetchall()
    finally:
        node.store.close()
    audits = [json.loads(detail) for action, detail in rows if action == Action.CAMERA_AUDIT]
    assert len(audits) == 1
    assert audits[0]["cameras"] == 3
    assert audits[0]["counts"]["critical"] >= 2
