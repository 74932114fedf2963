"""The layers point one way: the import graph of normbench (imports inside functions included) has no loop,
the libraries (norms, models, data, metrics) know nothing of the run, and the report side starts without torch."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import normbench

PACKAGE = Path(normbench.__file__).parent
LIBRARIES = ("normbench.norms", "normbench.models", "normbench.data", "normbench.metrics")
# The run and everything above it: a library module importing any of these points up.
ABOVE_LIBRARIES = ("normbench.config", "normbench.train", "normbench.training", "normbench.run_facts",
                   "normbench.sweep", "normbench.report", "normbench.experiments", "normbench.cli",
                   "normbench.schema", "normbench.overrides")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: normbench modules it imports}, read from the source: every import statement, also in functions."""
    modules = _modules()

    def resolve(name: str) -> str | None:  # `normbench.norms.build_norm` -> the module `normbench.norms`
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(resolve(a.name) for a in node.names if a.name.startswith("normbench"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    head = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*head, base] if base else head)
                if base.startswith("normbench"):
                    targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else resolve(base)
                                   for a in node.names)
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    """`normbench.norms.batch` -> `normbench.norms`; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def test_cycle_finder_finds_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_module_import_graph_has_no_loop():
    graph = import_graph()
    assert len(graph) > 50 and "normbench.norms.batch" in graph["normbench.norms"]  # the graph was read
    assert cycles(graph) == []


def test_the_package_import_graph_has_no_loop():
    # The root package `normbench` (its lazy `run`/`load_config`) stands above everything and is left out.
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if module == "normbench":
            continue
        graph.setdefault(_package(module), set()).update(
            _package(t) for t in targets if t != "normbench" and _package(t) != _package(module))
    assert cycles(graph) == []


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_library_imports_nothing_of_the_run_or_above(library):
    graph = import_graph()
    upward = {f"{m} -> {t}" for m, targets in graph.items() if m == library or m.startswith(library + ".")
              for t in targets if t.startswith(ABOVE_LIBRARIES)}
    assert not upward


def _loaded_after(statement: str) -> list[str]:
    """The top-level modules loaded by `statement` in a fresh interpreter (normbench ones by full name)."""
    code = (f"import sys; {statement}; import json; "
            "print(json.dumps(sorted(k if k.startswith('normbench') else k.split('.')[0] for k in sys.modules)))")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_library_loads_without_hydra_lightning_or_the_run(library):
    loaded = set(_loaded_after(f"import {library}"))
    assert not loaded & {"lightning", "hydra", "omegaconf", "optuna", "wandb"}
    assert not {m for m in loaded if m.startswith(ABOVE_LIBRARIES)}


def test_the_report_commands_load_without_torch():
    loaded = set(_loaded_after("import normbench.cli, normbench.report.study, normbench.report.tables, "
                               "normbench.report.figures, normbench.report.dashboard, "
                               "normbench.experiments.reproduce"))
    assert "normbench.report.tables" in loaded  # the statement ran
    assert not loaded & {"torch", "lightning"}
    assert "normbench.config" not in loaded
