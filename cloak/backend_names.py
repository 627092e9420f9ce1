"""The optimise backends by name. A light module: the command lines read it to build their options.

"auto" is the backend measured fastest on a CPU host (bench/enroll_bench.py): the AOT-compiled step,
prepared into the user cache on first use, falling back to "torch-cpu" (PyTorch eager, the reference)
with one line saying why. "aot-cpu", "ort-cpu", "ort-cuda" and "tensorrt" run exported steps.
"""

AUTO = "auto"
BACKENDS = (AUTO, "torch-cpu", "aot-cpu", "ort-cpu", "ort-cuda", "tensorrt")
PYTORCH_BACKENDS = ("torch-cpu", "aot-cpu")  # run the convolutions on PyTorch's oneDNN (they honour bf16_convolutions)
BACKEND_ENV = "FACECLOAK_BACKEND"  # the command line's default backend
