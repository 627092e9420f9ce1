"""Expected CLI failures: one line on stderr, a documented exit code, found before any work, no file left behind."""

import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facecloak.cli import main
from facecloak.imageio import read_image, write_image

GOLDEN_MASK = Path(__file__).parent / "data" / "mask_v2.fcmask"
README = Path(__file__).parents[1] / "README.md"
ERROR = r"facecloak: error( \[[A-Z_]+\])?: "  # the reason tag is optional


@pytest.fixture
def photo(tmp_path, lfw):
    """A real photo as PNG in its own folder (large enough to exceed a 20 KiB file-size limit)."""
    path = tmp_path / "photo.png"
    write_image(path, read_image(lfw / "Tony_Blair" / "Tony_Blair_0002.jpg"))
    return path


def _fails(capsys, args, code, message):
    assert main([str(a) for a in args]) == code
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran: enrollment prints its self-check, apply its quality line
    assert re.fullmatch(rf"{ERROR}.*{message}.*\n", captured.err), captured.err


def test_the_output_must_not_be_an_input_unless_overwrite(tmp_path, photo, capsys):
    before = photo.read_bytes()
    (tmp_path / "link.png").symlink_to(photo)
    for out in (photo, tmp_path / "link.png"):
        _fails(capsys, ["apply", GOLDEN_MASK, photo, "-o", out], 2, "is the input .*--overwrite")
    selfie = tmp_path / "me.fcmask"  # an (odd) photo name the mask output could collide with
    shutil.copy(photo, selfie)
    _fails(capsys, ["enroll", selfie, "-o", selfie], 2, "is the input")
    assert photo.read_bytes() == before and selfie.read_bytes() == before
    assert main(["apply", str(GOLDEN_MASK), str(photo), "-o", str(photo), "--overwrite"]) == 0
    assert photo.read_bytes() != before and sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "me.fcmask", "photo.png"]


@pytest.mark.parametrize("command", ["apply", "enroll"])
def test_unwritable_outputs_are_refused_before_any_work(tmp_path, photo, capsys, command):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "folder.fcmask").mkdir()
    suffix = ".png" if command == "apply" else ".fcmask"
    inputs = [GOLDEN_MASK, photo] if command == "apply" else [photo]
    for out, message in [(tmp_path / "missing" / f"x{suffix}", "missing does not exist"),
                         (tmp_path / f"folder{suffix}", "is a directory")]:
        _fails(capsys, [command, *inputs, "-o", out], 12, f"cannot write .*{message}")


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "seed must be in 0..4294967295, got -1"),
    (["--seed", str(2**32)], "seed must be in"),
    (["--surrogates", "sface,sface"], "each surrogate model may be named once; repeated: sface"),
])
def test_bad_enroll_options(tmp_path, photo, capsys, args, message):
    _fails(capsys, ["enroll", photo, "-o", tmp_path / "m.fcmask", *args], 2, re.escape(message))


@pytest.mark.parametrize("quality", ["0", "-5", "1000"])
def test_jpeg_quality_is_validated(tmp_path, photo, capsys, quality):
    _fails(capsys, ["apply", GOLDEN_MASK, photo, "-o", tmp_path / "o.jpg", "--jpeg-quality", quality], 2,
           f"quality must be in 1..100, got {quality}")


def test_the_quality_line_is_measured_on_the_file_as_written(tmp_path, photo, capsys):
    out = tmp_path / "o.jpg"
    assert main(["apply", str(GOLDEN_MASK), str(photo), "-o", str(out), "--jpeg-quality", "10"]) == 0
    printed = float(re.search(r"PSNR ([\d.]+) dB", capsys.readouterr().out).group(1))
    diff = read_image(photo).astype(np.float64) - read_image(out).astype(np.float64)
    assert printed == pytest.approx(10 * np.log10(255.0**2 / np.mean(diff**2)), abs=0.006)
    assert printed < 32  # JPEG at quality 10; the in-memory cloak alone is above 35 dB


@pytest.mark.parametrize("command", ["apply", "enroll"])
def test_a_5000x1_strip_has_no_face(tmp_path, capsys, command):
    strip = tmp_path / "strip.png"
    write_image(strip, np.full((1, 5000, 3), 128, np.uint8))
    inputs = [GOLDEN_MASK, strip] if command == "apply" else [strip]
    suffix = ".png" if command == "apply" else ".fcmask"
    assert main([command, *map(str, inputs), "-o", str(tmp_path / f"o{suffix}")]) == 5
    assert re.fullmatch(rf"{ERROR}no face.*\n", capsys.readouterr().err)


def test_oversized_mask_file_is_refused_without_reading_it(tmp_path, photo, capsys):
    huge = tmp_path / "huge.fcmask"
    with huge.open("wb") as file:
        file.truncate(1 << 30)  # sparse: 1 GiB that is never read
    _fails(capsys, ["apply", huge, photo, "-o", tmp_path / "o.png"], 7, "larger than the largest valid mask")


def test_file_size_limit_is_a_one_line_error_and_leaves_nothing(tmp_path, photo):
    """``(ulimit -f 20; facecloak apply ...)``: EFBIG, not a 20,480-byte PNG and a traceback."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, 20 * 1024))

    out = tmp_path / "out.png"
    result = subprocess.run([sys.executable, "-m", "facecloak.cli", "apply", str(GOLDEN_MASK), str(photo), "-o", str(out)],
                            capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert result.returncode == 12, result.stderr
    assert re.fullmatch(rf"{ERROR}cannot write {re.escape(str(out))}: File too large\n", result.stderr), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_every_exit_code_is_documented():
    from facecloak import errors

    table = {int(code) for code in re.findall(r"^\| (\d+) \|", README.read_text(), re.M)}
    codes = {cls.exit_code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.FaceCloakError)}
    assert codes - {1} <= table and 12 in table and 130 in table
