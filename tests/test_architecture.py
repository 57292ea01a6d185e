"""The package's shape, computed from its source: no import cycles, one home for HDF5."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "featcache"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """featcache modules `name` imports anywhere in its file (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            bases = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            bases = [(base, [alias.name for alias in node.names])]
        else:
            continue
        for base, names in bases:
            if not base.startswith("featcache"):
                continue
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            targets.update(subs or [base])
            if subs and len(subs) < len(names):
                targets.add(base)
    targets.discard(name)
    return {t for t in targets if t in modules}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "featcache.extract.run" in graph and "featcache.cache" in graph["featcache.extract.run"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_h5py_is_imported_only_under_featcache_cache():
    users = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == "h5py" or m.startswith("h5py.") for m in mods):
                users.append(name)
    assert users and all(u.startswith("featcache.cache.") for u in users), users


def test_the_cache_package_imports_nothing_above_it():
    graph = import_graph()
    allowed = ("featcache.cache", "featcache.errors", "featcache.fileio", "featcache.fingerprint",
               "featcache._version")
    for name, targets in graph.items():
        if name.startswith("featcache.cache"):
            assert all(t.startswith(allowed) for t in targets), (name, targets)
