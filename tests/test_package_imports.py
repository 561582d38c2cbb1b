"""The package's modules import each other without a cycle, counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "modeling_gpa"


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package by its ``__init__.py``)."""
    names = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in its file (``from . import x`` included)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules and module != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_cycles_are_found_in_a_graph_that_has_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_walk_sees_relative_and_function_level_imports():
    modules = module_names(PACKAGE)
    imports = imported_modules("modeling_gpa.training.trainer", modules["modeling_gpa.training.trainer"], modules)
    assert {"modeling_gpa.data.pipeline", "modeling_gpa.training.streaming"} <= imports


def test_no_module_of_the_package_takes_part_in_an_import_cycle():
    modules = module_names(PACKAGE)
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == []


def test_few_shot_selection_takes_tensors_and_loads_no_data():
    # Annotated images come from data.ground_truth.annotated_model_inputs, called by the scripts.
    modules = module_names(PACKAGE)
    for name in ("modeling_gpa.head_selection", "modeling_gpa.training.head_reselection"):
        imports = imported_modules(name, modules[name], modules)
        assert not {module for module in imports if module.startswith("modeling_gpa.data")}, name


def test_the_package_does_not_import_the_benchmarks_measuring_code():
    """`benchmarks/` is not installed with the package, so nothing in `modeling_gpa/` may import it."""
    importers = []
    for name, path in module_names(PACKAGE).items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            importers.extend(f"{name} imports {module}" for module in names if module.split(".")[0] == "benchmarks")
    assert importers == []
