from __future__ import annotations

from pathlib import Path

import pytest

from custodes.config import ConfigError, load_config, parse_config, redact_url

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
