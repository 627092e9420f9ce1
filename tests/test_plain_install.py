"""A plain `pip install facecloak` (no extra, so no ONNX Runtime): enroll works, the rest names its extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def run_without_onnxruntime(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    code = ("import sys; sys.modules['onnxruntime'] = None\n"  # any `import onnxruntime` now fails
            "from facecloak.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900, cwd=tmp_path)


def test_enroll_and_apply_work_without_onnxruntime(selfie_path: Path, lfw: Path, tmp_path: Path) -> None:
    mask = tmp_path / "me.fcmask"
    done = run_without_onnxruntime(["enroll", str(selfie_path), "-o", str(mask), "--surrogates", "sface",
                                    "--views", "2", "--iterations", "2", "--backend", "torch-cpu"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert mask.stat().st_size > 0 and "Traceback" not in done.stderr
    photo = sorted((lfw / "Tony_Blair").glob("*.jpg"))[1]
    done = run_without_onnxruntime(["apply", str(mask), str(photo), "-o", str(tmp_path / "out.png")], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


def test_what_needs_onnxruntime_names_the_extra_in_one_line(tmp_path: Path) -> None:
    done = run_without_onnxruntime(["eval", "--quick", "-o", str(tmp_path / "eval")], tmp_path)
    assert done.returncode == 13, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "pip install 'facecloak[cpu]'" in done.stderr
