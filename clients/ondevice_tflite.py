"""TFLite/LiteRT export of the add-and-clip op; runs INSIDE the separate litert venv (clients/make_litert_env.sh).

litert-torch cannot lower a dynamic-size ROI (symbolic arange/slice), so the .tflite has a fixed
(tile x tile) ROI input and the host tiles larger ROIs (ondevice_reference.run_tiled).
Usage: .venv-litert/bin/python -m facecloak.clients.ondevice_tflite OUT.tflite --mask-size 112 --tile 256
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .ondevice_op import AddAndClip, OpConfig, example_inputs


def export_tflite_here(path: str, config: OpConfig, tile: int) -> None:
    import litert_torch  # only present in the litert venv

    module = AddAndClip(config).eval()
    litert_torch.convert(module, example_inputs(config, tile, tile)).export(path)


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
