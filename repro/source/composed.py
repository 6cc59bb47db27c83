"""Which config files Hydra composed, and which groups it can choose from. No torch.

A build's config is source like its code: the lock records the project's
config files that were composed (`inputs.code`), `repro dvc-yaml` makes DVC
depend on them, a typo is named by the file that holds it, and `repro train
--help` lists every group on the whole search path. All of those read this
one answer, taken from Hydra's own defaults list (the same one `compose`
merges), so no second rule guesses which files count.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.errors import ConfigError
from repro.safeio import read_bytes
from repro.source.config import ConfigSource, one_line
from repro.source.hydra_main import hydra_app, hydra_errors

_REPRO_PACKAGE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ComposedFile:
    """One config file Hydra merged: its config path (`model/net`), package (`model`; '' for the
    primary config) and the file on disk (None for a structured config)."""

    config_path: str
    package: str
    path: Path | None

    def shown(self, root: Path) -> str:
        """The file as an error message names it: relative to the project root when it lies there."""
        if self.path is None:
            return f"config {self.config_path}"
        try:
            return self.path.relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(self.path)


@dataclass(frozen=True)
class ConfigFiles:
    """What a build is told about its config files: those composed (to name the file an error is in)
    and the project's ones hashed with its code (`inputs.code`). Crosses to the build child in its BuildSpec."""

    files: tuple[ComposedFile, ...] = ()
    code: tuple[str, ...] = ()

    @classmethod
    def of(cls, source: ConfigSource, overrides: list[str]) -> ConfigFiles:
        files = composed_files(source, overrides)
        return cls(tuple(files), tuple(project_config_files(files, source.root)))

    def where(self, root: Path) -> Callable[[str], str] | None:
        """`key -> the file that sets it` (`defined_in`), or None when unknown."""
        if not self.files:
            return None
        return lambda key: defined_in(key, list(self.files), root)


def composed_files(source: ConfigSource, overrides: list[str]) -> list[ComposedFile]:
    """The config files merged for `source` with `overrides`, in merge order (Hydra's own excluded)."""
    from hydra._internal.defaults_list import create_defaults_list

    out: list[ComposedFile] = []
    with hydra_app(source) as hydra, hydra_errors():
        parsed, repo = hydra.config_loader._parse_overrides_and_create_caching_repo(source.config_name,
                                                                                      list(overrides))
        defaults = create_defaults_list(repo=repo, config_name=source.config_name, overrides_list=parsed,
                                        prepend_hydra=False, skip_missing=False)
        for d in defaults.defaults:
            if not d.config_path or d.config_path.startswith("hydra/") or d.config_path == "hydra":
                continue
            loaded = repo.load_config(config_path=d.config_path)
            path = None if loaded is None else _file(str(loaded.path), d.config_path)
            out.append(ComposedFile(d.config_path, d.package or "", path))
    return out


def project_config_files(files: list[ComposedFile], root: Path) -> list[str]:
    """The composed files that belong to the project: under `root`, outside repro's own package.

    repro's shipped groups are part of its compiler, recorded in the toolchain; the
    project's files are source, hashed with its code.
    """
    real_root = root.resolve()
    found = set()
    for f in files:
        if f.path is None:
            continue
        real = f.path.resolve()
        if real_root in real.parents and _REPRO_PACKAGE not in real.parents:
            found.add(real.relative_to(real_root).as_posix())
    return sorted(found, key=lambda s: s.encode("utf-8"))


def group_options(source: ConfigSource, overrides: list[str]) -> dict[str, list[str]]:
    """Every config group on the whole search path (the project's and repro's) and its options.

    Hydra's own `format_config_groups` lists the groups before the primary config's
    `hydra.searchpath` is applied, so a project would see only its own groups.
    """
    from hydra.core.object_type import ObjectType

    def walk(repo: Any, parent: str) -> Iterator[tuple[str, list[str]]]:
        for name in sorted(repo.get_group_options(parent, ObjectType.GROUP)):
            group = f"{parent}/{name}" if parent else name
            if group == "hydra" or group.startswith("hydra/"):
                continue
            options = sorted(repo.get_group_options(group, ObjectType.CONFIG))
            if options:
                yield group, options
            yield from walk(repo, group)

    with hydra_app(source) as hydra, hydra_errors():
        _, repo = hydra.config_loader._parse_overrides_and_create_caching_repo(source.config_name,
                                                                                 list(overrides))
        return dict(walk(repo, ""))


def defined_in(key: str, composed: list[ComposedFile], root: Path) -> str:
    """The last composed file that sets `key` (the one whose value won), or the command line."""
    for f in reversed(composed):
        if f.path is not None and sets_key(f, key):
            return f.shown(root)
    return f"the command line (+{key}=...)"


def sets_key(f: ComposedFile, key: str) -> bool:
    """Whether config file `f` (merged at its package) sets `key` (dotted), or a key beneath it."""
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type stubs

    if f.path is None:
        return False
    if f.package and not (key == f.package or key.startswith(f.package + ".")):
        return False
    rest = key[len(f.package) + 1:] if f.package else key
    try:
        node: Any = yaml.safe_load(read_bytes(f.path, "config file", 1 << 20, ConfigError))
    except (ConfigError, yaml.YAMLError, RecursionError):
        return False
    for part in rest.split(".") if rest else []:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _file(source_path: str, config_path: str) -> Path | None:
    """The YAML file behind `config_path` in a search-path entry (`file://DIR` or `pkg://module`)."""
    scheme, _, where = source_path.partition("://")
    if scheme == "file":
        folder = Path(where)
    elif scheme == "pkg":
        try:
            spec = importlib.util.find_spec(where.replace("/", "."))
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"config search path {source_path}: {one_line(exc)}") from None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            return None
        folder = Path(locations[0])
    else:
        return None
    file = folder / f"{config_path}.yaml"
    return file if file.is_file() else None
