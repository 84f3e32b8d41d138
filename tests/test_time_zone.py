"""The site's time zone: validated in the config, used for the site's day on the timeline and
for every time the pages show; storage stays UTC."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import insert

from custodes.app import Node
from custodes.auth.roles import Role
from custodes.config import ConfigError, parse_config
from custodes.record.readme import export_readme
from custodes.sitetime import SiteZone, ZoneSource, machine_zone_name, site_zone
from custodes.store import schema
from test_auth import add_user, make_app, node_config, opened, signed_in

ZONE = "Europe/Oslo"


def config_text(root: Path, **node: Any) -> str:
    data = node_config(root)
    data["node"] = {"name": "tz-test", **node}
    return yaml.safe_dump(data)


def test_the_zone_is_an_iana_name_checked_at_load(tmp_path: Path) -> None:
    assert parse_config(config_text(tmp_path, timezone=ZONE)).node.timezone == ZONE
    for bad in ("Europe/Olso", "CEST", "/etc/localtime", "../../etc/passwd", "+02:00"):
        with pytest.raises(ConfigError) as caught:
            parse_config(config_text(tmp_path, timezone=bad), "node.yaml")
        text = str(caught.value)
        assert "node.timezone" in text, text
        assert "unknown time zone" in text, text
        assert "line " in text or "node.yaml:" in text, text
    # Left out: the machine's zone, or UTC when it cannot be named (and the page says so).
    assert parse_config(config_text(tmp_path)).node.timezone is None
    assert site_zone(None).source in {ZoneSource.MACHINE, ZoneSource.FALLBACK}


def test_the_machines_zone_is_read_from_tz_first() -> None:
    assert machine_zone_name({"TZ": ":America/Sao_Paulo"}) == "America/Sao_Paulo"
    # A TZ that is no IANA name (POSIX rules) is passed over for the system's files.
    assert machine_zone_name({"TZ": "CET-1CEST"}) != "CET-1CEST"


def test_local_days_follow_the_clock_changes() -> None:
    zone = SiteZone(ZONE, ZoneSource.CONFIG)
    start, end = zone.day_range(date(2026, 3, 29))  # clocks go forward at 02:00
    assert end - start == 23 * 3600
    assert zone.text(start) == "2026-03-29 00:00:00"
    start, end = zone.day_range(date(2026, 10, 25))  # and back at 03:00
    assert end - start == 25 * 3600
    assert zone.text(1_782_900_000.0) == "2026-07-01 12:00:00"  # 10:00 UTC, summer time
    assert zone.text(1_782_900_000.0, zone=True).endswith(ZONE)
    assert zone.offset_text(1_782_900_000.0) == "UTC+02:00"
    assert zone.day_of(start - 1) == date(2026, 10, 24)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from opened(Node(parse_config(config_text(tmp_path, timezone=ZONE))))


@pytest.fixture
def app(node: Node) -> FastAPI:
    return make_app(node)


def add_segment(node: Node, camera: str, start: float, end: float) -> None:
    values = {"camera": camera, "start": start, "end": end, "duration": end - start,
              "bytes": 1000, "path": f"{camera}/{start:.0f}.mp4"}
    node.store.write(lambda conn: conn.execute(insert(schema.segments).values(values)))


def test_the_timeline_day_is_the_sites_and_starts_no_earlier_than_installation(
    app: FastAPI, node: Node
) -> None:
    # 2026-07-01 in Oslo is 2026-06-30 22:00 to 2026-07-01 22:00 UTC.
    midnight = 1_782_856_800.0
    installed = midnight + 8 * 3600  # 08:00 local: the camera's first recording
    add_segment(node, "cam1", installed, installed + 600)
    add_segment(node, "cam1", installed + 1200, installed + 1800)
    olga = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    tl = olga.get("/api/cameras/cam1/timeline", params={"day": "2026-07-01"}).json()
    assert (tl["start"], tl["end"]) == (midnight, midnight + 86400)
    assert tl["timezone"] == ZONE
    assert tl["installed"] == installed
    # The 8 hours before the first recording are not "no recording"; the hole after is.
    assert tl["gaps"][0] == {"start": installed + 600, "end": installed + 1200}
    assert all(g["start"] >= installed for g in tl["gaps"])
    # A camera never recorded has no gaps at all; a day the clocks change has 23 hours.
    assert olga.get("/api/cameras/cam2/timeline", params={"day": "2026-07-01"}).json()[
        "gaps"] == []
    short = olga.get("/api/cameras/cam2/timeline", params={"day": "2026-03-29"}).json()
    assert short["end"] - short["start"] == 23 * 3600
    assert olga.get("/api/cameras/cam1/timeline",
                    params={"day": "9999-12-31"}).status_code == 400


def test_pages_name_the_zone_and_show_local_times(app: FastAPI, node: Node) -> None:
    admin = signed_in(app, add_user(app, "ada", Role.ADMIN))
    system = admin.get("/system").text
    assert f"{ZONE} (set by node.timezone)" in system
    assert f" {ZONE}</span>" in system
    assert "(UTC)" not in system
    olga = signed_in(app, add_user(app, "olga", Role.OPERATOR))
    for page in ("/timeline", "/events", "/exports"):
        html = olga.get(page).text
        assert f'data-timezone="{ZONE}"' in html, page
        assert 'type="datetime-local"' not in html, page
        assert "(UTC)" not in html, page
    assert f"time ({ZONE})" in olga.get("/events").text


def test_an_exports_readme_gives_the_signed_utc_times_and_the_sites_local_ones() -> None:
    manifest = {"camera": "cam1", "node": "n", "start": "2026-07-01T10:00:00.000Z",
                "end": "2026-07-01T10:05:00.000Z", "created_at": "2026-07-01T11:00:00.000Z",
                "created_by": "olga", "files": [], "redaction": {"applied": True}}
    text = export_readme(manifest, "x", zone=SiteZone(ZONE, ZoneSource.CONFIG))
    assert f"2026-07-01T10:00:00.000Z (UTC) = 2026-07-01 12:00:00 {ZONE}" in text
    assert f"2026-07-01T11:00:00.000Z (UTC) = 2026-07-01 13:00:00 {ZONE}" in text
    assert "(UTC) =" not in export_readme(manifest, "x")  # no zone given: UTC only
