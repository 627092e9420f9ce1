"""The ``facecloak`` command: enroll a selfie, apply a mask, build an anchor gallery."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from .atomic import check_output_path, write_atomic
from .backend_names import AUTO, BACKEND_ENV, BACKENDS
from .command import run_command
from .errors import BadOptionError
from .imageio import check_jpeg_quality, output_format, read_image, write_image
from .presets import DEFAULT_SURROGATES, STRENGTHS

MASK_SUFFIX = ".fcmask"


def _check_output(out: Path, inputs: Sequence[str], overwrite: bool) -> None:
    """Before any work: ``out`` must be writable and, unless ``overwrite``, not one of ``inputs``."""
    check_output_path(out)
    for source in inputs if not overwrite else ():
        try:
            same = os.path.samefile(out, source)  # follows symlinks and hard links
        except OSError:  # either does not exist (yet): they cannot be the same file
            continue
        if same:
            raise BadOptionError(f"the output {out} is the input {source}; pass --overwrite to replace it")


class _StageBar:
    """One tqdm bar that follows (stage, fraction) progress events."""

    def __init__(self, desc: str) -> None:
        self.bar = tqdm(total=100, desc=desc, unit="%", file=sys.stderr, leave=False, disable=None)

    def __call__(self, stage: str, fraction: float) -> None:
        self.bar.set_postfix_str(stage)
        self.bar.n = round(100 * fraction)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _grey_levels(value: str) -> float:
    levels = float(value)
    if not 0 < levels <= 64:
        raise argparse.ArgumentTypeError("budgets are grey levels in (0, 64]")
    return levels / 255.0


def _enroll_config(args: argparse.Namespace):
    from .enroll import EnrollConfig, with_strength
    from .optimise.config import with_given
    from .optimise.perceptual import PerceptualBudget

    base = with_strength(EnrollConfig(), STRENGTHS[args.strength])
    eps = base.budget.eps if args.eps is None else args.eps
    eps_focus = base.budget.eps_focus if args.eps_focus is None else args.eps_focus
    budget = replace(base.budget, eps=eps, eps_focus=max(eps, eps_focus))
    pgd = with_given(base.pgd, iterations=args.iterations, diversity_rotation=args.eot_rotation, upload_jpeg=args.eot_jpeg,
                     skip_gradient=args.skip_gradient, visibility_weight=args.visibility_weight, spectrum_rho=args.eot_spectrum,
                     grad_sigma=args.gradient_blur, member_separation=args.member_separation,
                     view_separation=args.view_separation,
                     bf16_surrogates=args.bf16 or None, bf16_convolutions=args.bf16_convolutions)
    surrogates = tuple(s for s in args.surrogates.split(",") if s)
    perceptual = PerceptualBudget(eps=budget.eps_focus) if args.perceptual else None
    return replace(base, surrogates=surrogates, views=args.views, seed=args.seed, budget=budget, pgd=pgd, perceptual=perceptual,
                   members=args.members)


def _say(line: str) -> None:
    print(f"facecloak: {line}", file=sys.stderr, flush=True)


def cmd_enroll(args: argparse.Namespace) -> int:
    from .assemble import EnrollerSpec, build_enroller
    from .mask import encode_mask_set
    from .models.weights import flush_subnormals
    from .optimise.precision import precision_note

    out = Path(args.output)
    if out.suffix != MASK_SUFFIX:
        raise BadOptionError(f"the mask file must end in {MASK_SUFFIX}, got {out.name}")
    _check_output(out, [args.photo], args.overwrite)
    config = _enroll_config(args)
    config.validate()
    photo = read_image(args.photo)
    if args.server:
        from facecloak.clients.python import enroll_remote  # optional: the gRPC client

        bar = _StageBar("enroll")
        try:
            data = enroll_remote(args.server, Path(args.photo).read_bytes(), config, progress=bar)
        finally:
            bar.close()
    else:
        flush_subnormals()  # before the first parallel op, so every worker thread inherits it
        # A set's K members step together: the compiled step is prepared for that shape.
        spec = EnrollerSpec(backend=args.backend, surrogates=config.surrogates, views=config.views, pgd=config.pgd,
                            members=config.step_members, view_backend="augment")
        assembled = build_enroller(spec, say=_say)
        for note in assembled.notes[1:]:  # fallbacks: why what was asked for is not what runs
            _say(note)
        bar = _StageBar("enroll")
        try:
            result = assembled.enroller.enroll(photo, config, progress=bar)
        finally:
            bar.close()
        data = encode_mask_set(result.masks)
        for check in result.self_check:
            print(f"self-check {check.model}: similarity {check.before:.3f} -> {check.after:.3f} "
                  f"(match threshold {check.threshold:.3f})")
        if result.visibility is not None:
            print(f"self-check visibility on this photo: {result.visibility.summary()}")
        print(f"precision: {precision_note(config.pgd, assembled.backend)}")
        print(f"timings ({assembled.backend}): " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
    write_atomic(out, data, permissions=0o600)  # the mask is a secret: owner-only
    print(f"wrote {out} ({len(data)} bytes)")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from .apply import apply_mask_with_landmarks, measure_quality
    from .faces import FaceDetector, detect_largest_face
    from .mask import member_for_photo, read_mask_set

    out = Path(args.output)
    output_format(out)  # refuse bad options and outputs before any work is done
    check_jpeg_quality(args.jpeg_quality)
    _check_output(out, [args.mask, args.photo], args.overwrite)
    try:
        masks = read_mask_set(args.mask)
    except OSError as exc:
        raise BadOptionError(f"cannot read mask {args.mask}: {exc.strerror}") from None
    photo = read_image(args.photo)
    member = member_for_photo(photo, len(masks), args.member)
    face = detect_largest_face(FaceDetector(), photo)
    cloaked = apply_mask_with_landmarks(photo, masks[member], face.landmarks)
    cloaked = write_image(out, cloaked, jpeg_quality=args.jpeg_quality)  # as written: quality is measured on it
    quality = measure_quality(photo, cloaked, face.box)
    which = f", mask {member + 1} of {len(masks)}" if len(masks) > 1 else ""
    print(f"wrote {out} ({cloaked.shape[1]}x{cloaked.shape[0]}{which}): {quality.summary()}")
    return 0


def cmd_gallery_build(args: argparse.Namespace) -> int:
    from .anchors import build_gallery, list_images
    from .models.weights import flush_subnormals

    root = Path(args.directory)
    if not root.is_dir():
        raise BadOptionError(f"{root} is not a directory")
    check_output_path(args.output)
    images = list_images(root)
    if not images:
        raise BadOptionError(f"no .jpg/.png/.webp images under {root}")
    models = tuple(m for m in args.models.split(",") if m)
    flush_subnormals()
    with tqdm(total=len(images), desc="gallery", unit="img", file=sys.stderr, disable=None) as bar:
        gallery = build_gallery(images, root, models, progress=lambda done, total: bar.update(done - bar.n))
    gallery.save(args.output)
    print(f"wrote {args.output}: {len(gallery.names)} identities x {list(gallery.embeddings)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facecloak", description="Personal face-privacy cloaks from one selfie.")
    sub = parser.add_subparsers(dest="command", required=True)

    enroll = sub.add_parser("enroll", help="learn your identity mask from one selfie")
    enroll.add_argument("photo")
    enroll.add_argument("-o", "--output", required=True, help="mask file to write (*.fcmask)")
    enroll.add_argument("--surrogates", default=",".join(DEFAULT_SURROGATES), help="comma-separated surrogate models")
    enroll.add_argument("--views", type=int, default=8)
    enroll.add_argument("--iterations", type=int, default=10)
    enroll.add_argument("--strength", choices=tuple(STRENGTHS), default="standard",
                        help="preset, eps / eps_A grey levels (+ visibility penalty weight): " + ", ".join(
                            f"{k} {s.eps:g}/{s.eps_focus:g}" + (f" + {s.visibility_weight:g}" if s.visibility_weight else "")
                            for k, s in STRENGTHS.items())
                        + " (default standard; --eps / --eps-focus override it)")
    enroll.add_argument("--eps", type=_grey_levels, default=None, help="budget in grey levels (default: the preset's, 8)")
    enroll.add_argument("--eps-focus", type=_grey_levels, default=None, help="budget on focus pixels (default: the preset's, 32)")
    enroll.add_argument("--perceptual", action="store_true",
                        help="perceptual budget: each photo the mask lands on decides how much it carries (up to "
                        "--eps-focus on textured face pixels, a quarter of it on flat skin, none beside the face); "
                        "writes mask format 3")
    enroll.add_argument("--members", type=int, default=1,
                        help="masks in the set (1..16): each photo gets one, so cloaked photos cannot be linked to "
                        "each other; the members step together on every view, K x one mask's compute at the same "
                        "--views (measured: 4 members on 4 views, docs/eval.md 'Mask sets'; default 1)")
    enroll.add_argument("--member-separation", type=float, metavar="W",
                        help="how hard a set's members are kept apart: W x their cloaked embeddings' mean pairwise "
                        "cosine in the loss (default 3; measured: 8 members on 2 views at 6 link the fewest photos "
                        "and cost the most clean-gallery protection, docs/eval.md 'Mask sets')")
    enroll.add_argument("--view-separation", type=float, metavar="W",
                        help="keep cloaked photos of you apart: W x the mean cosine between the cloaked embeddings of "
                        "different views in the loss (default 0 = off; measured: one mask at 3 links ~20 points fewer of "
                        "your cloaked photos for ~4-5 points of clean-gallery protection, docs/eval.md 'Mask sets')")
    enroll.add_argument("--eot-rotation", type=float, metavar="DEG",
                        help="alignment invariance: rotate every view by up to DEG degrees per step (0 = off)")
    enroll.add_argument("--eot-jpeg", type=int, metavar="Q",
                        help="upload invariance: a differentiable JPEG round trip at quality Q per step (0 = off)")
    enroll.add_argument("--eot-spectrum", type=float, metavar="RHO",
                        help="frequency invariance: per step, random gains in 1 +- RHO on every view's DCT spectrum "
                        "plus pixel noise (SSA; 0 = off)")
    enroll.add_argument("--gradient-blur", type=float, metavar="SIGMA",
                        help="smooth every step's gradient with a Gaussian of SIGMA px (TI-FGSM; 0 = off)")
    enroll.add_argument("--skip-gradient", type=float, metavar="GAMMA",
                        help="model augmentation: scale the gradient through the surrogates' residual branches by GAMMA "
                        "(SGM; 1 = off)")
    enroll.add_argument("--visibility-weight", type=float, metavar="W",
                        help="visibility penalty: each step also descends W x the mask's energy that passes the eye's "
                        "contrast-sensitivity filters (FLIP's), so it keeps less visible speckle (0 = off)")
    enroll.add_argument("--seed", type=int, default=0)
    enroll.add_argument("--server", help="enroll through a FaceCloak server at host:port instead of locally")
    enroll.add_argument("--overwrite", action="store_true", help="allow the output to replace the input photo")
    enroll.add_argument("--backend", choices=BACKENDS, default=os.environ.get(BACKEND_ENV, AUTO),
                        help=f"where the optimisation runs (default ${BACKEND_ENV} or auto: the fastest measured, "
                        "prepared once into the user cache; torch-cpu: PyTorch eager)")
    enroll.add_argument("--bf16", action="store_true",
                        help="run the surrogates in bfloat16 while the mask is learned: 1.8x faster per step for FaceNet "
                        "on a CPU with AMX, no faster for the MobileFaceNets of the default ensemble (docs/eval.md "
                        "'Reduced precision and dead weights')")
    enroll.add_argument("--bf16-convolutions", action=argparse.BooleanOptionalAction,
                        help="compute the convolutions on bfloat16 arithmetic (float32 accumulation) while the mask is "
                        "learned: ~1.2x faster steps for the default ensemble on a CPU with AMX, same protection; "
                        "PyTorch backends only (default: on where the CPU has bfloat16 units; docs/eval.md "
                        "'bfloat16 convolutions')")
    enroll.set_defaults(func=cmd_enroll)

    apply = sub.add_parser("apply", help="cloak a photo with your mask, at full resolution")
    apply.add_argument("mask")
    apply.add_argument("photo")
    apply.add_argument("-o", "--output", required=True, help="output image (.png is lossless)")
    apply.add_argument("--jpeg-quality", type=int, default=95, help="1..100, only used for .jpg/.webp outputs")
    apply.add_argument("--overwrite", action="store_true", help="allow the output to replace an input (the photo)")
    apply.add_argument("--member", type=int, help="pin the set member to apply (0-based; default: chosen per photo "
                       "from a hash of its pixels, the same photo always getting the same member)")
    apply.set_defaults(func=cmd_apply)

    gallery = sub.add_parser("gallery", help="anchor galleries")
    gallery_sub = gallery.add_subparsers(dest="gallery_command", required=True)
    build = gallery_sub.add_parser("build", help="embed a folder of face photos (one identity per sub-folder or file)")
    build.add_argument("directory")
    build.add_argument("-o", "--output", default="gallery.npz")
    build.add_argument("--models", default=",".join(DEFAULT_SURROGATES))
    build.set_defaults(func=cmd_gallery_build)
    from .evaluate.cli import add_eval_parser  # light module; the benchmark's heavy imports run inside `eval`
    add_eval_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("facecloak", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
