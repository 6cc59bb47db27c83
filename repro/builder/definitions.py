"""Where a dotted name is *defined* in a project's source, read with `ast`: nothing is imported.

The trust gate (`repro.builder.gate`) lets a lock's `_target_` run without
`--trust-code` only if it is a class or function written in a project file the
lock hashes. A name merely reachable from such a file is not enough:
`p.net.torch.save` is reachable from the hashed `p/net.py` (which imports
torch), but what it names is `torch.save`. So the name is followed through the
source: the longest module prefix that is a hashed file, then one `class` or
`def` per remaining part, nested classes included, with no other binding of
that name in the module (an assignment, an import, a `global`, a second `def`).
A re-export (`from .net import TinyNet` in `p/__init__.py`) is followed into the
hashed file it names. The build child checks the imported object again
(`gate.check_located`, by `repro.source.project_import.defining_file`): its `__module__` and
`__qualname__` must lead back to it.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from pathlib import Path

from repro.canonical import sha256_bytes
from repro.errors import UserInputError
from repro.safeio import MAX_SOURCE_BYTES, read_bytes
from repro.source.project_import import module_files

MAX_HOPS = 8  # re-exports followed from one file into the next
Read = Callable[[str], "ast.Module | str"]  # a hashed file's syntax tree, or why it cannot be judged


def definition(target: str, hashed: Mapping[str, str], read: Read) -> tuple[str | None, str]:
    """(the hashed file defining `target`, why) or (None, why not)."""
    parts = target.split(".")
    if any(p.startswith("__") for p in parts):
        return None, "reaches a dunder attribute"
    for i in range(len(parts) - 1, 0, -1):  # the longest module prefix that is a hashed project file
        module = ".".join(parts[:i])
        for rel in module_files(module):
            if rel in hashed:
                return _find(rel, module, parts[i:], hashed, read, 0)
    return None, "no prefix of it is a project file hashed in the lock"


def reader(root: Path, hashed: Mapping[str, str]) -> Read:
    """Parse each hashed file once, from bytes read beneath `root` whose sha256 must be the lock's."""
    cache: dict[str, ast.Module | str] = {}

    def read(rel: str) -> ast.Module | str:
        if rel not in cache:
            try:
                raw = read_bytes(rel, "project source file", MAX_SOURCE_BYTES, root=root)
            except UserInputError as exc:
                cache[rel] = f"cannot be read ({exc})"
                return cache[rel]
            if sha256_bytes(raw) != hashed[rel]:
                cache[rel] = f"{rel} differs from the lock's digest of it"
                return cache[rel]
            try:
                cache[rel] = ast.parse(raw, filename=rel)
            except (SyntaxError, ValueError) as exc:
                cache[rel] = f"{rel} does not parse ({type(exc).__name__})"
        return cache[rel]

    return read


def _find(rel: str, module: str, names: list[str], hashed: Mapping[str, str], read: Read,
          hops: int) -> tuple[str | None, str]:
    tree = read(rel)
    if isinstance(tree, str):
        return None, tree
    body: list[ast.stmt] = tree.body
    for k, name in enumerate(names):
        bound = _bindings(body, name)
        if len(bound) != 1:
            why = "is not defined there" if not bound else "is bound more than once there"
            return None, f"{'.'.join(names[: k + 1])} {why} ({rel})"
        node = bound[0]
        if isinstance(node, ast.ImportFrom) and k == 0 and hops < MAX_HOPS:
            origin = _absolute(module, rel, node)
            alias = next(a for a in node.names if (a.asname or a.name) == name)
            for nxt in module_files(origin) if origin else ():
                if origin and nxt in hashed:
                    return _find(nxt, origin, [alias.name, *names[1:]], hashed, read, hops + 1)
            return None, f"{name} is imported into {rel} from {origin or 'a relative module'}, not a hashed file"
        last = k == len(names) - 1
        if isinstance(node, ast.ClassDef) and not last:
            body = node.body
            continue
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and last:
            return rel, f"project code, defined in {rel} (hashed in the lock)"
        return None, f"{'.'.join(names[: k + 1])} is not a class or function written in {rel}"
    return None, "names a module, not a class or function"


def _absolute(module: str, rel: str, node: ast.ImportFrom) -> str | None:
    """The module an ImportFrom reads from, made absolute against `module` (a package if `rel` is __init__.py)."""
    if node.level == 0:
        return node.module
    package = module.split(".") if rel.endswith("/__init__.py") else module.split(".")[:-1]
    if node.level - 1 >= len(package):  # beyond the top-level package: Python refuses it too
        return None
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])]) or None


def _bindings(body: list[ast.stmt], name: str) -> list[ast.stmt]:
    """Every statement in a module or class body (compound statements searched) that binds `name`."""
    found: list[ast.stmt] = []
    for st in body:
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if st.name == name:
                found.append(st)
            if any(isinstance(n, ast.Global) and name in n.names for n in ast.walk(st)):
                found.append(st)  # `global name` in a function: it may rebind the name when called
            continue
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            found += [st for a in st.names if (a.asname or a.name.split(".")[0]) == name]
            continue
        for node in ast.walk(st):
            if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, (ast.Store, ast.Del)):
                found.append(st)
                break
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
                found.append(st)  # a def inside if/try/with: defined, but not unconditionally
                break
            if isinstance(node, (ast.Import, ast.ImportFrom)) and \
                    any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                found.append(st)
                break
    return found
