"""The house is layered: core <- engines <- apps, no import circles (static, over every import statement)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folder -> import name, as pyproject's package-dir maps them.
PACKAGES = {"cloak": "facecloak", "engines": "facecloak.engines", "export": "facecloak.export",
            "server": "facecloak.server", "clients": "facecloak.clients", "proto": "facecloak.proto"}
CORE = ("faces", "models", "views", "anchors", "optimise", "mask", "apply", "enroll")
NOT_FOR_CORE = ("facecloak.engines", "facecloak.export", "facecloak.server", "facecloak.clients")


def module_files() -> dict[str, Path]:
    modules = {}
    for folder, name in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if not any(p.endswith("_pb2") or p.endswith("_pb2_grpc") for p in parts):
                modules[".".join((name, *parts))] = path
    return modules


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Every facecloak module ``path`` imports, at any depth of the file (lazy imports count too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known and n != module)
    return found


def graph() -> dict[str, set[str]]:
    files = module_files()
    return {m: imports_of(m, p, set(files)) for m, p in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle() -> None:
    edges = graph()
    # A package's __init__ re-exporting its own modules is not a circle between modules.
    edges = {m: {n for n in targets if not m.startswith(n + ".")} for m, targets in edges.items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_core_imports_no_engines_export_server_or_clients() -> None:
    offenders = []
    for module, targets in graph().items():
        if module.split(".")[1:2] and module.split(".")[1] in CORE:
            offenders += [f"{module} -> {t}" for t in targets if t.startswith(NOT_FOR_CORE)]
    assert offenders == []


def test_engines_never_import_export() -> None:
    offenders = [f"{m} -> {t}" for m, targets in graph().items() if m.startswith("facecloak.engines")
                 for t in targets if t.startswith("facecloak.export")]
    assert offenders == []


def test_importing_the_engines_loads_no_export_module() -> None:
    engines = sorted(m for m in module_files() if m.startswith("facecloak.engines") and "arc2face" not in m)
    code = f"import sys; import {', '.join(engines)}; print(sorted(m for m in sys.modules if m.startswith('facecloak.export')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_checker_sees_a_circle_and_a_layer_breach() -> None:
    """The static graph is real: it finds a planted circle and the core's known imports."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    edges = graph()
    assert "facecloak.optimise" in edges["facecloak.enroll"]
    assert "facecloak.engines.graph_backend" in edges["facecloak.assemble"]  # a lazy import is seen
