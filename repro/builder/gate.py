"""The trust gate: which code a rebuild from a stranger's lock may run without asking.

A lock's config is a program: every `_target_` names a callable that Hydra will
import and call, with arguments that may hold further `_target_`s, and
`data.preprocess` names a function to run on the data; each stage record in
`inputs.stages` names the function `--from-source` runs. A full `repro verify`
runs that code by nature; this gate decides whether it may do so without
`--trust-code` (like transformers' `trust_remote_code=True`). It judges what a
name resolves to, never the name. Allowed without asking:

- a class or function *defined* in a project file the lock hashes (read with
  `ast`, nothing imported: `repro.builder.definitions`): `inputs.code` and the
  preprocess step's file for the config, the record's own `code` for a stage.
  `p.net.torch.save` is refused although `p/net.py` is hashed: it names torch's
  `save`, reached through an import;
- public classes and functions defined in repro's own `repro.tasks`
  and `repro.models` (read from their source, not imported);
- `torch.nn` module classes, `torch.optim` optimizers and schedulers, and
  transformers model and config classes, each the class itself (checked by
  subclass and by where it is defined, after importing the library only).

Everything else is listed with its position in the config. See docs/security.md.

Judging happens twice. verify's own process judges every name from source
(`check`), deferring the library classes when the child will judge them anyway
(importing torch here costs ~1 s). The build child, before anything from the
lock runs, imports each allowed target the way Hydra will (`_locate`, through the
finder that serves only hashed files) and judges the object it gets
(`check_located`): its `__module__` and `__qualname__` must lead back to it, in a
hashed project file or in repro, or it must be a safe library class.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from repro.builder.definitions import definition, reader
from repro.errors import ReproError, UserInputError
from repro.lock.types import Lock
from repro.safeio import printable
from repro.source.project_import import defined_where, defining_file

REPRO_COMPONENTS = ("repro.tasks", "repro.models")
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# A child's plan: (config position, target, kind), kind one of "project", "repro", "library".
Plan = list[tuple[str, str, str]]


@dataclass(frozen=True)
class Target:
    """One callable a lock names, where it is named, and whether the gate lets it run."""

    position: str  # dotted config key of the node holding `_target_`, or a stage record
    target: str
    trusted: bool
    why: str
    deferred: bool = False  # a library class, judged in the build child (`check_located`)
    kind: str = ""  # how the child judges it again: "project", "repro" or "library"
    key: str = "_target_"

    def line(self) -> str:
        return f"{printable(self.position)}.{self.key} = {printable(self.target)}: {self.why}"


def targets(resolved: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (config position, `_target_` value) in a resolved config, nested ones included.

    The `stages` group is left out: the training never instantiates it, and what
    `--from-source` runs is each stage *record's* target, judged on its own.
    """
    if isinstance(resolved, dict):
        if "_target_" in resolved:
            yield prefix or "(top level)", resolved["_target_"]
        for key, value in resolved.items():
            if prefix or key != "stages":
                yield from targets(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(resolved, list):
        for i, value in enumerate(resolved):
            yield from targets(value, f"{prefix}[{i}]")


def served_code(lock: Lock) -> dict[str, str]:
    """The project files a rebuild may import, with their digests: `inputs.code` and the preprocess file."""
    files = {f["path"]: f["hashes"]["sha256"] for f in lock["inputs"]["code"]["files"]}
    pre: dict[str, Any] = dict(lock["inputs"]["data"].get("preprocess") or {})
    if isinstance(pre.get("file"), dict):
        files[pre["file"]["path"]] = pre["file"]["hashes"]["sha256"]
    return files


def stage_code(record: Mapping[str, Any]) -> dict[str, str]:
    """The project files a stage may import when it runs again from its record."""
    return {f["path"]: f["hashes"]["sha256"] for f in record["code"]["files"]}


def review(lock: Lock, root: Path, libraries: bool = True) -> list[Target]:
    """Judge every `_target_` in the lock's config and every stage record's target; nothing from the lock is
    imported. Without `libraries`, a name under a library prefix is left undecided (`deferred`)."""
    code = served_code(lock)
    read = reader(root, code)
    out = [_judge(position, target, code, read, libraries)
           for position, target in targets(lock["inputs"]["config"]["resolved"])]
    for i, record in enumerate(lock["inputs"].get("stages", [])):
        files = stage_code(record)
        target = record["declared"]["target"]
        where_file, why = definition(target, files, reader(root, files)) if _is_dotted(target) else \
            (None, "not an import path (module.name)")
        out.append(Target(f"inputs.stages[{i}] (stage {record['stage']})", target, where_file is not None,
                          why if where_file else f"{why}: a stage runs only a function defined in its own hashed "
                                                 "code", kind="project", key="declared.target"))
    return out


def check(lock: Lock, root: Path, trust_code: bool, defer_libraries: bool = False) -> list[Target]:
    """Raise UserInputError listing every untrusted target, unless `trust_code`; return the review.

    With `defer_libraries` (and no `trust_code`), library classes are left to the
    build child (`check_located`), unless something else is refused: then all are
    judged here, so the error names every target at once.
    """
    reviewed = review(lock, root, libraries=trust_code or not defer_libraries)
    untrusted = [t for t in reviewed if not t.trusted and not t.deferred]
    if untrusted and not trust_code:
        if any(t.deferred for t in reviewed):
            reviewed = review(lock, root)
            untrusted = [t for t in reviewed if not t.trusted]
        raise _refused(untrusted)
    return reviewed


def child_plan(reviewed: list[Target], trust_code: bool) -> Plan:
    """What the build child judges again, as imported objects: every config target the gate let through.

    With `--trust-code` nothing is: the user accepted what the lock names.
    """
    if trust_code:
        return []
    return [(t.position, t.target, t.kind) for t in reviewed
            if (t.trusted or t.deferred) and t.key == "_target_"]


def check_located(plan: Plan, root: Path, served: Mapping[str, str] | None) -> None:
    """In the build child, before anything else from the lock runs: import each planned target as Hydra
    will (`_locate`) and judge the object; raise as `check` would.

    `served`: the project files the finder serves (`repro.source.project_import`); a
    project target must be defined in one of them.
    """
    from hydra._internal.utils import _locate

    untrusted = []
    for position, target, kind in plan:
        try:
            obj = _locate(target)
        except Exception as exc:  # Hydra wraps what went wrong (the finder refused a file) in an ImportError
            untrusted.append(Target(position, target, False, f"cannot be imported: {_cause(exc)}"))
            continue
        ok, why = _judge_object(obj, target, kind, root, served)
        if not ok:
            untrusted.append(Target(position, target, False, why))
    if untrusted:
        raise _refused(untrusted)


def _judge_object(obj: Any, target: str, kind: str, root: Path,
                  served: Mapping[str, str] | None) -> tuple[bool, str]:
    if kind == "project":
        rel = defining_file(obj, root, served)  # the one rule: preprocess and stages judge by it too
        if rel is None:
            home = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"
            return False, f"resolves to {home}, not a class or function defined in a project file hashed in the lock"
        return True, f"project code, defined in {rel}"
    where = defined_where(obj)
    if kind == "repro":
        if where is not None and where[0].__name__ in REPRO_COMPONENTS and "." not in where[1] \
                and where[1] in _defined_in(where[0].__name__):
            return True, "repro's own"
        return False, "not a public class or function defined in repro.tasks or repro.models"
    check_library = _library_check(target)
    if kind == "library" and check_library is not None:
        return check_library(obj)
    return False, "not project code hashed in the lock, not repro's, not in the safe library set"


def _cause(exc: BaseException) -> str:
    """The repro error behind an import failure (a project file not hashed, or changed), else its first line."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ReproError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def _refused(untrusted: list[Target]) -> UserInputError:
    listed = "; ".join(t.line() for t in untrusted)
    return UserInputError(f"the lock names code outside the trusted set, which a rebuild would run: "
                          f"{listed}. Read it, then pass --trust-code to run it anyway")


def _is_dotted(target: Any) -> bool:
    parts = target.split(".") if isinstance(target, str) else []
    return len(parts) >= 2 and all(p.isidentifier() for p in parts)


def _judge(position: str, target: Any, code: Mapping[str, str], read: Any, libraries: bool) -> Target:
    if not _is_dotted(target):
        return Target(position, printable(repr(target)), False, "not an import path (module.name)")
    file, why = definition(target, code, read)
    if file is not None:
        return Target(position, target, True, why, kind="project")
    home, _, name = target.rpartition(".")
    if home in REPRO_COMPONENTS:
        if name in _defined_in(home):
            return Target(position, target, True, f"repro's own {home.rsplit('.', 1)[1]}", kind="repro")
        return Target(position, target, False, f"{name!r} is not a public class or function defined in {home}")
    library = _library_check(target)
    if library is not None:
        if not libraries:
            return Target(position, target, False, "a library class, checked in the build child", deferred=True,
                          kind="library")
        trusted, why = _import_library_target(target, library)
        return Target(position, target, trusted, why, kind="library")
    return Target(position, target, False, f"not project code hashed in the lock ({why}), not repro's, not in the "
                                           "safe library set")


Judge = Callable[[Any], tuple[bool, str]]


def _library_check(target: str) -> Judge | None:
    """The judge of an object for a target under one of the safe libraries' prefixes, if it is under one."""
    return next((judge for prefix, judge in _LIBRARIES if target.startswith(prefix)), None)


def _import_library_target(target: str, judge: Judge) -> tuple[bool, str]:
    """Import the library (not the target), walk the name through modules it already loaded, judge the object."""
    root = target.split(".", 1)[0]
    try:
        importlib.import_module(root)
    except Exception as exc:  # the library is missing or broken: nothing can be vouched for
        return False, f"{root} could not be loaded to check it ({type(exc).__name__})"
    parts = target.split(".")
    obj: Any = None
    for i in range(len(parts) - 1, 0, -1):
        mod = sys.modules.get(".".join(parts[:i]))
        if mod is None:
            continue
        obj = mod
        try:
            for attr in parts[i:]:
                if attr.startswith("_"):
                    raise AttributeError(attr)
                obj = getattr(obj, attr)
        except Exception:  # transformers' lazy modules raise several kinds
            obj = None
        break
    return judge(obj)


@cache
def _defined_in(module: str) -> frozenset[str]:
    """Public top-level classes and functions defined (not imported) in one of repro's modules."""
    path = _PACKAGE_DIR / (module.split(".", 1)[1] + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(node.name for node in tree.body
                     if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"))


def _library_class(obj: Any, root: str, bases: Callable[[], tuple[type, ...]], what: str) -> tuple[bool, str]:
    """A class itself (not reached through another name), a proper subclass of `bases`, defined in `root`."""
    try:
        kinds = bases()
    except Exception as exc:  # the library is missing or broken: nothing can be vouched for
        return False, f"{root} could not be loaded to check it ({type(exc).__name__})"
    where = defined_where(obj)
    home = where[0].__name__ if where else ""
    if isinstance(obj, type) and issubclass(obj, kinds) and obj not in kinds and \
            (home == root or home.startswith(root + ".")):
        return True, what
    return False, f"not a {what} class"


def _torch_nn() -> tuple[type, ...]:
    import torch

    return (torch.nn.Module,)


def _torch_optim() -> tuple[type, ...]:
    import torch

    return (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)


def _transformers() -> tuple[type, ...]:
    import transformers

    return (transformers.PreTrainedModel, transformers.PretrainedConfig)


_LIBRARIES: tuple[tuple[str, Judge], ...] = (
    ("torch.nn.", lambda obj: _library_class(obj, "torch.nn", _torch_nn, "torch.nn module")),
    ("torch.optim.", lambda obj: _library_class(obj, "torch.optim", _torch_optim,
                                                "torch.optim optimizer or scheduler")),
    ("transformers.", lambda obj: _library_class(obj, "transformers", _transformers, "transformers model or config")),
)
