"""A `_target_` node's keys against the signature of what it calls, before anything is built.

The user's own model and data groups are free-form: their keys are whatever the
constructor takes. So they are checked against that constructor: an unknown
keyword is refused naming the key and the nearest parameter, and a value whose
type contradicts a plain annotation (`channels: int` given `'abc'`) is refused
naming the key, the value and the expected type, all before training starts
instead of as a TypeError deep inside torch. Imports the target (it is about to
be built anyway), so this runs in the build process, after the trust gate.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any

from repro.errors import ConfigError
from repro.source.config import one_line
from repro.source.project_import import defining_file
from repro.source.schema import suggestion

# Hydra's own keys in a `_target_` node, never passed to the callable.
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
# The nodes a build instantiates: the model and task, the optimizer and scheduler (partials).
NODES = ("model", "task", "trainer.optimizer", "trainer.scheduler")
_ABSENT = object()
_REPRO = Path(__file__).resolve().parent.parent


def check_nodes(cfg: dict[str, Any], root: Path, where: Any = None) -> None:
    """Check every `_target_` node the build will instantiate (and the nodes nested in them).

    `where(key) -> str` names the file that sets a key (repro.source.composed.defined_in),
    when the composed files are known; else errors name the key alone.
    """
    for dotted in NODES:
        node: Any = cfg
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and "_target_" in node:
            check_node(node, dotted, root, where)


def check_node(node: dict[str, Any], key: str, root: Path, where: Any = None) -> None:
    """Raise ConfigError if `node`'s keys or values cannot be the call's arguments.

    Unknown and missing keywords are judged only for the project's own code and repro's,
    whose signatures are what they take; another library's may take more than it declares
    (transformers' configs keep any extra keyword), so only its annotations are held to.
    """
    for name, value in node.items():  # nested components are built first, so checked first
        if isinstance(value, dict) and "_target_" in value:
            check_node(value, f"{key}.{name}", root, where)
    target = locate(node["_target_"], key)
    own = any(defining_file(target, folder) is not None for folder in (root, _REPRO))  # the project's or repro's
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return
    params = sig.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    label = _label(node["_target_"], named)
    for name, value in node.items():
        if name in HYDRA_KEYS:
            continue
        if name not in named:
            if takes_any or not own:
                continue
            full = f"{key}.{name}"
            raise ConfigError(f"{_where(where, full)}: unknown key {full}: not a parameter of {label}"
                              f"{suggestion(full, tuple(f'{key}.{n}' for n in named))}")
        expected = _annotation(target, name, named[name])
        if expected is not _ABSENT and isinstance(value, (str, int, float, bool)) and \
                _accepts(expected, value) is False:
            raise ConfigError(f"config key {key}.{name}: expected {_type_text(expected)} ({label}), got {value!r} "
                              f"({type(value).__name__})")
    if own and not node.get("_partial_"):
        missing = [n for n, p in named.items() if p.default is p.empty and n not in node]
        if missing:
            raise ConfigError(f"config key {key}.{missing[0]}: missing; {label} needs it")


def locate(target: Any, key: str) -> Any:
    """What `_target_` names (Hydra's own lookup), or a ConfigError naming the key."""
    from hydra._internal.utils import _locate

    if not isinstance(target, str) or not target:
        raise ConfigError(f"config key {key}._target_: expected an import path, got {target!r}")
    try:
        return _locate(target)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raised on import
        raise ConfigError(f"config key {key}._target_: cannot import {target!r}: {one_line(exc)}") from None


def _where(where: Any, key: str) -> str:
    return str(where(key)) if where is not None else f"config key {key}"


def _label(target: str, named: dict[str, inspect.Parameter]) -> str:
    shown = ", ".join(n for n in named if n != "self")
    return f"{target}({shown})"


def _annotation(target: Any, name: str, param: inspect.Parameter) -> Any:
    """The parameter's annotation as a type, or _ABSENT when there is none or it cannot be evaluated."""
    if param.annotation is param.empty:
        return _ABSENT
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # a forward reference only a type checker can see: do not guess
        return param.annotation if not isinstance(param.annotation, str) else _ABSENT
    return hints.get(name, _ABSENT)


def _accepts(expected: Any, value: Any) -> bool | None:
    """Whether a plain config value fits an annotation; None when the annotation says nothing checkable."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        answers = [_accepts(a, value) for a in typing.get_args(expected)]
        return True if True in answers else None if None in answers else False
    if expected is typing.Any:
        return None
    if expected is type(None):
        return value is None
    kind = origin or expected
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in (str, Path):
        return isinstance(value, str)
    if kind in (list, tuple, dict, set, frozenset):
        return False  # a scalar where a collection is expected (collections themselves are not checked)
    return None


def _type_text(expected: Any) -> str:
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(expected))
    if expected is type(None):
        return "null"
    return getattr(expected, "__name__", str(expected))
