"""The PGD loop's settings: one frozen dataclass that every step implementation reads."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import BadOptionError

# The constants an exported step graph bakes in; a loop run with other values needs another graph.
BAKED_FIELDS = ("momentum", "attention", "attention_lr", "self_weight", "grad_sigma", "balance_surrogates", "chroma_ratio",
                "diversity_rotation", "upload_jpeg", "skip_gradient", "visibility_weight", "spectrum_rho",
                "member_separation", "view_separation", "bf16_surrogates")
MIN_DOWN_SIZE = 8  # the diversity down-sampling never goes below 8 px


@dataclass(frozen=True)
class PGDConfig:
    iterations: int = 10
    step: float = 2 / 255
    momentum: float = 1.0  # 0 disables MI-FGSM
    # The paper's learnable attention alpha is implemented, but off by default: on held-out photos it
    # gave no gain here (sface self-check 0.227 with vs 0.212 without) and made masks 25% larger.
    attention: bool = False
    attention_lr: float = 0.05  # z_alpha
    self_weight: float = 3.0  # pull away from the user's own clean embedding (OPOM's lesson; 3 beat 1 on held-out photos)
    diversity_prob: float = 1.0  # chance a view is randomly transformed at a step
    diversity_scale: float = 0.15
    diversity_shift: float = 0.06
    diversity_downsample: tuple[float, float] = (0.6, 1.0)
    # Alignment invariance (issue 12): each view is also rotated by up to this many degrees, as the
    # attacker's own landmarks (or an unaligned loose crop) tilt the face against our frame. 0 = off.
    diversity_rotation: float = 0.0
    # Upload invariance (issue 12): every view goes through a differentiable JPEG round trip at this
    # quality (optimise.transforms.jpeg_approx) before the surrogates see it. 0 = off.
    upload_jpeg: int = 0
    # Model augmentation (issue 12, SGM): the gradient through every residual branch of a surrogate is
    # scaled by this factor (models.onnx_torch.residual_gradient); forward values are unchanged.
    # 1.0 = plain autograd. Models without residual blocks (SFace) are unaffected.
    skip_gradient: float = 1.0
    # Spectrum simulation (issue 12, SSA): each view gets Gaussian pixel noise of ``spectrum_sigma`` and
    # random gains in [1 - rho, 1 + rho] on its DCT coefficients (optimise.transforms.spectrum_simulate)
    # before the surrogates see it, a new draw per step. 0 = off.
    spectrum_rho: float = 0.0
    spectrum_sigma: float = 8 / 255
    random_start: bool = True
    # Step in proportion to each pixel's budget (step at eps pixels, step * eps_A/eps at focus pixels):
    # with the paper's 10 iterations a flat 2/255 step can never reach a 32/255 budget.
    scale_step_with_budget: bool = True
    # Translation-invariant gradient (TI-FGSM): smoothing the gradient with a Gaussian favours
    # low-frequency perturbations, which transfer across architectures and survive JPEG/resizing.
    grad_sigma: float = 0.0
    # Per-surrogate loss balancing: each surrogate's input gradient is normalised to unit mean
    # magnitude before they are averaged, so a model with an easy (large) gradient cannot drown the
    # others. Off: the ensemble loss is averaged first and differentiated once.
    balance_surrogates: bool = False
    # Luminance first (issue 13): the per-pixel delta is split into its achromatic part (the mean of
    # R, G, B: the same grey shift on every channel) and the chroma residual (zero-sum over channels).
    # The luma part keeps the full per-pixel budget; the chroma part is held to ``chroma_ratio`` of it
    # (and to what the luma leaves), so the RGB delta still respects the L-inf budget. 1.0 is the
    # plain per-channel clip (independent RGB noise); 0.0 is a grey-only perturbation.
    chroma_ratio: float = 1.0
    # Visibility penalty (issue 13): each step descends the cloak loss plus this weight times the delta's
    # energy that passes FLIP's contrast-sensitivity filters (optimise.csf), both gradients normalised to
    # unit mean magnitude. Where the surrogates' gradient is weak the delta drifts to what the eye filters
    # out instead of saturating the budget. 0 = off.
    visibility_weight: float = 0.0
    # Mask sets (issue 14): when K members step together, the loss adds this weight times the mean cosine
    # similarity between the members' cloaked embeddings of each view, so they push a photo to mutually
    # distant places rather than along one shared direction that would link the user's cloaked photos.
    # Read only by a set's joint step; a single mask ignores it.
    member_separation: float = 3.0
    # Unlinkable single masks (issue 14): the loss adds this weight times the mean cosine similarity between
    # the cloaked embeddings of *different* views (for a set: any members), so the mask sends differently
    # posed, lit and compressed copies of the face to different places instead of one point that links every
    # cloaked photo of the user. Measured (docs/eval.md "Mask sets"): one mask at weight 3 links ~20 points
    # fewer same-person pairs for ~4-5 points of clean-gallery protection, at no extra cost. 0 = off.
    view_separation: float = 0.0
    # Reduced precision: the surrogates' forward and backward run in bfloat16 (PyTorch autocast: convolutions
    # and matrix products in bf16, their weights cast once per step); the loss, gradient, momentum and the
    # projection stay float32. On a CPU with AMX (Intel Sapphire Rapids and later) FaceNet's step runs 1.8x faster,
    # the default MobileFaceNets' no faster; without AMX bf16 is emulated. Measured in docs/eval.md
    # "Reduced precision and dead weights".
    bf16_surrogates: bool = False
    # oneDNN's float32 convolutions computed on bfloat16 inputs with float32 accumulation while the mask is learned
    # (facecloak.optimise.precision): a run-time mode, not baked, so the same compiled step serves both. On a CPU
    # with AMX the default ensemble's step runs ~1.2x faster at the same protection (100 people, docs/eval.md
    # "bfloat16 convolutions"). None (default): on where the CPU has bfloat16 units, float32 elsewhere.
    # Read by the PyTorch backends (eager and AOT) only.
    bf16_convolutions: bool | None = None

    def validate(self) -> None:
        if not 1 <= self.iterations <= 1000:
            raise BadOptionError(f"iterations must be in 1..1000, got {self.iterations}")
        if not 0 < self.step <= 1:
            raise BadOptionError(f"step must be in (0, 1], got {self.step}")
        if not 0 <= self.diversity_rotation <= 45:
            raise BadOptionError(f"diversity_rotation must be in [0, 45] degrees, got {self.diversity_rotation}")
        if not (self.upload_jpeg == 0 or 1 <= self.upload_jpeg <= 100):
            raise BadOptionError(f"upload_jpeg must be 0 (off) or a JPEG quality 1..100, got {self.upload_jpeg}")
        if not 0 < self.skip_gradient <= 1:
            raise BadOptionError(f"skip_gradient must be in (0, 1], got {self.skip_gradient}")
        if not 0 <= self.spectrum_rho <= 1:
            raise BadOptionError(f"spectrum_rho must be in [0, 1], got {self.spectrum_rho}")
        if not 0 <= self.spectrum_sigma <= 1:
            raise BadOptionError(f"spectrum_sigma must be in [0, 1], got {self.spectrum_sigma}")
        if not 0 <= self.grad_sigma <= 16:
            raise BadOptionError(f"grad_sigma must be in [0, 16] px, got {self.grad_sigma}")
        if not 0 <= self.visibility_weight <= 100:
            raise BadOptionError(f"visibility_weight must be in [0, 100], got {self.visibility_weight}")
        if not 0 <= self.member_separation <= 100:
            raise BadOptionError(f"member_separation must be in [0, 100], got {self.member_separation}")
        if not 0 <= self.view_separation <= 100:
            raise BadOptionError(f"view_separation must be in [0, 100], got {self.view_separation}")
        if not 0 <= self.chroma_ratio <= 1:
            raise BadOptionError(f"chroma_ratio must be in [0, 1], got {self.chroma_ratio}")

    def baked(self) -> tuple[tuple[str, float], ...]:
        """(field, value) pairs of the constants a step graph is specialised to."""
        return tuple((k, float(getattr(self, k))) for k in BAKED_FIELDS)


def with_given(cfg: PGDConfig, **fields: object) -> PGDConfig:
    """``cfg`` with the fields whose value is given (not None) replaced: options left unset keep the default."""
    return replace(cfg, **{k: v for k, v in fields.items() if v is not None})
