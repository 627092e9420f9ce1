"""Regenerate the committed Python stubs from proto/facecloak/v1/*.proto (reproducibly).

    python proto/generate.py          # rewrite proto/enrollment_pb2*.py(i)
    python proto/generate.py --check  # exit 1 if the committed stubs are stale

The stubs are committed so installs need no code generator; regenerate with the pinned
grpcio-tools (the `server` extra) and commit the result. protoc writes
``from facecloak.v1 import enrollment_pb2`` into the gRPC module; we rewrite it to the
package the stubs actually live in (``facecloak.proto``).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

PINNED_GRPCIO_TOOLS = "1.85.1"
HERE = Path(__file__).resolve().parent
SOURCES = ("facecloak/v1/enrollment.proto",)
PROTO_PACKAGE = "facecloak.v1"
PY_PACKAGE = "facecloak.proto"


def _generate(out: Path) -> dict[str, str]:
    """Run protoc (from grpcio-tools) into ``out``; return {file name: fixed-up text}."""
    try:
        from importlib.metadata import version

        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        sys.exit("grpcio-tools is not installed: pip install -e '.[server]'")
    if version("grpcio-tools") != PINNED_GRPCIO_TOOLS:
        sys.exit(f"grpcio-tools {version('grpcio-tools')} found; the stubs are generated with {PINNED_GRPCIO_TOOLS}")
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + [str(HERE / s) for s in SOURCES]) != 0:
        sys.exit("protoc failed")
    files = {}
    for path in sorted((out / PROTO_PACKAGE.replace(".", "/")).glob("*_pb2*")):
        text = path.read_text().replace(f"from {PROTO_PACKAGE} import", f"from {PY_PACKAGE} import")
        for module in {p.name.split(".")[0] for p in path.parent.glob("*_pb2.py")}:  # the classes' __module__
            text = text.replace(f"'{PROTO_PACKAGE}.{module}'", f"'{PY_PACKAGE}.{module}'")
        files[path.name] = text
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed stubs instead of writing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = _generate(Path(tmp))
    stale = []
    for name, text in files.items():
        target = HERE / name
        current = target.read_text() if target.exists() else ""
        if current == text:
            continue
        if args.check:
            stale.append(name)
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True), name, name, n=1))
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(HERE.parent)}")
    if stale:
        print(f"stale stubs: {', '.join(stale)}; run python proto/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
