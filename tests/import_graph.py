"""Which edgeface module imports which: read from the sources (ast), nothing imported.

Every ``import``/``from`` of an ``edgeface`` module is an edge, marked *lazy* when it sits inside a function (run
only when that function is) and *eager* at module level (run on import).  ``tests/test_layers.py`` asserts the
layering rules on this graph; run it as a script for the tables issue 24 asks for:

    python tests/import_graph.py                 # package graph, cycles, largest modules
    python tests/import_graph.py --modules       # every module's edgeface imports
    python tests/import_graph.py --json          # the whole graph as JSON
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# pyproject's package-dir: two top-level folders install inside the edgeface namespace.
PACKAGE_DIRS = {"edgeface": ROOT / "edgeface", "edgeface.converters": ROOT / "converters",
                "edgeface.devices": ROOT / "devices"}


@dataclass
class Module:
    """One source file: its dotted name, line count and the edgeface modules it imports."""

    name: str
    path: Path
    lines: int
    eager: set = field(default_factory=set)
    lazy: set = field(default_factory=set)


def _module_name(package: str, base: Path, path: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def modules() -> dict[str, Module]:
    """Every edgeface module in the source tree, keyed by dotted name."""
    found: dict[str, Module] = {}
    for package, base in PACKAGE_DIRS.items():
        for path in sorted(base.rglob("*.py")):
            if package == "edgeface" and path.relative_to(base).parts[0] in ("converters", "devices"):
                continue
            name = _module_name(package, base, path)
            text = path.read_text(encoding="utf-8")
            found[name] = Module(name, path, text.count("\n"))
    for mod in found.values():
        tree = ast.parse(mod.path.read_text(encoding="utf-8"))
        _collect(tree, mod, found, lazy=False)
    return found


def _target(name: str, known: dict[str, Module]) -> str | None:
    """The known module an imported dotted name lives in (``edgeface.runtime.capture.parse_source`` -> its module)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _collect(node: ast.AST, mod: Module, known: dict[str, Module], lazy: bool) -> None:
    for child in ast.iter_child_nodes(node):
        inside = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(child, ast.Import):
            names = [a.name for a in child.names]
        elif isinstance(child, ast.ImportFrom):
            base = _resolve(mod.name, mod.path.name == "__init__.py", child)
            names = [f"{base}.{a.name}" for a in child.names]
        else:
            _collect(child, mod, known, inside)
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue  # typing-only imports run never
        for imported in names:
            target = _target(imported, known)
            if target and target != mod.name:
                (mod.lazy if lazy else mod.eager).add(target)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def package_of(module: str) -> str:
    """The room a module belongs to: ``edgeface.runtime.capture.live`` -> ``runtime``; top-level files -> ``core``."""
    parts = module.split(".")
    if len(parts) <= 2 and not (len(parts) == 2 and _is_package_dir(parts[1])):
        return "core"
    return parts[1]


def _is_package_dir(name: str) -> bool:
    return (ROOT / "edgeface" / name).is_dir() or name in ("converters", "devices")


def package_graph(mods: dict[str, Module], lazy: bool = True) -> dict[str, set]:
    """Package -> packages it imports (eager only with ``lazy=False``)."""
    graph: dict[str, set] = defaultdict(set)
    for mod in mods.values():
        src = package_of(mod.name)
        graph[src]
        for target in mod.eager | (mod.lazy if lazy else set()):
            dst = package_of(target)
            if dst != src:
                graph[src].add(dst)
    return dict(graph)


def cycles(graph: dict[str, set]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan): groups that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set = set()
    out: list[list[str]] = []

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
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def module_graph(mods: dict[str, Module], lazy: bool = True) -> dict[str, set]:
    """Module -> modules it imports."""
    return {m.name: set(m.eager | (m.lazy if lazy else set())) for m in mods.values()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", action="store_true", help="every module's imports")
    ap.add_argument("--json", action="store_true", help="the whole graph as JSON")
    ap.add_argument("--top", type=int, default=15, help="how many of the largest modules to list")
    args = ap.parse_args()
    mods = modules()
    pkgs = package_graph(mods)
    if args.json:
        print(json.dumps({
            "modules": {m.name: {"lines": m.lines, "eager": sorted(m.eager), "lazy": sorted(m.lazy)}
                        for m in mods.values()},
            "packages": {k: sorted(v) for k, v in sorted(pkgs.items())},
            "package_cycles": cycles(pkgs),
            "module_cycles": cycles(module_graph(mods)),
        }, indent=2))
        return
    print(f"{len(mods)} modules, {sum(m.lines for m in mods.values())} lines")
    print("\npackage -> packages it imports (eager and lazy)")
    for src, dsts in sorted(pkgs.items()):
        eager = package_graph(mods, lazy=False).get(src, set())
        marks = [d if d in eager else f"{d}(lazy)" for d in sorted(dsts)]
        print(f"  {src:10s} -> {', '.join(marks) or '-'}")
    print(f"\npackage cycles: {cycles(pkgs) or 'none'}")
    print(f"module cycles:  {cycles(module_graph(mods)) or 'none'}")
    print(f"\nlargest {args.top} modules")
    for m in sorted(mods.values(), key=lambda m: -m.lines)[: args.top]:
        print(f"  {m.lines:5d}  {m.name}")
    if args.modules:
        print("\nmodule -> edgeface modules it imports (lazy ones in brackets)")
        for m in sorted(mods.values(), key=lambda m: m.name):
            deps = sorted(m.eager) + [f"[{d}]" for d in sorted(m.lazy - m.eager)]
            short = [d.replace("edgeface.", "") for d in deps]
            print(f"  {m.name.replace('edgeface.', '')}: {', '.join(short) or '-'}")


if __name__ == "__main__":
    main()
