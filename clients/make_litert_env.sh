#!/usr/bin/env bash
# Build the separate virtualenv used only for the TFLite/LiteRT export of the on-device op.
#
# Why separate: litert-torch pulls ~1.2 GB (jax, transformers, tf-lite converter) and downgrades
# pydantic, which the server environment must not see. The main venv keeps only the small
# ai-edge-litert interpreter (extra "ondevice") to *run* the .tflite in tests.
#
# Usage: clients/make_litert_env.sh [VENV_DIR]   (default: .venv-litert in the repository root)
# Then:  facecloak-export ondevice --litert-python VENV_DIR/bin/python ...  (or set FACECLOAK_LITERT_PYTHON)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$ROOT/.venv-litert}"
PY="${PYTHON:-python3.11}"

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# torch FIRST and pinned: litert-torch accepts torch<2.15, and an unpinned resolve would fetch a CUDA build.
"$VENV/bin/pip" install -q "torch==2.13.0"
"$VENV/bin/pip" install -q "litert-torch==0.10.0"
# Our own package without its server dependencies: the exporter only needs facecloak.clients.ondevice_op.
"$VENV/bin/pip" install -q --no-deps -e "$ROOT"
"$VENV/bin/python" - <<'PY'
import torch, litert_torch
print("litert env ready: torch", torch.__version__, "litert_torch", getattr(litert_torch, "__version__", "?"))
PY
