"""The package's import graph: layers import downwards only, and no module imports
itself back through others (lazy imports inside functions count: a cycle hidden by
laziness is still a cycle; imports under ``if TYPE_CHECKING:`` do not)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jointspace"

#: low to high; a module may import its own layer's modules and lower layers' only.
#: The root ``jointspace/__init__`` (the public API) and the CLI sit on top.
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(layer) for layer in (
    {"errors", "registry", "progress", "fileio", "config", "extras", "vectors", "devices", "version"},
    {"modalities"},
    {"data"},
    {"towers", "objectives"},
    {"model", "model_io"},
    {"eval", "model_import", "bulk_embed", "ray_embed"},
    {"train", "index"},
    {"serve", "demos", "demo", "demo_audio", "embed"},
    {"cli", "cli_search", "cli_embed", "__init__"},
))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph() -> dict[str, set[str]]:
    """module → the jointspace modules it imports (a package's ``__init__`` when the
    import names the package; the submodule when ``from pkg import submodule``)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and _under_type_checking(node, parents):
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    targets.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module}: its top-level name {top!r} is in no layer of tests/test_layout.py "
                         "LAYERS; place it there")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # a package's __init__ re-exporting its own submodules is not a cycle of design:
    # ``towers/__init__`` imports ``towers.vision``, which imports ``towers.base``
    # (and so runs ``towers/__init__`` first); what matters is submodule ↔ submodule
    out = {}
    for m, targets in graph.items():
        out[m] = {t for t in targets if not (m.startswith(t + ".") and t != "jointspace")}
    return out


def test_no_upward_imports() -> None:
    graph = import_graph()
    upward = sorted(f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
                    for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m))
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    found = cycles(_without_package_inits(import_graph()))
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycle_finder(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_the_graph_sees_lazy_imports_and_skips_type_checking(tmp_path: Path) -> None:
    # the checks would pass vacuously if function-level imports were missed
    graph = import_graph()
    assert "jointspace.modalities.base" in graph["jointspace.modalities"]
    assert all(not t.startswith("jointspace.model") or t.startswith("jointspace.model_")
               or t == "jointspace.modalities" or t.startswith("jointspace.modalities.")
               for t in graph["jointspace.model_io"])
