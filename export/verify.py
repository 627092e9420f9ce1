"""Built-in verification of exported graphs: ONNX Runtime against PyTorch on real aligned faces.

- Surrogates: ORT embeddings vs ``torch_embedder`` (max abs difference <= 1e-4), at two batch sizes
  (the batch dimension is dynamic).
- Step graph: ORT's normalised input gradient (``new_velocity`` from a zero velocity) vs the same
  ``pgd_step`` evaluated in float64 (sign agreement >= 99.9 %, relative L2 <= 1e-3), and the loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from facecloak.assets import assets_dir
from facecloak.errors import FaceCloakError
from facecloak.faces import AlignedFrame, FaceDetector, align_largest_face, to_chw_float
from facecloak.imageio import read_image
from facecloak.engines.manifest import Artefact
from facecloak.models import get_card, ort_embedder, torch_embedder
from facecloak.views import AugmentViews, ViewRequest

from .step_graph import STATE_INPUTS, STEP_OUTPUTS, StepSpec, example_inputs, pgd_from_baked, step_function
from .surrogates import INPUT_NAME

EMBED_TOLERANCE = 1e-4
SIGN_AGREEMENT = 0.999
# Measured on real LFW views with diversity (docs/export.md): PyTorch eager float32 itself is at
# ~1.0e-3 from float64 here (PReLU/ReLU kinks), ORT's fused CPU kernels at ~3e-3; 1e-3 would reject
# PyTorch's own float32 gradient, so the bar sits just above what a correct fp32 graph reaches.
GRAD_REL_L2 = 5e-3
# Real LFW people: the user whose views are cloaked, and two others whose embeddings act as anchors.
USER_PHOTO = "faces/lfw/Tony_Blair/Tony_Blair_0001.jpg"
ANCHOR_PHOTOS = ("faces/lfw/Serena_Williams/Serena_Williams_0001.jpg", "faces/lfw/Hu_Jintao/Hu_Jintao_0001.jpg")


class VerificationError(FaceCloakError):
    """An exported graph disagrees with PyTorch beyond tolerance: it must not be shipped."""

    reason = "EXPORT_MISMATCH"
    exit_code = 10


@dataclass(frozen=True)
class RealFaces:
    """Aligned real LFW faces at the frame size, (N, 3, S, S) float32 in [0, 1]."""

    user: np.ndarray  # (1, 3, S, S) the clean enrollment crop
    views: np.ndarray  # (V, 3, S, S) augmented views of the user
    others: np.ndarray  # (2, 3, S, S) two other people


@lru_cache(maxsize=4)
def real_faces(views: int, size: int = 112, seed: int = 0) -> RealFaces:
    detector = FaceDetector()
    frame = AlignedFrame(size=size)
    photo = read_image(assets_dir() / USER_PHOTO)
    aligned = align_largest_face(detector, photo, frame)
    generated = AugmentViews().generate(ViewRequest(photo, aligned.face, frame, views, seed))
    others = np.stack([align_largest_face(detector, read_image(assets_dir() / p), frame).crop for p in ANCHOR_PHOTOS])
    return RealFaces(to_chw_float(aligned.crop[None]), np.ascontiguousarray(generated, np.float32), to_chw_float(others))


def _session(path: Path):  # noqa: ANN202 - onnxruntime.InferenceSession
    import onnxruntime as ort  # only when verifying: AOT preparation on a plain install needs no ONNX Runtime

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def verify_surrogate(name: str, path: Path, size: int = 112) -> dict[str, float]:
    """Max |ORT - torch| over real faces at batch 1 and 4; raises ``VerificationError`` above 1e-4."""
    faces = real_faces(3, size)
    batch = np.concatenate([faces.user, faces.views])
    session = _session(path)
    with torch.no_grad():
        reference = torch_embedder(name)(torch.from_numpy(batch)).numpy()
    got = np.concatenate([session.run(None, {INPUT_NAME: batch[:1]})[0], session.run(None, {INPUT_NAME: batch})[0]])
    error = float(np.abs(got - np.concatenate([reference[:1], reference])).max())
    if not error <= EMBED_TOLERANCE:
        raise VerificationError(f"{path.name}: embeddings differ from PyTorch by {error:.2e} (> {EMBED_TOLERANCE})")
    return {"max_abs_error": error, "batches": [1, len(batch)]}


def real_step_inputs(spec: StepSpec, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Step inputs on real data: views of a real face, anchors and user embeddings from real faces."""
    faces = real_faces(spec.views, spec.size, seed)
    inputs = list(example_inputs(spec, seed))
    inputs[3] = torch.from_numpy(faces.views)
    anchors = []
    for name in spec.models:
        embed = ort_embedder(name)
        near, far = embed(faces.others)
        if spec.members:  # a set: member k pulls towards one real identity and away from the other, alternating
            near, far = np.stack([(near, far)[k % 2] for k in range(spec.members)]), np.stack([(far, near)[k % 2] for k in range(spec.members)])
        anchors += [torch.from_numpy(v) for v in (near, far, embed(faces.user)[0])]
    return (*inputs[: len(STATE_INPUTS)], *anchors)


def float64_reference(spec: StepSpec, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``pgd_step`` in float64 (embedders and inputs promoted), the accuracy yardstick for exports."""
    embedders = {name: copy.deepcopy(torch_embedder(name)).double() for name in spec.models}
    return step_function(spec, embedders)(*(t.double() for t in inputs))


def compare_step(outputs: dict[str, np.ndarray], reference: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Agreement figures of a step's outputs with the float64 reference (gradient = new_velocity)."""
    ref = dict(zip(STEP_OUTPUTS, (t.numpy() for t in reference)))
    grad, ref_grad = outputs["new_velocity"].astype(np.float64), ref["new_velocity"]
    return {
        "grad_sign_agreement": float((np.sign(grad) == np.sign(ref_grad)).mean()),
        "grad_rel_l2": float(np.linalg.norm(grad - ref_grad) / np.linalg.norm(ref_grad)),
        "delta_agreement": float(np.isclose(outputs["new_delta"], ref["new_delta"], atol=1e-6).mean()),
        "loss_abs_error": float(abs(float(outputs["loss"]) - float(ref["loss"]))),
    }


def verify_step(spec: StepSpec, path: Path) -> dict[str, float]:
    """Run the exported step with ORT on real inputs; raises ``VerificationError`` out of tolerance."""
    inputs = real_step_inputs(spec)
    session = _session(path)
    outputs = dict(zip(STEP_OUTPUTS, session.run(list(STEP_OUTPUTS), {n: t.numpy() for n, t in zip(spec.input_names(), inputs)})))
    figures = compare_step(outputs, float64_reference(spec, inputs))
    if figures["grad_sign_agreement"] < SIGN_AGREEMENT or not figures["grad_rel_l2"] <= GRAD_REL_L2:
        raise VerificationError(f"{path.name}: gradient sign agreement {figures['grad_sign_agreement']:.5f} "
                                f"(need >= {SIGN_AGREEMENT}), relative L2 {figures['grad_rel_l2']:.2e} (need <= {GRAD_REL_L2})")
    return figures


def model_hash_inputs(models: tuple[str, ...]) -> dict[str, str]:
    """Model name -> asset path of its source ONNX file (what the manifest hashes)."""
    return {name: str(assets_dir() / get_card(name).file) for name in models}


# Reduced-precision engines are accepted when they stay this close to ONNX Runtime in fp32.
ENGINE_MIN_COSINE = 0.999
ENGINE_SIGN_AGREEMENT = 0.99


def engine_agreement(engine_path: Path, engine: Artefact) -> dict:
    """A TensorRT engine vs ONNX Runtime fp32 on real faces; ``ok`` says whether its precision holds."""
    import tensorrt as trt

    from facecloak.engines.tensorrt_runtime import TensorRTEngine, cuda_runtime

    run = TensorRTEngine(trt, trt.Runtime(trt.Logger(trt.Logger.WARNING)), engine_path, cuda_runtime())
    session = _session(engine_path.parent.parent / engine.attributes["onnx"])
    if engine.kind == "surrogate":
        faces = real_faces(3, engine.attributes["size"])
        batch = np.concatenate([faces.user, faces.views])
        got, ref = run({INPUT_NAME: batch})[session.get_outputs()[0].name], session.run(None, {INPUT_NAME: batch})[0]
        cosine = float((got * ref).sum(1).min())
        return {"ok": cosine >= ENGINE_MIN_COSINE, "min_cosine_vs_ort": cosine}
    spec = StepSpec(tuple(engine.models), engine.attributes["views"], engine.attributes["size"],
                    pgd_from_baked(engine.attributes["pgd"]))
    feeds = {n: t.numpy() for n, t in zip(spec.input_names(), real_step_inputs(spec))}
    got = run(feeds)
    ref = dict(zip(STEP_OUTPUTS, session.run(list(STEP_OUTPUTS), feeds)))
    agreement = float((np.sign(got["new_velocity"]) == np.sign(ref["new_velocity"])).mean())
    return {"ok": agreement >= ENGINE_SIGN_AGREEMENT, "grad_sign_agreement_vs_ort": agreement,
            "loss_abs_error": float(abs(got["loss"] - ref["loss"]))}
