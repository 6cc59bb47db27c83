"""dvc.yaml from the stage declarations: what DVC must track so that it reruns exactly what changed. No torch.

DVC stays the executor for those who use it: each declared stage becomes a
`repro run NAME` stage, and training the `repro train` stage after them. From
the declarations follow, per stage:

- deps: the inputs (a glob is expanded to its files, since DVC takes paths), the
  stage's module file, its `code` patterns, repro itself when it lies inside the
  project, and the config folder when the config is not a single params file;
- params: `stages.NAME` of the params file when the config is one file at the
  root (DVC's Hydra composition writes it), so `dvc exp run -S` reruns the stage;
- outs: the outputs and the stage record.

Training's deps are its data files, data sources and `code.include` files plus
the records of the stages that made them; its outs must include the weights,
metrics and repro.lock (`cache: false`). Other outs of the train stage in the
same folder (a task's exported files) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.source.config import ConfigSource, require
from repro.source.data import DataSpec
from repro.source.inputs import PACKAGE_DIR
from repro.source.stages import StageSpec, stage_specs
from repro.source.walk import expand_patterns

TRAIN = "train"
DVC_YAML = "dvc.yaml"
_GLOB = set("*?[")


@dataclass(frozen=True)
class Invocation:
    """How the stage commands find the config: the flags `repro dvc-yaml` itself was given."""

    source: ConfigSource
    flags: tuple[str, ...]

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


def _common_deps(inv: Invocation) -> list[str]:
    root = inv.source.root.resolve()
    deps = []
    if PACKAGE_DIR.parent.resolve() == root:
        deps.append(PACKAGE_DIR.name)  # the compiler lives in this project: its source is hashed
    if not inv.root_file():
        deps.append(inv.source.config_dir.resolve().relative_to(root).as_posix())
    return deps


def _params(inv: Invocation, keys: list[str]) -> list[Any]:
    if not inv.root_file() or not keys:
        return []
    if inv.source.config_name == "params":
        return list(keys)
    return [{f"{inv.source.config_name}.yaml": list(keys)}]


def module_file(root: Path, target: str) -> list[str]:
    """The file of `module.function`'s module under root, if it is there (found without importing it)."""
    base = target.rpartition(".")[0].replace(".", "/")
    return [p for p in (f"{base}.py", f"{base}/__init__.py") if (root / p).is_file()][:1]


def _stage(spec: StageSpec, inv: Invocation) -> dict[str, Any]:
    root = inv.source.root
    deps = _paths(root, spec.inputs) + module_file(root, spec.target) + _paths(root, spec.code) + _common_deps(inv)
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
    code = _paths(root, [str(p) for p in require(resolved, "code.include", list)])
    entry: dict[str, Any] = {"cmd": " ".join(["repro", "train", "--quiet", *inv.flags]),
                             "deps": _unique(files + records + code + _common_deps(inv))}
    params = _params(inv, sorted(k for k in resolved if k != "out_dir"))
    if params:
        entry["params"] = params
    out_dir = str(require(resolved, "out_dir", str)).rstrip("/")
    entry["outs"] = [f"{out_dir}/model.safetensors", f"{out_dir}/metrics.jsonl",
                     {f"{out_dir}/repro.lock": {"cache": False}}]
    return entry


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
            problems.append(f"{DVC_YAML}: stage {name} is missing (declared under stages.{name})"
                            if name != TRAIN else f"{DVC_YAML}: stage {TRAIN} is missing")
            continue
        if have.get("cmd") != entry["cmd"]:
            problems.append(f"{DVC_YAML}: stages.{name}.cmd is {have.get('cmd')!r}, expected {entry['cmd']!r}")
        for field in ("deps", "outs"):
            want_k, have_k = _keyed(entry.get(field)), _keyed(have.get(field))
            missing = [p for p in want_k if p not in have_k]
            extra = [p for p in have_k if p not in want_k and not (field == "outs" and _export(name, p, entry))]
            wrong = [p for p in want_k if p in have_k and want_k[p] != have_k[p]]
            problems += [f"{DVC_YAML}: stages.{name}.{field} lacks {p}" for p in missing]
            problems += [f"{DVC_YAML}: stages.{name}.{field} has {p}, which the declaration does not name"
                         for p in extra]
            problems += [f"{DVC_YAML}: stages.{name}.{field} {p} has options {have_k[p]!r}, expected {want_k[p]!r}"
                         for p in wrong]
        if _norm_params(have.get("params")) != _norm_params(entry.get("params")):
            problems.append(f"{DVC_YAML}: stages.{name}.params is {have.get('params')!r}, "
                            f"expected {entry.get('params')!r}")
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
