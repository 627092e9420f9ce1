"""TFLite/LiteRT export of the on-device op; runs INSIDE the separate litert venv (clients/make_litert_env.sh).

litert-torch cannot lower a dynamic-size ROI (symbolic arange/slice), so the .tflite works on fixed
(tile x tile) ROI tiles and the host tiles larger ROIs (ondevice_reference.run_tiled). A tile does
not see the whole face, so the model holds three signatures instead of the fused op:

- ``sample``  (tile u8 (1, T, T, 3), matrix (2, 3) ROI -> mask, window (4,) = (tx, ty, W, H))
  -> this tile's share of the frame sample, (S, S, 3) float32; the host adds all tiles' shares.
- ``budget``  (frame (S, S, 3), mask (S, S, 3), budget (3,)) -> the mask clipped to the photo's budget.
- ``addclip`` (tile, clipped mask, matrix shifted to the tile) -> cloaked tile (unchanged add-and-clip).

All three are the modules the fused ONNX/Core ML op is built from (ondevice_op), with static shapes
only, so the TFLite path computes what the tested torch stages compute (tests run those stages
through run_tiled against the server apply).
Usage: .venv-litert/bin/python -m facecloak.clients.ondevice_tflite OUT.tflite --mask-size 112 --tile 256
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .ondevice_op import (
    AddAndClip, BudgetClip, FrameSample, OpConfig, budget_example_inputs, example_inputs, sample_example_inputs,
)

SIGNATURES = ("sample", "budget", "addclip")  # the order the host calls them in


def export_tflite_here(path: str, config: OpConfig, tile: int) -> None:
    import litert_torch  # only present in the litert venv

    converter = (
        litert_torch.signature("sample", FrameSample(config).eval(), sample_example_inputs(config, tile))
        .signature("budget", BudgetClip(config).eval(), budget_example_inputs(config))
        .signature("addclip", AddAndClip(config).eval(), example_inputs(config, tile, tile))
    )
    converter.convert().export(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--mask-size", type=int, default=112)
    parser.add_argument("--tile", type=int, default=256)
    args = parser.parse_args(argv)
    export_tflite_here(args.out, OpConfig(mask_size=args.mask_size, io_dtype="uint8", sampler="gather"), args.tile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
