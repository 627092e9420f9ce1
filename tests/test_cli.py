import subprocess
import sys

import numpy as np
import pytest

from facecloak.cli import main
from facecloak.imageio import read_image
from facecloak.mask import decode_mask

from .conftest import person_photos

FAST = ["--views", "4", "--iterations", "3"]


@pytest.mark.parametrize("surrogates", ["sface", "facenet"])
def test_enroll_then_apply_on_lfw(tmp_path, lfw, surrogates, capsys, flushed):
    photos = person_photos(lfw, "Serena_Williams")
    mask_path = tmp_path / "me.fcmask"
    assert main(["enroll", str(photos[0]), "-o", str(mask_path), "--surrogates", surrogates, *FAST]) == 0
    assert flushed == [True]  # enroll flushes subnormals once, before its worker threads start
    mask = decode_mask(mask_path.read_bytes())
    assert mask.models == (surrogates,) and mask_path.stat().st_size <= 16 * 1024
    out = tmp_path / "cloaked.png"
    assert main(["apply", str(mask_path), str(photos[4]), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "self-check" in printed and "SSIM" in printed and "PSNR" in printed
    assert "self-check visibility on this photo: SSIM" in printed and printed.count("face: FLIP mean") == 2
    summary = printed.splitlines()[-1]  # apply's line: whole photo, then the face box
    assert summary.startswith(f"wrote {out}") and "PSNR" in summary and "% of pixels > 0.2, SSIM" in summary
    clean, cloaked = read_image(photos[4]), read_image(out)
    assert cloaked.shape == clean.shape and not np.array_equal(cloaked, clean)


def test_enroll_is_deterministic(tmp_path, selfie_path):
    a, b = tmp_path / "a.fcmask", tmp_path / "b.fcmask"
    for path in (a, b):
        assert main(["enroll", str(selfie_path), "-o", str(path), "--surrogates", "sface", *FAST, "--seed", "7"]) == 0
    assert a.read_bytes() == b.read_bytes()


def _run(*args):
    return subprocess.run([sys.executable, "-m", "facecloak.cli", *args], capture_output=True, text=True, timeout=120)


def test_expected_failures_are_one_line_errors_with_specific_exit_codes(tmp_path, selfie_path):
    blank = tmp_path / "blank.png"
    from facecloak.imageio import write_image

    write_image(blank, np.full((200, 200, 3), 127, np.uint8))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    bad_mask = tmp_path / "bad.fcmask"
    bad_mask.write_bytes(b"FCMK" + b"\x00" * 40)
    cases = [
        (("enroll", str(blank), "-o", str(tmp_path / "m.fcmask")), 5, "no face"),
        (("enroll", str(notes), "-o", str(tmp_path / "m.fcmask")), 3, "not an image"),
        (("enroll", str(selfie_path), "-o", str(tmp_path / "m.png")), 2, "must end in .fcmask"),
        (("enroll", str(selfie_path), "-o", str(tmp_path / "m.fcmask"), "--eot-jpeg", "101"), 2, "upload_jpeg"),
        (("enroll", str(selfie_path), "-o", str(tmp_path / "m.fcmask"), "--eot-spectrum", "1.5"), 2, "spectrum_rho"),
        (("enroll", str(selfie_path), "-o", str(tmp_path / "m.fcmask"), "--gradient-blur", "-1"), 2, "grad_sigma"),
        (("enroll", str(selfie_path), "-o", str(tmp_path / "m.fcmask"), "--members", "4", "--member-separation", "-1"), 2,
         "member_separation"),
        (("enroll", str(selfie_path), "-o", str(tmp_path / "m.fcmask"), "--view-separation", "101"), 2, "view_separation"),
        (("apply", str(bad_mask), str(selfie_path), "-o", str(tmp_path / "o.png")), 7, "mask"),
        (("apply", str(notes), str(selfie_path), "-o", str(tmp_path / "o.png")), 7, "not a FaceCloak mask"),
        (("apply", str(bad_mask), str(selfie_path), "-o", str(tmp_path / "o.gif")), 2, "unsupported output"),
    ]
    for args, code, message in cases:
        result = _run(*args)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0  # one line
    assert not (tmp_path / "m.fcmask").exists() and not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(("flags", "expected"), [
    ([], (8, 32, 0)),
    (["--strength", "subtle"], (8, 32, 4)),
    (["--strength", "strong"], (12, 48, 0)),
    (["--strength", "strong", "--eps", "6"], (6, 48, 0)),
    (["--strength", "subtle", "--eps-focus", "20"], (8, 20, 4)),
])
def test_strength_presets_set_the_budget_and_explicit_budgets_override_them(flags, expected) -> None:
    from facecloak.cli import _enroll_config, build_parser

    config = _enroll_config(build_parser().parse_args(["enroll", "x.jpg", "-o", "x.fcmask", *flags]))
    assert (config.budget.eps * 255, config.budget.eps_focus * 255, config.pgd.visibility_weight) == pytest.approx(expected)
    assert config.perceptual is None


def test_perceptual_takes_the_strength_as_its_largest_amplitude() -> None:
    from facecloak.cli import _enroll_config, build_parser

    args = build_parser().parse_args(["enroll", "x.jpg", "-o", "x.fcmask", "--strength", "strong", "--perceptual"])
    assert _enroll_config(args).perceptual.eps * 255 == pytest.approx(48)


def test_eot_options_reach_the_pgd_settings() -> None:
    from facecloak.cli import _enroll_config, build_parser
    from facecloak.optimise import PGDConfig

    parse = build_parser().parse_args
    config = _enroll_config(parse(["enroll", "x.jpg", "-o", "x.fcmask", "--eot-rotation", "8", "--eot-jpeg", "80",
                                   "--skip-gradient", "0.5", "--visibility-weight", "2", "--eot-spectrum", "0.4",
                                   "--gradient-blur", "1.5", "--member-separation", "6", "--view-separation", "3"]))
    pgd = config.pgd
    assert (pgd.diversity_rotation, pgd.upload_jpeg, pgd.skip_gradient, pgd.visibility_weight, pgd.spectrum_rho, pgd.grad_sigma,
            pgd.member_separation, pgd.view_separation) == (8, 80, 0.5, 2, 0.4, 1.5, 6, 3)
    plain = _enroll_config(parse(["enroll", "x.jpg", "-o", "x.fcmask"])).pgd
    default = PGDConfig()
    assert (plain.diversity_rotation, plain.upload_jpeg, plain.skip_gradient, plain.visibility_weight, plain.spectrum_rho,
            plain.grad_sigma, plain.member_separation, plain.view_separation) == (
                default.diversity_rotation, default.upload_jpeg, default.skip_gradient, default.visibility_weight,
                default.spectrum_rho, default.grad_sigma, default.member_separation, default.view_separation)


def test_enroll_says_when_the_backend_does_not_honour_bf16_convolutions(tmp_path, selfie_path, capsys, monkeypatch):
    import facecloak.assemble as assemble
    from facecloak.optimise.torch_backend import TorchBackend

    backend = {"name": "ort-cpu"}  # as if an ONNX Runtime step served the request
    monkeypatch.setattr(assemble, "build_backend", lambda spec, say: (TorchBackend(), backend["name"], []))
    args = ["enroll", str(selfie_path), "--surrogates", "sface", "--views", "2", "--iterations", "1"]
    assert main([*args, "--bf16-convolutions", "-o", str(tmp_path / "a.fcmask")]) == 0
    printed = capsys.readouterr()
    assert "bf16_convolutions not honoured: ort-cpu computes float32" in printed.err
    assert "precision: surrogates in float32\n" in printed.out  # what ran
    assert main([*args, "-o", str(tmp_path / "b.fcmask")]) == 0  # the hardware default asks for nothing
    assert "not honoured" not in capsys.readouterr().err
    backend["name"] = "aot-cpu"
    assert main([*args, "--bf16-convolutions", "-o", str(tmp_path / "c.fcmask")]) == 0
    printed = capsys.readouterr()
    assert "not honoured" not in printed.err
    assert "precision: surrogates in float32, convolutions on bfloat16 arithmetic\n" in printed.out
