"""The trust gate: which code a rebuild from a stranger's lock may run without asking.

A lock's config is a program: every `_target_` names a callable that Hydra will
import and call, with arguments that may hold further `_target_`s, and
`data.preprocess` names a function to run on the data. A full `repro verify`
runs that code by nature; this gate decides, before anything is imported from
the lock, whether it may do so without `--trust-code` (like transformers'
`trust_remote_code=True`). Allowed without asking:

- the project's own modules whose files are hashed in the lock (`inputs.code`,
  a stage record's `code` in `inputs.stages`, or the preprocess step's hashed
  file): the user chose to check out that project;
- public classes and functions defined in repro's own `repro.tasks`,
  `repro.models` and `repro.optim` (read from their source, not imported);
- `torch.nn` module classes, `torch.optim` optimizers and schedulers, and
  transformers model and config classes (checked by subclass, after importing
  the library itself: a name is never trusted because its module imports).

Everything else is listed with its position in the config. See docs/security.md.

verify's rebuild defers the library check to its build child (`check_deferred`,
first thing, before anything the lock names is imported): the child imports
torch anyway, and verify's own process then need not (~1 s).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from repro.errors import UserInputError
from repro.lock.types import Lock
from repro.safeio import printable

REPRO_COMPONENTS = ("repro.tasks", "repro.models", "repro.optim")
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """One callable a config names, where it is named, and whether the gate lets it run."""

    position: str  # dotted config key of the node holding `_target_`
    target: str
    trusted: bool
    why: str
    deferred: bool = False  # a library class, judged in the build child (`check_deferred`)

    def line(self) -> str:
        return f"{printable(self.position)}._target_ = {printable(self.target)}: {self.why}"


def targets(resolved: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (config position, `_target_` value) in a resolved config, nested ones included."""
    if isinstance(resolved, dict):
        if "_target_" in resolved:
            yield prefix or "(top level)", resolved["_target_"]
        for key, value in resolved.items():
            yield from targets(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(resolved, list):
        for i, value in enumerate(resolved):
            yield from targets(value, f"{prefix}[{i}]")


def review(lock: Lock, libraries: bool = True) -> list[Target]:
    """Judge every `_target_` in the lock's config (see the module doc); nothing from the lock is imported.

    Without `libraries`, a name under a library prefix is left undecided (`deferred`) and the
    library is not imported.
    """
    resolved = lock["inputs"]["config"]["resolved"]
    hashed = {f["path"] for f in lock["inputs"]["code"]["files"]}
    # A stage's code is hashed in its record, which the lock embeds (inputs.stages).
    hashed |= {f["path"] for r in lock["inputs"].get("stages", []) for f in r["code"]["files"]}
    pre: dict[str, Any] = dict(lock["inputs"]["data"].get("preprocess") or {})
    if isinstance(pre.get("file"), dict):
        hashed.add(pre["file"]["path"])
    out = []
    for position, target in targets(resolved):
        if not isinstance(target, str) or not _is_dotted(target):
            out.append(Target(position, repr(target), False, "not an import path (module.name)"))
            continue
        trusted, why = _judge(target, hashed, libraries)
        out.append(Target(position, target, bool(trusted), why, deferred=trusted is None))
    return out


def check(lock: Lock, trust_code: bool, defer_libraries: bool = False) -> list[Target]:
    """Raise UserInputError listing every untrusted target, unless `trust_code`; return the review.

    With `defer_libraries` (and no `trust_code`), library classes are left to `check_deferred`
    in the build child, unless something else is refused: then all are judged here, so the
    error names every target at once.
    """
    reviewed = review(lock, libraries=trust_code or not defer_libraries)
    untrusted = [t for t in reviewed if not t.trusted and not t.deferred]
    if untrusted and not trust_code:
        if any(t.deferred for t in reviewed):
            reviewed = review(lock)
            untrusted = [t for t in reviewed if not t.trusted]
        raise _refused(untrusted)
    return reviewed


def check_deferred(pending: list[tuple[str, str]]) -> None:
    """In the build child, before anything from the lock is imported: judge the library
    targets `check` deferred (config position, target); raise as `check` would."""
    untrusted = []
    for position, target in pending:
        library = _library_check(target)
        trusted, why = library(target) if library is not None else (False, "not in the safe library set")
        if not trusted:
            untrusted.append(Target(position, target, False, why))
    if untrusted:
        raise _refused(untrusted)


def _refused(untrusted: list[Target]) -> UserInputError:
    listed = "; ".join(t.line() for t in untrusted)
    return UserInputError(f"the lock's config names code outside the trusted set, which a rebuild would run: "
                          f"{listed}. Read it, then pass --trust-code to run it anyway")


def _is_dotted(target: str) -> bool:
    parts = target.split(".")
    return len(parts) >= 2 and all(p.isidentifier() for p in parts)


def _judge(target: str, hashed: set[str], libraries: bool = True) -> tuple[bool | None, str]:
    """(trusted, why); trusted is None for a library class left undecided (not `libraries`)."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):  # the longest module prefix that is a hashed project file
        module = parts[:i]
        for rel in ("/".join(module) + ".py", "/".join(module) + "/__init__.py"):
            if rel in hashed:
                return True, f"project code, hashed in the lock ({rel})"
    home, _, name = target.rpartition(".")
    if home in REPRO_COMPONENTS:
        if name in _defined_in(home):
            return True, f"repro's own {home.rsplit('.', 1)[1]}"
        return False, f"{name!r} is not a public class or function defined in {home}"
    library = _library_check(target)
    if library is not None:
        return library(target) if libraries else (None, "a library class, checked in the build child")
    return False, "not project code hashed in the lock, not repro's, not in the safe library set"


def _library_check(target: str) -> Callable[[str], tuple[bool, str]] | None:
    """The subclass check for a target under one of the safe libraries' prefixes, if it is under one."""
    return next((check for prefix, check in _LIBRARIES if target.startswith(prefix)), None)


@cache
def _defined_in(module: str) -> frozenset[str]:
    """Public top-level classes and functions defined (not imported) in one of repro's modules."""
    path = _PACKAGE_DIR / (module.split(".", 1)[1] + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(node.name for node in tree.body
                     if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"))


def _library_class(target: str, root: str, bases: Callable[[], tuple[type, ...]], what: str) -> tuple[bool, str]:
    """Import the library (not the target), walk the name through modules it already loaded, check the class."""
    import importlib

    try:
        importlib.import_module(root)
        kinds = bases()
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
    home = getattr(obj, "__module__", "") or ""
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


_LIBRARIES: tuple[tuple[str, Callable[[str], tuple[bool, str]]], ...] = (
    ("torch.nn.", lambda t: _library_class(t, "torch.nn", _torch_nn, "torch.nn module")),
    ("torch.optim.", lambda t: _library_class(t, "torch.optim", _torch_optim, "torch.optim optimizer or scheduler")),
    ("transformers.", lambda t: _library_class(t, "transformers", _transformers, "transformers model or config")),
)
