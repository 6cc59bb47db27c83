"""`BuildSpec`: one build, resolved once, as a value.

`repro train` makes it from the composed config (`make_spec`), verify from a lock
(`repro.builder.rebuild.spec_from_lock`). The launching process hands it to the
build child as JSON, and the child reads it back (`BuildSpec.from_json`, every
field checked against its type) and builds from it alone: nothing after `make_spec`
re-reads a setting from the config, resolves a pin, derives `out_dir` or globs the
data again.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from repro.environment.pins import BUILD_KEYS, Pins, check_capability, resolve_pins
from repro.errors import ConfigError
from repro.source.components import Components
from repro.source.composed import ConfigFiles
from repro.source.config import (
    CheckpointSpec,
    TrainerSpec,
    check_value_types,
    refuse_interpolations,
    require,
    require_keys,
)
from repro.source.data import DataSpec
from repro.source.inputs import data_files
from repro.train.recipe import Recipe
from repro.train.resume import ResumeOptions
from repro.trust.release import ReleaseTerms

Gate = tuple[str, str, str]  # (config key, `_target_`, kind): one target the trust gate judges in the child


@dataclass(frozen=True)
class BuildSpec:
    """Everything one build needs; made once, in the process that parsed the command line."""

    resolved: dict[str, Any]  # the config as hashed (arbitrary JSON), every pin written back as a value
    recipe: Recipe  # what the loop reads: pins, trainer, data spec and files (globbed once), components, root
    checkpoint: CheckpointSpec
    out_dir: Path  # absolute
    resume: ResumeOptions = ResumeOptions()
    config: ConfigFiles = ConfigFiles()  # composed config files (named by errors); their code record
    rehash: bool = False  # read every data byte rather than trust the stat cache
    quiet: bool = True
    # verify's rebuild: the only project files it may import (None: any), the trust gate's
    # targets to judge on the imported objects, and a native build's CPU to insist on.
    served: dict[str, str] | None = None
    gate: tuple[Gate, ...] = ()
    expect_cpu: dict[str, Any] | None = None

    @property
    def pins(self) -> Pins:
        return self.recipe.pins

    @property
    def root(self) -> Path:
        return self.recipe.root

    def to_json(self) -> dict[str, Any]:
        """The spec file the build child reads (`from_json` is its inverse)."""
        return typing.cast(dict[str, Any], to_json(self))

    @classmethod
    def from_json(cls, raw: object) -> BuildSpec:
        """The spec back from its JSON, every field checked against its declared type (TypeError if not)."""
        return decode(cls, raw, "build spec")


def make_spec(resolved: dict[str, Any], root: Path, out_dir: Path, *, resume: ResumeOptions | None = None,
              config: ConfigFiles | None = None, rehash: bool = False, quiet: bool = True) -> BuildSpec:
    """Check every key a build reads, resolve the pins and glob the data: the one resolution of a build.

    A bad key is a ConfigError (exit 2) naming it, raised before anything is hashed
    or `out_dir` is locked. `root` and `out_dir` come resolved from the command line.
    """
    check_value_types(resolved)
    require_keys(resolved)
    refuse_interpolations(resolved)
    trainer, data = TrainerSpec.from_config(resolved), DataSpec.from_config(resolved)
    checkpoint, components = CheckpointSpec.from_config(resolved), Components.from_config(resolved)
    ReleaseTerms.from_config(resolved)  # a malformed licence or data location must not reach the lock
    pins = resolve_pins(require(resolved, "build", dict), require(resolved, "seed", int))
    check_capability(pins.cpu_capability)
    if trainer.batch_size % pins.world_size:  # each rank takes an equal, contiguous slice of every global batch
        raise ConfigError(f"trainer.batch_size={trainer.batch_size} is not divisible by "
                          f"build.world_size={pins.world_size}: every rank takes an equal slice of the global batch")
    resolved = with_pins(resolved, pins)
    recipe = Recipe(pins, trainer, data, components, data_files(resolved, root, data), root)
    return BuildSpec(resolved, recipe, checkpoint, out_dir, resume or ResumeOptions(), config or ConfigFiles(),
                     rehash, quiet)


def with_pins(resolved: Mapping[str, Any], pins: Pins) -> dict[str, Any]:
    """The config with every pin written as the value it resolved to: the one place pins enter a config.

    `auto` threads and a `native` capability become numbers and names, so the lock's
    config says what ran; a rebuild writes the lock's pins the same way.
    """
    out = copy.deepcopy(dict(resolved))
    out["build"].update({key: getattr(pins, key) for key in BUILD_KEYS})
    out["seed"] = pins.seed
    return out


def to_json(value: object) -> object:
    """A frozen dataclass (and what it holds) as JSON: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    return value


T = TypeVar("T")


def decode(cls: type[T], raw: object, where: str) -> T:
    """A frozen dataclass from JSON, each field checked against its annotation (TypeError naming it)."""
    if not isinstance(raw, dict):
        raise TypeError(f"{where}: expected an object")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # any frozen dataclass
    if unknown := sorted(set(raw) - names):
        raise TypeError(f"{where}: unknown field {unknown[0]!r}")
    values = {name: _decode(hints[name], raw[name], f"{where}.{name}") for name in names if name in raw}
    return cls(**values)


def _decode(hint: Any, value: object, where: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _decode(arg, value, where)
            except TypeError:
                continue
        raise TypeError(f"{where}: {value!r} is none of {args}")
    if origin is Literal:
        if value not in args:
            raise TypeError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise TypeError(f"{where}: expected a list")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise TypeError(f"{where}: expected {len(items)} items")
        return tuple(_decode(h, v, f"{where}[{i}]") for i, (h, v) in enumerate(zip(items, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where}: expected an object")
        return value if args[1] is Any else {k: _decode(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is Path:
        return Path(_decode(str, value, where))
    if isinstance(hint, type) and is_dataclass(hint):
        return decode(hint, value, where)
    if hint is type(None):
        if value is not None:
            raise TypeError(f"{where}: expected null")
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise TypeError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
    return value
