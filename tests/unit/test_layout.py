"""The layout is the architecture (docs/architecture.md): these tests keep it so.

They read the imports of every module of ``cogman/`` with ``ast``, at module level (``TYPE_CHECKING``
blocks included, imports inside function bodies not), and fail on an import cycle between two units (a
unit is a top-level module of ``cogman/`` or a whole subpackage), on an import cycle between modules
anywhere, on a module over the size limit, and on a 13th file directly in ``cogman/``.

``python tests/unit/test_layout.py`` prints the cycles, for whoever is breaking one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cogman"
MAX_LINES = 350
#: Files allowed directly in cogman/ besides __init__.py and __main__.py.
MAX_TOP_LEVEL_FILES = 12


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run at import time or read by a type checker: the module body, and the bodies of its
    ``if``/``try``/``with`` blocks, but not functions or classes' methods."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If | ast.Try | ast.With):
            pending.extend(node.body)
            pending.extend(getattr(node, "orelse", []))
            pending.extend(getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)
        elif isinstance(node, ast.ClassDef):
            pending.extend(stmt for stmt in node.body if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The cogman modules ``name`` imports at module level. ``from pkg import sub`` counts as an import
    of the submodule when ``sub`` is one, else of the package itself."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _module_level_imports(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
            continue
        if node.level:
            base_parts = name.split(".") if is_package else name.split(".")[:-1]
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        if base not in known:
            continue
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            found.add(sub if sub in known else base)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def unit_of(module: str) -> str:
    """``cogman.app`` -> itself; ``cogman.backends.redis.queries`` -> ``cogman.backends``."""
    parts = module.split(".")
    if len(parts) == 1:
        return module
    top = ".".join(parts[:2])
    return top if (PACKAGE / parts[1]).is_dir() else module


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def unit_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for source, targets in edges.items():
        unit = unit_of(source)
        units.setdefault(unit, set()).update(unit_of(t) for t in targets if unit_of(t) != unit)
    return units


def test_no_cycle_between_units() -> None:
    """A subpackage, or a top-level module, never imports one that imports it back (directly or not)."""
    assert cycles(unit_graph(graph())) == []


def test_no_cycle_between_modules() -> None:
    """Within a package too: a backend's helper takes the connection and the keys, not the backend."""
    assert cycles(graph()) == []


def test_no_module_over_the_limit() -> None:
    too_long = {
        name: lines for name, path in modules().items() if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert too_long == {}


def test_few_files_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= MAX_TOP_LEVEL_FILES, top


def test_every_package_says_what_lives_there() -> None:
    """Each ``__init__.py`` opens with a docstring saying what lives there and what it may import."""
    silent = [
        module_name(init)
        for init in PACKAGE.rglob("__init__.py")
        if len((ast.get_docstring(ast.parse(init.read_text())) or "").split()) < 12
    ]
    assert silent == []


def test_the_checker_sees_a_cycle() -> None:
    """The checker itself: a two-unit cycle and a three-module cycle are found, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


if __name__ == "__main__":
    edges = graph()
    for component in cycles(unit_graph(edges)):
        print("unit cycle:", " ".join(component))
    for component in cycles(edges):
        print("module cycle:", " ".join(component))
