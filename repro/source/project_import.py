"""Import a project's own modules from the files that were hashed, and nothing else from its root. No torch.

A build used to put the project root first on `sys.path`, as `python -m` does
for the current folder. Then an untracked `jsonschema.py` at a stranger's root
ran in place of the library, and a poisoned `__pycache__/*.pyc` beside a hashed
`.py` ran instead of it. Here the root is never on the path. One finder, first
on `sys.meta_path`, answers for the project's own top-level names only:

- in a rebuild (`served` given: the files the lock hashes, with digests) it
  serves exactly those files, each read beneath the root without following a
  link, compiled from the very bytes whose sha256 matched the lock (no bytecode
  cache is read or written); any other module under those names is refused;
- in the user's own build (`served` None) it serves any `.py` file under the
  root for the names the root holds, the same way.

A root-level module that would shadow a standard-library or installed module
is refused before a build starts (`shadowing`, exit 2 naming it).

A `module.function` target is imported one way (`import_target`: its project file
found by path, the finder installed, the module's real file checked against it),
and judged one way (`defining_file`: the project file it is *defined* in, by its
`__module__` and `__qualname__`, the trust gate's rule); preprocess, stages,
dvc.yaml and the gate all go through them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from repro.canonical import sha256_bytes
from repro.errors import ConfigError, UserInputError
from repro.safeio import MAX_SOURCE_BYTES, open_beneath, printable, read_fd
from repro.syspath import off_path

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent  # the folder holding the repro package


class ProjectCodeError(UserInputError):
    """A project module the rebuild may not import: not hashed in the lock, or changed since."""


class ProjectFinder(importlib.abc.MetaPathFinder):
    """Finds the project's modules under `root`: only `served` files (with these digests) when given."""

    def __init__(self, root: Path, served: Mapping[str, str] | None) -> None:
        self.root = Path(os.path.realpath(root))
        self.served = None if served is None else dict(served)
        self.names = _top_names(self.root, self.served)

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in self.names:
            return None
        base = fullname.replace(".", "/")
        package, module = f"{base}/__init__.py", f"{base}.py"
        for rel, is_package in ((package, True), (module, False)):
            if self._has(rel):
                spec = importlib.machinery.ModuleSpec(fullname, _Loader(self, rel), origin=str(self.root / rel),
                                                      is_package=is_package)
                spec.has_location = True
                if is_package:
                    spec.submodule_search_locations = [str(self.root / base)]
                return spec
        if self._has_folder(base):  # a folder without __init__.py: a namespace package
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = [str(self.root / base)]
            return spec
        if self.served is not None:
            raise ProjectCodeError(f"{printable(module)}: the rebuild imports {printable(fullname)}, which is not a "
                                   "project file hashed in the lock (only those are imported)")
        return None

    def _has(self, rel: str) -> bool:
        if self.served is not None:
            return rel in self.served
        return os.path.isfile(self.root / rel)

    def _has_folder(self, rel: str) -> bool:
        if self.served is not None:
            return any(p.startswith(rel + "/") for p in self.served)
        return os.path.isdir(self.root / rel)


class _Loader(importlib.abc.Loader):
    """Compiles a project file from the bytes read (and, in a rebuild, checked) through one descriptor."""

    def __init__(self, finder: ProjectFinder, rel: str) -> None:
        self.finder, self.rel = finder, rel
        self._source: bytes | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module

    def exec_module(self, module: ModuleType) -> None:
        source = self._read()
        code = compile(source, str(self.finder.root / self.rel), "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, fullname: str) -> str:
        """For tracebacks and `inspect`: the text that was compiled."""
        return importlib.util.decode_source(self._read())

    def _read(self) -> bytes:
        if self._source is None:
            served = self.finder.served
            fd, st = open_beneath(self.finder.root, self.rel, "project source file", ProjectCodeError,
                                  links="refuse" if served is not None else "inside")
            try:
                raw = read_fd(fd, st, self.rel, "project source file", MAX_SOURCE_BYTES, ProjectCodeError)
            finally:
                os.close(fd)
            digest = sha256_bytes(raw) if served is not None else ""
            if served is not None and digest != served[self.rel]:
                raise ProjectCodeError(f"{printable(self.rel)}: its sha256 is {digest[:12]}…,"
                                       f" the lock hashed {served[self.rel][:12]}…; the rebuild imports only the "
                                       "files the lock hashes, as hashed")
            self._source = raw
        return self._source


def _top_names(root: Path, served: Mapping[str, str] | None) -> frozenset[str]:
    """The project's own top-level import names: of the served files, or of what the root holds.

    Never `repro` (the toolchain), and nothing for the user's own build when the root is
    the folder holding repro itself (a checkout's own examples, or site-packages for the
    embedded example): there the root stays on `sys.path` and its modules are installed ones.
    """
    if served is None and os.path.realpath(root) == str(_PACKAGE_PARENT):
        return frozenset()
    if served is not None:
        tops = {p.split("/", 1)[0].removesuffix(".py") for p in served if p.endswith(".py")}
    else:
        try:
            entries = os.listdir(root)
        except OSError:
            entries = []
        tops = {e.removesuffix(".py") for e in entries
                if (e.endswith(".py") and os.path.isfile(root / e)) or os.path.isdir(root / e)}
    return frozenset(t for t in tops if t.isidentifier() and t != "repro" and not _installed_elsewhere(t, root))


def install(root: Path, served: Mapping[str, str] | None = None) -> ProjectFinder:
    """Put the finder first on `sys.meta_path` (replacing one for another root) and the root off `sys.path`.

    The root stays on the path only where it is the folder holding repro itself (a
    checkout's own examples, or site-packages for the embedded example): that is
    the toolchain, which the user installed.
    """
    for old in [f for f in sys.meta_path if isinstance(f, ProjectFinder)]:
        sys.meta_path.remove(old)
    if os.path.realpath(root) != str(_PACKAGE_PARENT):
        off_path(root)
    finder = ProjectFinder(root, served)
    sys.meta_path.insert(0, finder)
    importlib.invalidate_caches()
    return finder


def importable(root: Path, served: Mapping[str, str] | None = None) -> ProjectFinder:
    """The one way a project's code becomes importable: the finder for `root`, installed unless it is already.

    With `served` (a rebuild's hashed files) it is installed anew, serving only those.
    """
    finder = installed_for(root)
    if finder is None or served is not None:
        finder = install(root, served)
    return finder


def installed_for(root: Path) -> ProjectFinder | None:
    """The finder already serving `root` in this process, if any."""
    real = Path(os.path.realpath(root))
    return next((f for f in sys.meta_path if isinstance(f, ProjectFinder) and f.root == real), None)


def shadowing(root: Path) -> list[str]:
    """Root-level modules (`NAME.py`, `NAME/__init__.py`) named like a standard-library or installed module."""
    found: list[str] = []
    real = Path(os.path.realpath(root))
    if real == _PACKAGE_PARENT:  # the toolchain's own folder: its modules are the installed ones
        return found
    try:
        entries = sorted(os.listdir(real))
    except OSError:
        return []
    for entry in entries:
        name = entry.removesuffix(".py")
        is_module = entry.endswith(".py") and os.path.isfile(real / entry)
        is_package = os.path.isfile(real / entry / "__init__.py")
        # `repro` itself is exempt: a copy of repro's own checkout is a project (its pipeline), and the
        # finder never serves that name from a root, so the installed repro is what runs.
        if (is_module or is_package) and name.isidentifier() and name != "repro" and _installed_elsewhere(name, real):
            found.append(entry + ("/__init__.py" if is_package else ""))
    return found


def refuse_shadowing(root: Path) -> None:
    """UserInputError (exit 2) naming the first root-level file that shadows another module."""
    shadows = shadowing(root)
    if shadows:
        name = shadows[0].removesuffix("/__init__.py").removesuffix(".py")
        where = "the standard library" if name in sys.stdlib_module_names or name in sys.builtin_module_names \
            else "an installed package"
        raise UserInputError(f"{printable(shadows[0])}: a module at the project root named like {where}'s "
                             f"{printable(name)}; the build would never import it, and a reader of the code would "
                             "think it does: rename it")


def _installed_elsewhere(name: str, root: Path) -> bool:
    """Whether `name` is a standard-library module or one importable from the path, outside `root`."""
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return True
    real_root = os.path.realpath(root).rstrip(os.sep) + os.sep
    entries = [p for p in sys.path if p and os.path.realpath(p) != real_root.rstrip(os.sep)]
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, entries)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    places = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])
    if not spec.origin and spec.submodule_search_locations is not None:
        return False  # only a namespace portion elsewhere: a regular module here is found first
    return any(p and not os.path.realpath(p).startswith(real_root) for p in places)


def module_files(module: str) -> tuple[str, str]:
    """The two files a module may be: `a/b.py` or `a/b/__init__.py`."""
    base = module.replace(".", "/")
    return f"{base}.py", f"{base}/__init__.py"


def relative_real(file: str | Path, root: Path) -> str | None:
    """`file`'s real path relative to the root's real path (POSIX), or None where it resolves outside the root."""
    real, real_root = os.path.realpath(file), os.path.realpath(root)
    if not real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    return Path(os.path.relpath(real, real_root)).as_posix()


def split_target(target: str, key: str) -> tuple[str, str]:
    """(module, attribute) of a `module.function` target; ConfigError naming config key `key` otherwise."""
    module, _, attr = target.rpartition(".")
    if not module or not attr or not all(p.isidentifier() for p in target.split(".")):
        raise ConfigError(f"config key {key}: {printable(repr(target))} is not a module.function path")
    return module, attr


def project_file(target: str, root: Path) -> str | None:
    """The project file of `module.function`'s module, found by path alone: nothing is imported.

    The first of `module_files` that is a regular file whose real path stays under the
    root, as that real path relative to the root's; None for a module that is not the
    project's (an installed one), or a target that is no `module.function` path. Asking
    the import system instead would run `a/__init__.py` to find `a.b`.
    """
    module = target.rpartition(".")[0]
    if not module or not all(p.isidentifier() for p in target.split(".")):
        return None
    for rel in module_files(module):
        candidate = Path(root, rel)
        if candidate.is_file() and (inside := relative_real(candidate, root)) is not None:
            return inside
    return None


def import_target(target: str, root: Path, key: str, served: Mapping[str, str] | None = None) -> Any:
    """Import `module.function` from the project (through the finder) or an installed package; return the callable.

    A module that is a project file by path (`project_file`) must be that very file once
    imported, by its real path; a missing module or function is a ConfigError naming `key`.
    `served`: a rebuild's hashed files, the only project files it may import.
    """
    module_name, attr = split_target(target, key)
    expected = project_file(target, root)
    importable(root, served)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"config key {key}: cannot import {module_name} from the project root ({exc})") from None
    file = getattr(module, "__file__", None)
    if expected is not None and (not isinstance(file, str) or relative_real(file, root) != expected):
        raise ConfigError(f"config key {key} {printable(repr(target))}: imported {printable(str(file))}, but the "
                          f"project file is {printable(expected)}")
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"config key {key} {printable(repr(target))}: {module_name} has no function {attr!r}")
    return fn


def defined_where(obj: Any) -> tuple[Any, str] | None:
    """(module, qualname) that `obj` says it was defined as, if they lead back to `obj` itself; else None.

    Only classes and functions count, and only at module level or nested in classes
    (no `<locals>`): `module.Outer.Inner` read attribute by attribute is `obj`.
    """
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return None
    module_name, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    if module is None or not isinstance(qualname, str) or "<" in qualname:
        return None
    found: Any = module
    for part in qualname.split("."):
        found = inspect.getattr_static(found, part, None)
    return (module, qualname) if found is obj else None


def defining_file(obj: Any, root: Path, served: Mapping[str, str] | None = None) -> str | None:
    """The project file `obj` is defined in (relative to the root), and one of `served` when given; else None.

    The trust gate's rule: a class or function whose `__module__` and `__qualname__`
    lead back to it (`defined_where`), in a module whose file's real path is under the
    root. A name that merely reaches a library object through a project module is not.
    """
    where = defined_where(obj)
    file = getattr(where[0], "__file__", None) if where else None
    rel = relative_real(file, root) if isinstance(file, str) else None
    return rel if rel is not None and (served is None or rel in served) else None
