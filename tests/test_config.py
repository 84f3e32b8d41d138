from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from custodes.config import ConfigError, load_config, parse_config, redact_url
from custodes.masking import mask_credentials

VALID = """\
node:
  name: site-01
sites:
  school-a:
    name: School A
cameras:
  entrance-1:
    site: school-a
    location: entrance
    purpose: Main entrance, doors and hall
    main_url: rtsp://admin:${CAM_PASS}@192.0.2.10:554/main
    sub_url: rtsp://admin:${CAM_PASS}@192.0.2.10:554/sub
    record:
      segment_seconds: 6
      retention_hours: 48
storage:
  path: recordings
  quota: 80%
  min_free: 10GB
"""


def issues_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env if env is not None else {"CAM_PASS": "s3cret"})
    return [str(i) for i in info.value.issues]


def test_valid_config_loads_with_secrets_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "custodes.yaml"
    path.write_text(VALID)
    config = load_config(path, env={"CAM_PASS": "s3cret"})
    cam = config.cameras["entrance-1"]
    assert cam.main_url == "rtsp://admin:s3cret@192.0.2.10:554/main"
    assert cam.record.segment_seconds == 6
    assert config.retention_hours("entrance-1") == 48
    assert config.storage.path == tmp_path / "recordings"
    assert config.storage.quota_limit is not None
    assert config.storage.quota_limit.bytes_of(1000) == 800
    assert config.storage.min_free_limit.bytes_of(1000) == 10 * 10**9


def test_unknown_key_is_named_with_its_line() -> None:
    text = VALID.replace("      segment_seconds: 6", "      segment_secs: 6")
    assert issues_of(text) == ["line 14: cameras.entrance-1.record.segment_secs: unknown key"]


def test_bad_url_is_named_with_its_line_and_password_redacted() -> None:
    text = VALID.replace("rtsp://admin:${CAM_PASS}@192.0.2.10:554/main",
                         "http://admin:${CAM_PASS}@192.0.2.10/main")
    (issue,) = issues_of(text)
    assert issue.startswith("line 11: cameras.entrance-1.main_url: ")
    assert "not an rtsp://" in issue
    assert "s3cret" not in issue


def test_missing_purpose_is_named_with_the_camera_line() -> None:
    text = VALID.replace("    purpose: Main entrance, doors and hall\n", "")
    assert issues_of(text) == ["line 7: cameras.entrance-1.purpose: required key is missing"]


def test_every_error_is_reported_at_once() -> None:
    text = VALID.replace("location: entrance", "location: kitchen").replace(
        "quota: 80%", "quota: lots"
    )
    issues = issues_of(text)
    assert len(issues) == 2
    assert issues[0].startswith("line 9: cameras.entrance-1.location: Input should be")
    assert issues[1].startswith("line 18: storage.quota: 'lots' is not a size")


def test_unset_environment_variable_is_an_error() -> None:
    assert issues_of(VALID, env={}) == [
        "line 11: cameras.entrance-1.main_url: environment variable CAM_PASS is not set",
        "line 12: cameras.entrance-1.sub_url: environment variable CAM_PASS is not set",
    ]


def test_retention_above_the_ceiling_is_refused() -> None:
    text = VALID.replace("retention_hours: 48", "retention_hours: 800")
    (issue,) = issues_of(text)
    assert issue.startswith("line 15: cameras.entrance-1.record.retention_hours: 800 h exceeds")
    assert "hold" in issue


def test_unknown_site_is_refused() -> None:
    text = VALID.replace("site: school-a", "site: school-b")
    assert issues_of(text) == ["line 8: cameras.entrance-1.site: unknown site 'school-b'"]


def test_yaml_syntax_error_has_a_line() -> None:
    (issue,) = issues_of("sites:\n  a: [unclosed\ncameras: {}\n")
    assert issue.startswith("line 3: YAML syntax")


def test_duplicate_key_is_an_error() -> None:
    text = VALID + "storage:\n  path: elsewhere\n"
    assert any("storage: duplicate key" in i for i in issues_of(text))


def test_names_must_be_safe_for_paths() -> None:
    text = VALID.replace("  entrance-1:", "  ../etc:")
    (issue,) = issues_of(text)
    assert issue.startswith("line 7: cameras.../etc")


def test_redact_url() -> None:
    assert redact_url("rtsp://u:p@h:554/x") == "rtsp://u:***@h:554/x"
    assert redact_url("rtsp://h/x") == "rtsp://h/x"


def test_a_deployment_without_a_profile_gets_the_strictest() -> None:
    config = parse_config(VALID, env={"CAM_PASS": "x"})
    assert config.profile == "school"


@pytest.mark.parametrize("location", ["classroom", "office", "reception", "parking", "other"])
def test_the_school_profile_refuses_cameras_outside_corridors_and_entrances(location: str) -> None:
    text = VALID.replace("location: entrance", f"location: {location}")
    assert issues_of(text) == [
        f"line 9: cameras.entrance-1.location: a {location} camera is not allowed in the school "
        "profile (only corridor, entrance, exterior)"
    ]
    # The same camera is a configuration choice, not an error, where the profile allows it.
    municipal = parse_config("profile: municipal\n" + text, env={"CAM_PASS": "x"})
    assert municipal.cameras["entrance-1"].location == location


def test_the_school_profile_computes_no_face_descriptors() -> None:
    text = VALID.replace("      retention_hours: 48\n", "      retention_hours: 48\n"
                         "    analytics:\n      faces:\n        embeddings: true\n")
    assert issues_of(text) == [
        "line 18: cameras.entrance-1.analytics.faces.embeddings: the school profile computes no "
        "face descriptors (faces are detected only to blur)"
    ]
    police = parse_config("profile: police\n" + text, env={"CAM_PASS": "x"})
    assert police.cameras["entrance-1"].analytics.faces.embeddings


def test_relative_paths_are_taken_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "custodes.yaml"
    path.write_text(VALID + "security:\n  key_dir: secrets\n")
    config = load_config(path, env={"CAM_PASS": "x"})
    assert config.storage.path == tmp_path / "recordings"
    assert config.key_dir == tmp_path / "secrets"


# The same camera with its credentials in their own fields.
SEPARATE = VALID.replace("rtsp://admin:${CAM_PASS}@", "rtsp://").replace(
    "    record:\n", "    username: admin\n    password: ${CAM_PASS}\n    record:\n"
)


@pytest.mark.parametrize("password", ["p@ss", "p#ss@", "pa/ss@x", "pa?s@x", "pa ss", "#1234"])
def test_a_password_that_breaks_the_url_is_refused_without_showing_it(password: str) -> None:
    issues = issues_of(VALID, env={"CAM_PASS": password})
    # Both URLs, each with its own key and line, in one report.
    assert [i.split(": ")[:2] for i in issues] == [
        ["line 11", "cameras.entrance-1.main_url"], ["line 12", "cameras.entrance-1.sub_url"],
    ]
    assert all("username and password fields" in i for i in issues)
    assert not any(password.strip("#@") in i for i in issues)


def test_url_problems_are_reported_with_the_other_errors() -> None:
    text = VALID.replace("quota: 80%", "quota: lots")
    issues = issues_of(text, env={"CAM_PASS": "a@b"})
    assert [i.split(": ")[1] for i in issues] == [
        "cameras.entrance-1.main_url", "cameras.entrance-1.sub_url", "storage.quota",
    ]


def test_credentials_in_their_own_fields_reach_the_urls_percent_encoded() -> None:
    password = "p@ss#w/rd:?% x"
    cam = parse_config(SEPARATE, env={"CAM_PASS": password}).cameras["entrance-1"]
    encoded = "p%40ss%23w%2Frd%3A%3F%25%20x"
    assert cam.main_source == f"rtsp://admin:{encoded}@192.0.2.10:554/main"
    assert cam.sub_source == f"rtsp://admin:{encoded}@192.0.2.10:554/sub"
    assert cam.light_source == cam.sub_source
    # What ffmpeg and Python read back is what was configured, host included.
    parts = urlsplit(cam.main_source)
    assert (parts.hostname, parts.port) == ("192.0.2.10", 554)
    assert (unquote(parts.username or ""), unquote(parts.password or "")) == ("admin", password)
    # The URLs as written stay free of it, and no dump of the config shows it.
    assert cam.main_url == "rtsp://192.0.2.10:554/main"
    assert password not in repr(cam)
    assert password not in str(cam.model_dump(mode="json"))


def test_a_password_from_its_own_field_is_masked_in_errors() -> None:
    password = "p@ss#word"
    cam = parse_config(SEPARATE, env={"CAM_PASS": password}).cameras["entrance-1"]
    # ffmpeg repeats the URL it was given, and sometimes the decoded password alone.
    error = f"{cam.main_source}: 401 Unauthorized (user admin, password {password})"
    masked = mask_credentials(error, cam.main_source)
    assert password not in masked
    assert "p%40ss" not in masked
    assert masked.startswith("rtsp://admin:***@192.0.2.10:554/main")


def test_a_url_with_credentials_and_the_fields_too_is_refused() -> None:
    text = SEPARATE.replace("rtsp://192.0.2.10:554/sub", "rtsp://admin:${CAM_PASS}@192.0.2.10/sub")
    assert issues_of(text) == [
        "line 13: cameras.entrance-1.username: sub_url carries a user name or password too: "
        "give the credentials in one place, not both",
    ]


def test_a_password_without_a_username_is_refused() -> None:
    text = SEPARATE.replace("    username: admin\n", "")
    assert issues_of(text) == [
        "line 13: cameras.entrance-1.password: a password needs a username (the username field)"
    ]


def test_a_password_yaml_reads_as_a_number_is_refused() -> None:
    text = SEPARATE.replace("password: ${CAM_PASS}", "password: 0123")
    (issue,) = issues_of(text)
    assert issue.startswith("line 14: cameras.entrance-1.password: write it in quotes")
    quoted = parse_config(SEPARATE.replace("${CAM_PASS}", "'0123'"), env={})
    assert quoted.cameras["entrance-1"].main_source.startswith("rtsp://admin:0123@")


def test_percent_encoded_credentials_in_the_url_still_work() -> None:
    text = VALID.replace("${CAM_PASS}", "p%40ss")
    cam = parse_config(text, env={}).cameras["entrance-1"]
    assert cam.main_source == cam.main_url == "rtsp://admin:p%40ss@192.0.2.10:554/main"


def test_the_config_fingerprint_leaves_the_password_out() -> None:
    one = parse_config(SEPARATE, env={"CAM_PASS": "one"}).fingerprint()
    assert one == parse_config(SEPARATE, env={"CAM_PASS": "two"}).fingerprint()
    unset = parse_config(SEPARATE.replace("    password: ${CAM_PASS}\n", ""), env={})
    assert unset.fingerprint()["cameras.entrance-1"] != one["cameras.entrance-1"]
    # A camera without the new fields keeps the digest it had before they existed.
    cam = parse_config(VALID, env={"CAM_PASS": "x"}).cameras["entrance-1"]
    before = cam.model_dump(mode="json", exclude={"username", "password"})
    before["main_url"], before["sub_url"] = redact_url(cam.main_url), redact_url(cam.sub_url or "")
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert parse_config(VALID, env={"CAM_PASS": "x"}).fingerprint()["cameras.entrance-1"] == digest
