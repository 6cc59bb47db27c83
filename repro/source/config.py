"""Where a config comes from, and the typed values handed down from it. No torch.

`repro.source.compose` composes the Hydra config once; the rest of repro sees a
plain, fully resolved dict (what the lock records) and the small typed views
built from it below, read through `require` and `optional`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.environment.pins import BUILD_KEYS, build_value_types
from repro.errors import ConfigError

EMBEDDED_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# Keys that say where outputs go or how often to save progress, not what the
# outputs are: never hashed into the lock. Checkpoints do not change the bits
# (tests/test_resume.py proves it), so a run may change how often it saves.
NOT_HASHED = ("out_dir", "trainer.checkpoint_every", "trainer.keep_checkpoints")


@dataclass(frozen=True)
class ConfigSource:
    """Where a config came from, and the project root its paths are relative to."""

    config_dir: Path
    config_name: str
    root: Path
    embedded: bool


def find_config(config_dir: str | None, config_name: str, root: str | None, cwd: Path) -> ConfigSource:
    """Pick the project's config, or the embedded example when there is none.

    A project is a folder with `configs/<name>.yaml`; its root is that folder.
    The embedded example's root is the folder holding the `repro` package, so its
    data path `repro/examples/digits/digits.csv` is the same in a checkout and in
    an installed wheel.
    """
    if config_dir is not None:
        cdir = (cwd / config_dir).resolve()
        if not (cdir / f"{config_name}.yaml").is_file():
            raise ConfigError(f"--config-dir {config_dir}: no {config_name}.yaml in it")
        proj_root = (cwd / root).resolve() if root else cdir.parent
        return ConfigSource(cdir, config_name, proj_root, embedded=False)
    local = cwd / "configs"
    if (local / f"{config_name}.yaml").is_file():
        return ConfigSource(local.resolve(), config_name, (cwd / (root or ".")).resolve(), embedded=False)
    if not (EMBEDDED_CONFIG_DIR / f"{config_name}.yaml").is_file():
        raise ConfigError(f"--config-name {config_name}: no configs/{config_name}.yaml here and none embedded")
    pkg_root = EMBEDDED_CONFIG_DIR.parent.parent
    return ConfigSource(EMBEDDED_CONFIG_DIR, config_name, (cwd / root).resolve() if root else pkg_root, True)


def composition_error(exc: BaseException) -> str:
    """Hydra's error as one line; a missing group option names the group, the option and the choices.

    Hydra's own message for `model=nope` runs over many lines and ends with the
    search path, which `one_line` would cut to "Config search path:".
    """
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        options = sorted(exc.options or [])
        choices = f"one of {', '.join(options)}" if options else "an option of a group that has none"
        return f"config group {group}: no option {option!r}; expected {choices} (configs/{group}/NAME.yaml)"
    return one_line(exc)


def interpolation_in(node: Any, prefix: str = "") -> tuple[str, str] | None:
    """The first (dotted key, string) holding `${`, in key order; None if there is none.

    A resolved config holds values only. A string that still holds `${...}` would
    be resolved again by OmegaConf when Hydra instantiates the node, and an
    interpolation such as `${oc.create:...}` can build a `_target_` out of plain
    text: a lock's config must never carry one (see docs/security.md).
    """
    stack: list[tuple[str, Any]] = [(prefix, node)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if "${" in value:
                return where or "(top level)", value
        elif isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return None


def refuse_interpolations(resolved: dict[str, Any]) -> None:
    """ConfigError naming the first key whose resolved value still holds `${` (an escaped `\\${` in YAML),
    or a lone surrogate (a YAML `"\\ud800"` escape).

    The lock would record it, and no verify could accept that lock (`interpolation_in`).
    """
    found = interpolation_in(resolved)
    if found is not None:
        raise ConfigError(f"config key {found[0]}: {found[1][:80]!r} still holds `${{` after resolving; a resolved "
                          "config must hold values only (a lock refuses interpolations), so write it another way")
    from repro.safeio import lone_surrogate_at

    surrogate = lone_surrogate_at(resolved)
    if surrogate is not None:  # the lock could not be written as UTF-8, and no lock parser accepts one
        raise ConfigError(f"config: a lone surrogate (\\ud800-\\udfff) in {surrogate}; text must be valid Unicode")


def guard(source: ConfigSource) -> None:
    """Before Hydra composes a project's config: every YAML file bounded, no search path outside repro and the
    project (`repro.source.config_guard`). repro's own embedded configs are part of the toolchain."""
    from repro.source.config_guard import guard_config_dir

    if not source.embedded:
        guard_config_dir(source.config_dir, source.root)


def hashed_view(resolved: dict[str, Any]) -> dict[str, Any]:
    """The part of the config that decides the bits (what the lock stores)."""
    view = copy.deepcopy(resolved)
    for dotted in NOT_HASHED:
        *parents, leaf = dotted.split(".")
        node: Any = view
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return view


def one_line(exc: BaseException) -> str:
    """A Hydra error and its cause on one line: the cause says which argument or module is wrong."""
    text = (str(exc).strip() or type(exc).__name__).replace(", set env var HYDRA_FULL_ERROR=1 to see chained "
                                                             "exception.", "")
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text = f"{text.rstrip(':')}: {str(cause).strip()}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("full_key")]
    return " ".join(lines[:5])


# Groups and keys every build reads, checked (present) before anything is hashed or
# out_dir is locked; their values' types are checked by the typed views below.
REQUIRED_GROUPS = ("data", "model", "task", "trainer", "build")
REQUIRED_KEYS = ("seed", "model._target_", "task._target_", "trainer.optimizer._target_",
                 *(f"build.{key}" for key in BUILD_KEYS))


def require_keys(cfg: dict[str, Any]) -> None:
    """Raise ConfigError naming the first missing group, else the first missing key."""
    for group in REQUIRED_GROUPS:
        if not isinstance(cfg.get(group), dict):
            got = "missing" if group not in cfg else f"expected a mapping, got {cfg[group]!r}"
            raise ConfigError(f"config group {group}: {got}; add `- {group}: NAME` to the config's defaults list "
                              f"(a file configs/{group}/NAME.yaml) or define it inline")
    for key in REQUIRED_KEYS:
        require(cfg, key, object)


def require(cfg: dict[str, Any], dotted: str, kind: type | tuple[type, ...]) -> Any:
    """Fetch `a.b.c` from a resolved config, checking its type; name the key on error."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"config key {dotted}: missing")
        node = node[part]
    if kind is float and isinstance(node, int) and not isinstance(node, bool):
        node = float(node)
    if not isinstance(node, kind) or (isinstance(node, bool) and kind in (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(_type_name(k) for k in kind)
        raise ConfigError(f"config key {dotted}: expected {names}, got {node!r} ({_type_name(type(node))})")
    return node


# Keys that repro (not a `_target_`) reads, and the types their values must have. Checked
# up front, before any hashing or training, wherever the key is present: `trainer.lr=abc`
# is refused naming the key, the type and the value, instead of failing deep in torch.
VALUE_TYPES: dict[str, type | tuple[type, ...]] = {
    "seed": int, "out_dir": str, "code.include": (list, type(None)),
    "data.builder": str, "data.data_files": list, "data.test_fraction": float, "data.split_seed": int,
    "trainer.max_steps": int, "trainer.batch_size": int, "trainer.log_every": int, "trainer.num_workers": int,
    "trainer.shuffle": bool, "trainer.lr": float, "trainer.optimizer.lr": float,
    "trainer.checkpoint_every": int, "trainer.keep_checkpoints": int,
    **{f"build.{key}": kind for key, kind in build_value_types().items()},  # the pins' own types
}


def check_value_types(cfg: dict[str, Any]) -> None:
    """Raise ConfigError naming the first key of VALUE_TYPES whose value has the wrong type."""
    for dotted, kind in VALUE_TYPES.items():
        node: Any = cfg
        for part in dotted.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is not _ABSENT:
            require(cfg, dotted, kind)


_ABSENT = object()


def _type_name(kind: type) -> str:
    return "null" if kind is type(None) else kind.__name__


def optional(cfg: dict[str, Any], dotted: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """Like `require`, for keys a config may leave out; the default lives in the caller's schema."""
    parent, _, leaf = dotted.rpartition(".")
    node = require(cfg, parent, dict) if parent else cfg
    if leaf not in node or node[leaf] is None:
        return default
    return require(cfg, dotted, kind)


@dataclass(frozen=True)
class TrainerSpec:
    """The training loop's own knobs, checked once at start-up."""

    max_steps: int
    batch_size: int
    log_every: int
    num_workers: int
    shuffle: bool

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TrainerSpec:
        spec = cls(
            max_steps=require(cfg, "trainer.max_steps", int),
            batch_size=require(cfg, "trainer.batch_size", int),
            log_every=require(cfg, "trainer.log_every", int),
            num_workers=require(cfg, "trainer.num_workers", int),
            shuffle=require(cfg, "trainer.shuffle", bool),
        )
        for key in ("max_steps", "batch_size", "log_every"):
            if getattr(spec, key) < 1:
                raise ConfigError(f"config key trainer.{key}: expected >= 1, got {getattr(spec, key)}")
        if spec.num_workers < 0:
            raise ConfigError(f"config key trainer.num_workers: expected >= 0, got {spec.num_workers}")
        lr = optional(cfg, "trainer.lr", float, None)
        if lr is not None and not 0.0 < lr < float("inf"):
            raise ConfigError(f"config key trainer.lr: expected a positive learning rate, got {lr}")
        return spec


@dataclass(frozen=True)
class CheckpointSpec:
    """How often to checkpoint and how many to keep; `every == 0` means never."""

    every: int
    keep: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> CheckpointSpec:
        # These keys are not hashed, so a config rebuilt from a lock lacks them:
        # such a rebuild (verify) simply runs without checkpoints.
        if "checkpoint_every" not in require(cfg, "trainer", dict):
            return cls(every=0, keep=1)
        spec = cls(every=require(cfg, "trainer.checkpoint_every", int),
                   keep=require(cfg, "trainer.keep_checkpoints", int))
        if spec.every < 0:
            raise ConfigError(f"config key trainer.checkpoint_every: expected >= 0 (0 = off), got {spec.every}")
        if spec.keep < 1:
            raise ConfigError(f"config key trainer.keep_checkpoints: expected >= 1, got {spec.keep}")
        return spec
