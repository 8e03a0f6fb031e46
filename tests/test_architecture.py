"""The layering of docs/architecture.md, checked on the source: no import cycles, one home per concept.

The import graph is read with ``ast`` from the files (every ``import``, also those inside
functions, since a lazy import is still a dependency), so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# package-dir mapping of pyproject.toml: the top-level kernels/src and export/src install inside histoaug
PACKAGE_DIRS = {"histoaug": REPO / "histoaug", "histoaug.kernels": REPO / "kernels" / "src",
                "histoaug.export": REPO / "export" / "src"}


def _module_files() -> dict[str, Path]:
    modules = {}
    for package, root in PACKAGE_DIRS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _module_files()


def _resolve(name: str) -> str | None:
    """The histoaug module an import names (``from pkg import sub`` may name a module or an attribute)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            if name.startswith("histoaug") and (target := _resolve(name)) and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    return {module: _imports(module, path) for module, path in MODULES.items()}


def layer(module: str) -> str:
    """``histoaug.synthesis.backends.x`` -> ``synthesis``; top-level modules are their own layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "histoaug"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _without_facade(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The package root ``histoaug/__init__.py`` re-exports the public API from every layer; it
    is the top of the graph, not a layer, so it is left out (nothing inside imports it)."""
    return {m: {t for t in targets if t != "histoaug"} for m, targets in graph.items() if m != "histoaug"}


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "histoaug.synthesis.synthesizer" in graph and "histoaug.export.artifact" in graph
    assert "histoaug.kernels.attention" in graph
    assert "histoaug.synthesis.model_source" in graph["histoaug.synthesis.synthesizer"]
    # a lazy import inside a function counts
    assert "histoaug.export.onnx_graphs" in graph["histoaug.export.artifact"]


def test_nothing_inside_imports_the_package_facade():
    importers = sorted(m for m, targets in import_graph().items() if "histoaug" in targets and m != "histoaug")
    assert importers == []


def test_no_import_cycle_between_modules():
    assert _cycles(_without_facade(import_graph())) == []


def test_no_import_cycle_between_subpackages():
    layers: dict[str, set[str]] = defaultdict(set)
    for module, targets in _without_facade(import_graph()).items():
        for target in targets:
            if layer(target) != layer(module):
                layers[layer(module)].add(layer(target))
    assert _cycles(layers) == []


def test_mixing_and_generation_do_not_import_each_other():
    graph = import_graph()
    crossing = sorted((m, t) for m, targets in graph.items() for t in targets
                      if {layer(m), layer(t)} == {"mixing", "generation"})
    assert crossing == []


def test_the_reader_study_sits_at_the_level_of_evaluation():
    """histoaug.study may use data, evaluation and the cross-cutting modules; only the CLI uses it."""
    graph = import_graph()
    allowed = {"study", "data", "evaluation", "atomic_files", "errors", "_version"}
    used = {layer(t) for m, targets in graph.items() if layer(m) == "study" for t in targets}
    assert used <= allowed, used - allowed
    users = {layer(m) for m, targets in graph.items() if layer(m) != "study" and any(layer(t) == "study"
                                                                                    for t in targets)}
    assert users <= {"cli"}, users
