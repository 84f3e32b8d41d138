"""`custodes faces compare` and `custodes faces detect` on real shared photos.

They act on files only (no config, no sign-in), so they run here through typer's runner with
nothing but the photos. Levels are asserted as they really come out: two photos of one person
can be a match or only a possible one.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner, Result

from custodes.cli import app
from custodes.commands.faces import ImageError
from custodes.faces.photos import image_size as header_size

runner = CliRunner()


@pytest.fixture
def lfw(shared_data: Path) -> Path:
    return shared_data / "faces" / "lfw"


def run(*args: str) -> Result:
    return runner.invoke(app, ["faces", *args])


def lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_compare_two_photos_of_one_person_and_of_two_people(lfw: Path) -> None:
    kim = lfw / "Kim_Clijsters"
    close = run("compare", str(kim / "Kim_Clijsters_0001.jpg"), str(kim / "Kim_Clijsters_0008.jpg"))
    assert close.exit_code == 0, close.output
    (out,) = lines(close)
    assert out["level"] == "match"
    assert out["distance"] < 0.40
    assert out["meaning"].startswith("Match (distance below 0.40).")
    assert out["a"]["path"].endswith("Kim_Clijsters_0001.jpg")
    x, y, w, h = out["a"]["box"]
    # LFW centres the face in its 250x250 photos.
    assert 0 <= x < 125 < x + w
    assert 0 <= y < 125 < y + h

    # The same person again, but further apart: only possible, as the calibration says.
    far = run("compare", str(kim / "Kim_Clijsters_0001.jpg"), str(kim / "Kim_Clijsters_0006.jpg"))
    (out,) = lines(far)
    assert (out["level"], far.exit_code) == ("possible", 0)
    assert 0.40 <= out["distance"] <= 0.60

    other = run("compare", str(kim / "Kim_Clijsters_0001.jpg"),
                str(lfw / "Gordon_Brown" / "Gordon_Brown_0009.jpg"))
    (out,) = lines(other)
    assert (out["level"], other.exit_code) == ("none", 0)
    assert out["distance"] > 0.7


def test_compare_pairs_one_line_per_pair_relative_to_the_csv(tmp_path: Path,
                                                              lfw: Path) -> None:
    kim = lfw / "Kim_Clijsters"
    shutil.copy(kim / "Kim_Clijsters_0008.jpg", tmp_path / "kim8.jpg")
    (tmp_path / "pairs.csv").write_text(
        "path1,path2,same\n"
        f"{kim / 'Kim_Clijsters_0001.jpg'},kim8.jpg,1\n"
        f"{kim / 'Kim_Clijsters_0001.jpg'},{lfw / 'Gordon_Brown' / 'Gordon_Brown_0009.jpg'},0\n")
    result = run("compare", "--pairs", str(tmp_path / "pairs.csv"))
    assert result.exit_code == 0, result.output
    first, second = lines(result)
    assert (first["level"], first["same"], first["b"]["path"]) == (
        "match", "1", str(tmp_path / "kim8.jpg"))
    assert (second["level"], second["same"]) == ("none", "0")


def test_a_bad_pair_keeps_its_line_and_fails_the_run(tmp_path: Path, lfw: Path) -> None:
    photo = lfw / "Kim_Clijsters" / "Kim_Clijsters_0001.jpg"
    (tmp_path / "pairs.csv").write_text(f"path1,path2\n{photo},missing.jpg\n{photo},{photo}\n")
    result = run("compare", "--pairs", str(tmp_path / "pairs.csv"))
    assert result.exit_code == 2
    bad, good = lines(result)
    assert "missing.jpg: cannot read it" in bad["error"]
    assert (good["level"], good["distance"]) == ("match", 0.0)
    assert "1 of 2 pairs could not be compared" in result.stderr


def test_detect_lists_faces_and_judges_them_against_a_reference(shared_data: Path) -> None:
    biden = shared_data / "faces" / "face_recognition" / "Joseph_Biden" / "biden.jpg"
    crowd = shared_data / "crowds" / "face_recognition_two_people.jpg"  # Obama and Biden
    dogs = shared_data / "crowds" / "dlib_dogs.jpg"  # no human face
    result = run("detect", str(crowd), str(dogs), "--compare", str(biden))
    assert result.exit_code == 0, result.output
    two, none = lines(result)
    assert (two["path"], two["width"], two["height"]) == (str(crowd), 1126, 661)
    assert sorted(f["level"] for f in two["faces"]) == ["match", "none"]
    assert all(0.5 <= f["score"] <= 1 and len(f["box"]) == 4 for f in two["faces"])
    assert none["faces"] == []

    plain = run("detect", str(crowd))
    (out,) = lines(plain)
    assert [set(f) for f in out["faces"]] == [{"box", "score"}] * 2


def test_unreadable_files_and_photos_without_a_face_exit_2(tmp_path: Path, lfw: Path) -> None:
    photo = str(lfw / "Kim_Clijsters" / "Kim_Clijsters_0001.jpg")
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))

    result = run("compare", photo, str(text))
    assert result.exit_code == 2
    assert f"{text}: not a JPEG, PNG, WebP, BMP or GIF image" in result.stderr
    result = run("compare", photo, str(blank))
    assert result.exit_code == 2
    assert f"{blank}: no face found" in result.stderr
    result = run("compare", photo, str(tmp_path / "gone.jpg"))
    assert (result.exit_code, result.stdout) == (2, "")
    assert "gone.jpg: cannot read it" in result.stderr
    result = run("detect", "--compare", str(blank), photo)
    assert result.exit_code == 2
    assert "no face found" in result.stderr
    # detect reports a face-less picture (faces: []) but not an unreadable one.
    result = run("detect", str(blank), str(text))
    assert result.exit_code == 2
    assert lines(result) == [{"path": str(blank), "width": 200, "height": 200, "faces": []}]


def test_a_huge_picture_is_refused_from_its_header_before_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small file may declare a picture of gigabytes; the header decides, not the decoder."""
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    assert ok
    data = bytearray(png.tobytes())
    data[16:24] = struct.pack(">II", 10_000, 6_000)  # IHDR: 60 Mpx
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bytes(data))

    def no_decoding(*_: object) -> None:
        raise AssertionError("the picture was decoded")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    result = run("detect", str(bomb))
    assert result.exit_code == 2
    assert f"{bomb}: 10000x6000 is 60 Mpx, over the 50 Mpx this command decodes" in result.stderr

    ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    data = bytearray(jpeg.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 9_000, 9_000)
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    result = run("compare", str(tmp_path / "bomb.jpg"), str(bomb))
    assert result.exit_code == 2
    assert "9000x9000 is 81 Mpx" in result.stderr


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp"])
def test_header_size_of_each_format(ext: str) -> None:
    noise = np.random.default_rng(1).integers(0, 255, (23, 37, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(ext, noise)
    assert ok
    assert header_size(encoded.tobytes()) == (37, 23)


def test_header_size_refuses_what_it_cannot_read() -> None:
    for data in (b"", b"GIF8", b"\xff\xd8\xff\xda\x00\x02", b"II*\x00 a TIFF"):
        with pytest.raises(ImageError):
            header_size(data)
    assert header_size(b"GIF89a" + struct.pack("<HH", 640, 480)) == (640, 480)
