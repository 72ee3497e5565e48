"""A modality is one plug-in: outside ``jointspace/modalities/`` (and the towers, each
of which encodes one modality by definition) no module's code names a modality or
one of its file suffixes or shard keys, except the user-facing defaults it lists in
a module-level ``USER_FACING_DEFAULTS`` tuple (the anchor of ``--bind``, zero-shot's
class-name side, a legacy keyword argument …). Docstrings and comments may name them."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jointspace.modalities import MODALITIES

PACKAGE = Path(__file__).resolve().parents[1] / "jointspace"
#: the plug-ins themselves, and the towers (a tower declares the one modality it encodes)
PLUGIN_DIRS = ("modalities", "towers")


def forbidden_names() -> tuple[set[str], tuple[str, ...]]:
    """Exact strings (names, shard keys, suffixes with and without the dot) and the
    dotted suffixes a string may not end with."""
    exact: set[str] = set()
    suffixes: set[str] = set()
    for name in MODALITIES.names():
        m = MODALITIES.get(name)
        exact.add(m.name)
        exact.update(m.shard_keys)
        for s in m.suffixes:
            exact.update((s, s.lstrip(".")))
            suffixes.add(s)
    return exact, tuple(sorted(suffixes))


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _declared_defaults(tree: ast.Module) -> tuple[set[str], set[int]]:
    """The strings of the module's ``USER_FACING_DEFAULTS`` and the ids of their nodes."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "USER_FACING_DEFAULTS" for t in targets):
            nodes = [n for n in ast.walk(node.value) if isinstance(n, ast.Constant)]
            return {n.value for n in nodes if isinstance(n.value, str)}, {id(n) for n in nodes}
    return set(), set()


def naming_violations(source: str, exact: set[str], suffixes: tuple[str, ...]) -> list[tuple[int, str]]:
    """``(line, string)`` of each string literal in code that names a modality."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    allowed, declared = _declared_defaults(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if id(node) in skip or id(node) in declared:
            continue
        value = node.value
        if value in exact or value.lower().endswith(suffixes):
            if value not in allowed:
                found.append((node.lineno, value))
    return found


def package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.relative_to(PACKAGE).parts[0] not in PLUGIN_DIRS)


def test_no_module_outside_the_plugins_names_a_modality() -> None:
    exact, suffixes = forbidden_names()
    problems = [f"{p.relative_to(PACKAGE.parent)}:{line}: {value!r}"
                for p in package_modules()
                for line, value in naming_violations(p.read_text(encoding="utf-8"), exact, suffixes)]
    assert not problems, ("modality names in code outside the plug-ins (ask MODALITIES, or list a "
                          "user-facing default in the module's USER_FACING_DEFAULTS):\n"
                          + "\n".join(problems))


@pytest.mark.parametrize("source, expected", [
    ('if m == "audio":\n    pass\n', [(1, "audio")]),
    ('path = f"{key}.wav"\n', [(1, ".wav")]),
    ('name = "warm-up.JPG"\n', [(1, "warm-up.JPG")]),
    ('"""A docstring naming image and text."""\nx = 1\n', []),
    ('USER_FACING_DEFAULTS = ("image", "text")  # why\npair = ("image", "text")\n', []),
    ('USER_FACING_DEFAULTS = ("image",)\npair = ("image", "text")\n', [(2, "text")]),
    ('def f():\n    """image"""\n    return "image/jpeg"\n', []),
])
def test_the_scan_finds_names_in_code_only(source: str, expected: list[tuple[int, str]]) -> None:
    exact, suffixes = forbidden_names()
    assert naming_violations(source, exact, suffixes) == expected
