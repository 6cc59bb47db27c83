"""Bounds on YAML repro reads, and on what composing a project's Hydra config may reach. No torch.

Two ways a project's YAML ran code or stalled repro (issue 29, vectors 5 and 12):

- `hydra.searchpath: [pkg://evilmod]` makes Hydra import `evilmod` while it
  composes; a `file://` entry reaches configs anywhere on the disk;
- YAML aliases make a small file expand exponentially: PyYAML shares the node,
  but OmegaConf (and any walk of the loaded value) copies each reference.

Before Hydra composes a project's config (`train`, `check`, `run`, `dvc-yaml`,
`--cfg`, `--info`, `--help`), `guard_config_dir` reads every YAML file of its
config folder as plain data, each a regular file under `MAX_YAML_BYTES`, counts
the nodes it would expand to (aliases counted each time they are used, in time
linear in the file), and refuses a search path outside repro's package and the
project. `load_yaml` loads other YAML (`dvc.yaml`) the same bounded way. Read-only
commands never compose a project's config at all (docs/security.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from repro.errors import ConfigError, UserInputError
from repro.safeio import printable, read_bytes

MAX_YAML_BYTES = 1 << 20  # one config file or dvc.yaml
MAX_YAML_NODES = 100_000  # nodes after expanding every alias; real configs have a few hundred
MAX_CONFIG_FILES = 2_000  # YAML files in one config folder
_SCHEMES = ("pkg://", "file://")
_NOT_CONFIG = frozenset({"site-packages", "dist-packages", "node_modules", "__pycache__"})


def load_yaml(path: Path, what: str, error: type[UserInputError] = UserInputError,
              follow_links: bool = False) -> Any:
    """The value of a YAML file: a regular file under MAX_YAML_BYTES whose aliases expand to at most
    MAX_YAML_NODES nodes, loaded with PyYAML's safe loader; `error` naming the file otherwise."""
    import yaml  # type: ignore[import-untyped]  # PyYAML (via omegaconf) ships no type stubs

    raw = read_bytes(path, what, MAX_YAML_BYTES, error, follow_links)
    shown = printable(str(path))
    try:
        text = raw.decode("utf-8")
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_size(node, shown, error)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except UnicodeDecodeError as exc:
        raise error(f"{shown}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise error(f"{shown}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise error(f"{shown}: YAML nested too deeply") from None


def guard_config_dir(config_dir: Path, root: Path) -> None:
    """Refuse (ConfigError) a config folder Hydra must not compose: see the module doc."""
    count = 0
    for folder, dirs, files in os.walk(config_dir):  # links to folders are not followed
        # Not config groups: hidden folders (.git, .venv, .dvc) and installed environments (a venv, packages).
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _NOT_CONFIG
                         and not os.path.isfile(os.path.join(folder, d, "pyvenv.cfg")))
        for name in sorted(files):
            if not name.endswith((".yaml", ".yml")):
                continue
            count += 1
            if count > MAX_CONFIG_FILES:
                raise ConfigError(f"{printable(str(config_dir))}: over {MAX_CONFIG_FILES} YAML files in a config "
                                  "folder")
            path = Path(folder) / name
            doc = load_yaml(path, "config file", ConfigError, follow_links=True)
            _check_searchpath(doc, path, root)


def _check_size(root_node: Any, shown: str, error: type[UserInputError]) -> None:
    """Refuse a document whose nodes, each alias counted every time it is used, exceed MAX_YAML_NODES."""
    import yaml

    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root_node, False)]
    while stack:  # iterative post-order: a deeply nested file cannot exhaust Python's stack
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            sizes[id(node)] = 1
            continue
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        if total > MAX_YAML_NODES:
            raise error(f"{shown}: expands to over {MAX_YAML_NODES} YAML nodes (anchors and aliases are counted "
                        "each time they are used)")
        sizes[id(node)] = total


def _check_searchpath(doc: Any, path: Path, root: Path) -> None:
    hydra = doc.get("hydra") if isinstance(doc, dict) else None
    entries = hydra.get("searchpath") if isinstance(hydra, dict) else None
    if isinstance(doc, dict) and "hydra.searchpath" in doc:
        entries = doc["hydra.searchpath"]
    if entries is None:
        return
    if not isinstance(entries, list):
        raise ConfigError(f"{printable(str(path))}: hydra.searchpath: expected a list of pkg:// or file:// entries")
    for entry in entries:
        why = _searchpath_problem(entry, root)
        if why:
            raise ConfigError(f"{printable(str(path))}: hydra.searchpath entry {printable(repr(entry))}: {why}; "
                              "a project's config may search only repro's package and the project itself")


def _searchpath_problem(entry: Any, root: Path) -> str | None:
    if not isinstance(entry, str) or not entry.startswith(_SCHEMES) or "${" in entry:
        return "not a plain pkg:// or file:// entry"
    scheme, _, rest = entry.partition("://")
    if scheme == "pkg":
        top = rest.split(".", 1)[0].split("/", 1)[0]
        return None if top == "repro" else f"would import the package {top!r}"
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(os.getcwd(), rest))  # Hydra reads a relative file:// from the cwd
    inside = real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)
    return None if inside else "a folder outside the project"
