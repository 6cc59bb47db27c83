"""dvc.yaml from the stage declarations: what DVC must track so that it reruns exactly what changed. No torch.

DVC stays the executor for those who use it: each declared stage becomes a
`repro run NAME` stage, and training the `repro train` stage after them. DVC must
see every edit that `repro verify` sees, so a stage's deps are its source as the
lock records it:

- the inputs (a glob is expanded to its files, since DVC takes paths);
- its code: the package (a folder with `__init__.py`) or module file that the
  `_target_` names, plus the files its record says it imported (a helper the
  module imports), plus its `code` patterns; training's code is the package or
  module of every project `_target_` (model, task, ...), the files the last
  build's lock recorded, and `code.include`; repro itself when it lies inside
  the project;
- its config: the project's composed config files that set the stage's keys or a
  key they interpolate (`stages.NAME`, `${tokenize.vocab_size}`); training
  depends on every composed project config file. When the config is one params
  file at the root (DVC's Hydra composition writes it), `params:` entries say
  the same: `stages.NAME`, or every top-level key for training;
- outs: the outputs and the stage record; training's the weights, metrics and
  repro.lock (`cache: false`). Other outs of the train stage in the same folder
  (a task's exported files) are kept.

`check` accepts any dvc.yaml that covers this: a folder dep or out that holds the
files (`configs`, `data`, `out`) is as good as the files, so what `repro init`
wrote and what `--write` writes both pass; anything else is named, one line each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.filenames import DVC_YAML_NAME, LOCK_NAME, METRICS_NAME, WEIGHTS_NAME
from repro.source.composed import ComposedFile, project_config_files, sets_key
from repro.source.config import ConfigSource, require
from repro.source.data import DataSpec
from repro.source.inputs import PACKAGE_DIR, code_include
from repro.source.project_import import project_file
from repro.source.stages import StageSpec, stage_specs
from repro.source.walk import expand_patterns

TRAIN = "train"
_GLOB = set("*?[")
_REFERENCE = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*\}")


@dataclass(frozen=True)
class Invocation:
    """How the stage commands find the config (the flags `repro dvc-yaml` itself was given), and what
    composing it read: the unresolved config (for interpolations) and the config files."""

    source: ConfigSource
    flags: tuple[str, ...]
    raw: Any = None
    files: tuple[ComposedFile, ...] = field(default_factory=tuple)

    def root_file(self) -> bool:
        return self.source.config_dir.resolve() == self.source.root.resolve()


def expected(resolved: dict[str, Any], inv: Invocation) -> dict[str, dict[str, Any]]:
    """The dvc.yaml stages the declarations call for, in run order, training last."""
    specs = stage_specs(resolved)
    out = {name: _stage(spec, inv) for name, spec in specs.items()}
    out[TRAIN] = _train(resolved, inv, specs)
    return out


def _paths(root: Path, patterns: tuple[str, ...] | list[str]) -> list[str]:
    found: list[str] = []
    for p in patterns:
        found += expand_patterns(root, [p]) if _GLOB & set(p) else [p.rstrip("/")]
    return found


def _repro_dep(inv: Invocation) -> list[str]:
    """repro's own folder, when the compiler lives in this project: its source is hashed."""
    return [PACKAGE_DIR.name] if PACKAGE_DIR.parent.resolve() == inv.source.root.resolve() else []


def _params(inv: Invocation, keys: list[str]) -> list[Any]:
    if not inv.root_file() or not keys:
        return []
    if inv.source.config_name == "params":
        return list(keys)
    return [{f"{inv.source.config_name}.yaml": list(keys)}]


def module_file(root: Path, target: str) -> list[str]:
    """The file of `module.function`'s module under root, if it is there: found by path, never imported, and by
    its real path (`repro.source.project_import.project_file`, as preprocess and stages find it)."""
    rel = project_file(target, root)
    return [] if rel is None else [rel]


def code_of(root: Path, target: str) -> list[str]:
    """A project `_target_`'s code as a dep: its top-level package folder, or else its module file.

    A package (a folder with `__init__.py`) is the model's source as a whole, so a
    helper it imports is covered before any build has recorded it. repro's own
    targets are the compiler's, unless repro lives in this project.
    """
    top = target.split(".", 1)[0]
    if top == PACKAGE_DIR.name and PACKAGE_DIR.parent.resolve() != root.resolve():
        return []
    if (root / top / "__init__.py").is_file():
        return [top]
    return module_file(root, target)


def _targets(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["_target_"]] if isinstance(node.get("_target_"), str) else []
        return own + [t for v in node.values() for t in _targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in _targets(v)]
    return []


def _recorded_code(path: Path, skip: set[str]) -> list[str]:
    """The code files a record or lock at `path` lists (what the last run imported), when it is readable."""
    from repro.safeio import read_json

    if not path.is_file():
        return []
    try:
        doc, _ = read_json(path, path.name)
        files = doc["code"]["files"] if "code" in doc and "inputs" in doc and "stage" in doc \
            else doc["inputs"]["code"]["files"]
        return [str(f["path"]) for f in files if str(f["path"]) not in skip]
    except (OSError, ValueError, KeyError, TypeError, ReproError):
        return []


def _config_files(inv: Invocation, keys: list[str] | None) -> list[str]:
    """The project config files that set any of `keys` (all of them when `keys` is None), as deps."""
    if inv.root_file():
        return []  # the params file's keys are `params:` entries
    files = [f for f in inv.files if keys is None or any(sets_key(f, k) for k in keys)]
    return project_config_files(files, inv.source.root)


def _references(raw: Any, start: str) -> list[str]:
    """`start` and every key its value interpolates, transitively (`${tokenize.vocab_size}`)."""
    seen: list[str] = []
    todo = [start]
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.append(key)
        node: Any = raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        todo += [m.group(1) for text in _strings(node) for m in _REFERENCE.finditer(text)]
    return seen


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _stage(spec: StageSpec, inv: Invocation) -> dict[str, Any]:
    root = inv.source.root
    own = code_of(root, spec.target)
    recorded = _recorded_code(root / spec.record, set())
    config = _config_files(inv, _references(inv.raw, f"stages.{spec.name}") if inv.raw is not None else None)
    deps = [*_paths(root, spec.inputs), *own, *_uncovered(recorded, own), *_paths(root, spec.code),
            *_repro_dep(inv), *config]
    entry: dict[str, Any] = {"cmd": " ".join(["repro", "run", spec.name, *inv.flags]), "deps": _unique(deps)}
    params = _params(inv, [f"stages.{spec.name}"])
    if params:
        entry["params"] = params
    entry["outs"] = [*spec.outputs, spec.record]
    return entry


def _train(resolved: dict[str, Any], inv: Invocation, specs: dict[str, StageSpec]) -> dict[str, Any]:
    root = inv.source.root
    data = DataSpec.from_config(resolved)
    files = _paths(root, [*data.data_files, *data.sources])
    records = [s.record for s in specs.values() if any(o in files for o in s.outputs)]
    targets = _targets({k: v for k, v in resolved.items() if k not in ("stages", "hydra")})
    own = _unique([dep for t in targets for dep in code_of(root, t)])
    composed = {p for f in inv.files if f.path is not None for p in project_config_files([f], root)}
    out_dir = str(require(resolved, "out_dir", str)).rstrip("/")
    recorded = _recorded_code(root / out_dir / LOCK_NAME, composed)
    code = _paths(root, code_include(resolved))
    deps = [*files, *records, *own, *_uncovered(recorded, own), *code, *_repro_dep(inv), *_config_files(inv, None)]
    entry: dict[str, Any] = {"cmd": " ".join(["repro", "train", "--quiet", *inv.flags]), "deps": _unique(deps)}
    params = _params(inv, sorted(k for k in resolved if k != "out_dir"))
    if params:
        entry["params"] = params
    entry["outs"] = [f"{out_dir}/{WEIGHTS_NAME}", f"{out_dir}/{METRICS_NAME}",
                     {f"{out_dir}/{LOCK_NAME}": {"cache": False}}]
    return entry


def _uncovered(paths: list[str], by: list[str]) -> list[str]:
    return [p for p in paths if not any(_covers(d, p) for d in by)]


def _covers(dep: str, path: str) -> bool:
    """A dvc.yaml path covers a file when it is the file or a folder above it."""
    dep = dep.rstrip("/")
    return path == dep or path.startswith(dep + "/")


def _export(stage: str, path: str, entry: dict[str, Any]) -> bool:
    """A train out beside the weights that repro does not name itself: a task's exported file."""
    weights = next(iter(_keyed(entry["outs"])))
    return stage == TRAIN and path.rpartition("/")[0] == weights.rpartition("/")[0]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _keyed(entries: list[Any] | None) -> dict[str, Any]:
    """dvc.yaml lists paths as strings or one-key mappings; key them by path."""
    out: dict[str, Any] = {}
    for e in entries or []:
        if isinstance(e, dict):
            for k, v in e.items():
                out[str(k).rstrip("/")] = v
        else:
            out[str(e).rstrip("/")] = None
    return out


def check(actual: dict[str, Any], want: dict[str, dict[str, Any]]) -> list[str]:
    """Each way dvc.yaml's stages disagree with the declarations, one line each; none when they agree."""
    problems: list[str] = []
    for name, entry in want.items():
        have = actual.get(name)
        if not isinstance(have, dict):
            problems.append(f"{DVC_YAML_NAME}: stage {name} is missing (declared under stages.{name})"
                            if name != TRAIN else f"{DVC_YAML_NAME}: stage {TRAIN} is missing")
            continue
        if have.get("cmd") != entry["cmd"]:
            problems.append(f"{DVC_YAML_NAME}: stages.{name}.cmd is {have.get('cmd')!r}, expected {entry['cmd']!r}")
        for kind in ("deps", "outs"):
            problems += _field(name, kind, _keyed(have.get(kind)), _keyed(entry.get(kind)), entry)
        if _norm_params(have.get("params")) != _norm_params(entry.get("params")):
            problems.append(f"{DVC_YAML_NAME}: stages.{name}.params is {have.get('params')!r}, "
                            f"expected {entry.get('params')!r}")
    return problems


def _field(name: str, kind: str, have: dict[str, Any], want: dict[str, Any], entry: dict[str, Any]) -> list[str]:
    """deps or outs: each wanted path must be listed or lie in a listed folder; each listed path must be wanted
    or hold wanted ones (a folder); an out listed as itself must carry the wanted options."""
    problems = []
    for path, options in want.items():
        if path in have:
            if have[path] != options:
                problems.append(f"{DVC_YAML_NAME}: stages.{name}.{kind} {path} has options {have[path]!r}, "
                                f"expected {options!r}")
        elif not any(_covers(h, path) for h in have):
            problems.append(f"{DVC_YAML_NAME}: stages.{name}.{kind} lacks {path}")
    for path in have:
        if path not in want and not any(_covers(path, w) for w in want) and \
                not (kind == "outs" and _export(name, path, entry)):
            problems.append(f"{DVC_YAML_NAME}: stages.{name}.{kind} has {path}, which the declaration does not name")
    return problems


def _norm_params(params: Any) -> list[str]:
    out = []
    for p in params or []:
        if isinstance(p, dict):
            out += [f"{f}:{k}" for f, keys in p.items() for k in (keys or [""])]
        else:
            out.append(f"params.yaml:{p}")
    return sorted(out)


def merged(actual: dict[str, Any], want: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """dvc.yaml's stages regenerated: declared ones replaced, train's extra deps and outs kept,
    stages repro does not know about left as they were (after the declared ones)."""
    out: dict[str, Any] = {}
    for name, entry in want.items():
        entry = dict(entry)
        have = actual.get(name)
        if name == TRAIN and isinstance(have, dict):
            want_outs = _keyed(entry["outs"])
            entry["outs"] = [*entry["outs"], *(o for o in have.get("outs") or [] if (p := next(iter(_keyed([o]))))
                                               not in want_outs and _export(name, p, entry))]
        out[name] = entry
    for name, entry in actual.items():
        out.setdefault(name, entry)
    return out


def render(text: str, want: dict[str, dict[str, Any]]) -> str:
    """dvc.yaml's new text: its leading comment block kept, its stages regenerated (see `merged`)."""
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type stubs

    doc = yaml.safe_load(text) if text else {}
    actual = doc.get("stages") if isinstance(doc, dict) else None
    actual = actual if isinstance(actual, dict) else {}
    header = "".join(line for line in _leading_comments(text))
    body: str = yaml.safe_dump({"stages": merged(actual, want)}, sort_keys=False, default_flow_style=False,
                               width=110)
    return header + body


def _leading_comments(text: str) -> list[str]:
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines
