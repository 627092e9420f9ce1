# The two set-up commands (README): `make demo` and `make test`. Both install into .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch==2.13.0 FIRST: it is the CPU wheel on this disk; a looser pin pulls a multi-GB CUDA build.
install: $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,server,ondevice,eval,arc2face]"
	# insightface pins opencv-python + CPU onnxruntime, which would clobber ours: no deps (pure Python).
	$(BIN)/pip install -q --disable-pip-version-check --no-deps insightface==2.1

demo: install
	mkdir -p out
	$(BIN)/facecloak enroll ../shared/assets/faces/lfw/Tony_Blair/Tony_Blair_0001.jpg -o out/me.fcmask
	$(BIN)/facecloak apply out/me.fcmask ../shared/assets/faces/lfw/Tony_Blair/Tony_Blair_0002.jpg -o out/Tony_Blair_0002.cloaked.png

# The TFLite converter (litert-torch, ~1.2 GB, downgrades pydantic) lives in its own venv.
.venv-litert/bin/python:
	clients/make_litert_env.sh

test: install .venv-litert/bin/python
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

bench: install
	$(BIN)/python bench/enroll_bench.py
