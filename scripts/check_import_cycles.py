"""Fail on any import cycle between a package's modules, function-level imports included.

`lint-imports` checks the layers between repro's packages, but it does not look for a
cycle inside one package, and a cycle hidden in a function (`def f(): from .b import g`)
passes every linter while still tying two modules into one: neither can be read, tested
or moved without the other, and which one loads first decides whether an import works.
This script reads every `.py` file of the package with `ast` (nothing is imported or run)
and builds the graph from every import statement in it:

- at top level, inside functions and classes, and under `if TYPE_CHECKING:` too. A
  type-only import is still a dependency (mypy follows it, and a reader must open the
  other module to know the type); a type both modules need belongs in a module below both.
- `import repro.a.b` is an edge to `repro.a.b`; `from repro.a import b` is an edge to
  `repro.a.b` when `b` is a module, else to `repro.a` (the package's `__init__`);
  relative imports are resolved against the importing module's package.
- A package's `__init__.py` is the module named after the package (`repro.lock`): its own
  imports are edges like any module's. Importing `repro.lock.lockfile` is NOT an edge to
  `repro.lock`, although Python runs `repro/lock/__init__.py` first: counted, any
  `__init__` that imports one of its children would be a cycle by construction. A
  cycle through an `__init__` that does import something is still found, through that
  `__init__`'s own edges.
- Dynamic imports (`importlib.import_module(name)`) are not import statements and are not
  in the graph: `repro.cli` loads its commands that way, one way down.

Usage: `scripts/check_import_cycles.py [PACKAGE_DIR]` (default: this repository's
`repro/`). Exit 0 prints a one-line summary; exit 1 lists each cycle as a chain of module
names, then the import that makes each link (file:line, and where it sits).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    """One import statement from one package module to another."""

    source: str
    target: str
    path: str
    line: int
    where: str  # "top level", "function-level" or "TYPE_CHECKING"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Every `.py` file under `package_dir`, by its dotted module name."""
    base = package_dir.parent
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement in `tree`, with where it sits."""
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(nodes: list[ast.AST], where: str) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append((node, where))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(list(ast.iter_child_nodes(node)), "function-level")
            elif isinstance(node, ast.If) and _is_type_checking(node.test) and where == "top level":
                visit(list(node.body), "TYPE_CHECKING")
                visit(list(node.orelse), where)
            else:
                visit(list(ast.iter_child_nodes(node)), where)

    visit(list(tree.body), "top level")
    return found


def _deepest_module(dotted: str, known: dict[str, Path]) -> str | None:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in known:
            return name
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The package modules that one import statement in `module` loads."""
    if isinstance(node, ast.Import):
        return [t for alias in node.names if (t := _deepest_module(alias.name, known))]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        if node.level > 1:
            package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    targets = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        target = sub if sub in known else _deepest_module(base, known)
        if target:
            targets.append(target)
    return targets


def import_graph(package_dir: Path) -> tuple[dict[str, Path], list[Edge]]:
    """The package's modules and every import edge between two of them."""
    known = module_names(package_dir)
    edges = []
    for module, path in known.items():
        tree = ast.parse(path.read_bytes(), filename=str(path))
        for node, where in _imports(tree):
            for target in _targets(node, module, path.name == "__init__.py", known):
                if target != module:
                    shown = path.relative_to(package_dir.parent).as_posix()
                    edges.append(Edge(module, target, shown, node.lineno, where))
    return known, edges


def strongly_connected(nodes: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(succ.get(root, [])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(succ.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return components


def _shortest_path(start: str, goal: str, succ: dict[str, list[str]], inside: set[str]) -> list[str]:
    previous = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            break
        for child in succ.get(node, []):
            if child in inside and child not in previous:
                previous[child] = node
                queue.append(child)
    path = [goal]
    while path[-1] != start:
        path.append(previous[path[-1]])
    return path[::-1]


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Cycles that together use every edge inside a strongly connected component.

    Listing every simple cycle can grow exponentially; one shortest cycle through each
    edge that takes part in any cycle names every import that must go, and no more.
    """
    succ: dict[str, list[str]] = {}
    for edge in edges:
        if edge.target not in succ.setdefault(edge.source, []):
            succ[edge.source].append(edge.target)
    for children in succ.values():
        children.sort()
    found: dict[tuple[str, ...], list[str]] = {}
    for component in strongly_connected(sorted(succ), succ):
        inside = set(component)
        for source in component:
            for target in succ.get(source, []):
                if target not in inside:
                    continue
                chain = [source, *_shortest_path(target, source, succ, inside)]
                ring = chain[:-1]
                first = ring.index(min(ring))
                key = tuple(ring[first:] + ring[:first])
                found.setdefault(key, [*key, key[0]])
    return sorted(found.values())


def report(package_dir: Path) -> tuple[int, str]:
    """The exit code and the text to print for `package_dir`."""
    known, edges = import_graph(package_dir)
    found = cycles(edges)
    name = package_dir.name
    if not found:
        statements = {(e.path, e.line): e.where for e in edges}  # one per statement, however many names
        deferred = sum(w == "function-level" for w in statements.values())
        typing = sum(w == "TYPE_CHECKING" for w in statements.values())
        return 0, (
            f"{name}: no import cycle among {len(known)} modules ({len(statements)} import statements of "
            f"{name} modules: {deferred} function-level, {typing} under TYPE_CHECKING)"
        )
    by_link: dict[tuple[str, str], list[Edge]] = {}
    for edge in dict.fromkeys(edges):  # one line per statement, however many names it imports
        by_link.setdefault((edge.source, edge.target), []).append(edge)
    lines = [f"{name}: {len(found)} import cycle(s); move what both sides need into a module below both:"]
    for chain in found:
        lines.append("  " + " -> ".join(chain))
        for source, target in zip(chain, chain[1:], strict=False):
            for edge in by_link[(source, target)]:
                lines.append(f"      {source} -> {target}: {edge.path}:{edge.line} ({edge.where})")
    return 1, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent / "repro"
    parser.add_argument("package_dir", nargs="?", type=Path, default=default,
                        help="the package's folder (default: repro/)")
    args = parser.parse_args(argv)
    package_dir = args.package_dir.resolve()
    if not (package_dir / "__init__.py").is_file():
        print(f"{args.package_dir}: not a package (no __init__.py)", file=sys.stderr)
        return 2
    code, text = report(package_dir)
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
