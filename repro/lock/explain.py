"""Turn differences into causes: which config key was edited, and a hint per culprit.

No torch. Used by `repro verify` to go from "hashes differ" to a sentence that
names the likely cause and what to do about it.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

from repro.canonical import compact_json, sha256_bytes
from repro.errors import ConfigError
from repro.lock.diff import Difference, flatten
from repro.lock.types import Lock
from repro.source.config import EMBEDDED_CONFIG_DIR, ConfigSource, compose, hashed_view

MAX_SUSPECTS = 12  # 2**12 candidate configs at most: milliseconds of hashing
_ABSENT = object()


def _set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if value is _ABSENT:
        node.pop(leaf, None)
    else:
        node[leaf] = copy.deepcopy(value)


def reference_configs(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """Configs the lock's config may have started from: the project's, the embedded one."""
    candidates = []
    project = root / "configs"
    if (project / "train.yaml").is_file():
        candidates.append(("configs/train.yaml", ConfigSource(project, "train", root, embedded=False)))
    candidates.append(("repro's embedded train.yaml", ConfigSource(EMBEDDED_CONFIG_DIR, "train", root, True)))
    out = []
    for label, source in candidates:
        try:
            out.append((label, hashed_view(compose(source, []))))
        except ConfigError:
            continue  # an unreadable project config explains nothing; try the next
    return out


def explain_config_edit(resolved: dict[str, Any], recorded_sha256: str,
                        references: list[tuple[str, dict[str, Any]]]) -> list[Difference] | None:
    """Find which keys of the lock's config were edited after the build, and their old values.

    The lock's config digest was computed from the config the weights were built
    with. Starting from the lock's (edited) config, put back reference values for
    subsets of the keys where the two disagree; the subset whose result hashes to
    the recorded digest is, provably, the edit. Returns None if no subset does.
    """
    current = flatten(resolved)
    for label, reference in references:
        ref = flatten(reference)
        suspects = [k for k in sorted(set(current) | set(ref))
                    if current.get(k, _ABSENT) != ref.get(k, _ABSENT)]
        if len(suspects) > MAX_SUSPECTS:
            continue
        for size in range(1, len(suspects) + 1):
            for subset in itertools.combinations(suspects, size):
                candidate = copy.deepcopy(resolved)
                for key in subset:
                    _set_dotted(candidate, key, ref.get(key, _ABSENT))
                if sha256_bytes(compact_json(candidate)) == recorded_sha256:
                    return [_edit(key, ref.get(key, _ABSENT), current.get(key, _ABSENT), label) for key in subset]
    return None


def _edit(key: str, built: Any, now: Any, label: str) -> Difference:
    change = "added" if built is _ABSENT else "removed" if now is _ABSENT else "changed"
    return Difference(
        "inputs", "config", key, change, None if built is _ABSENT else built, None if now is _ABSENT else now,
        f"edited in the lock after the build; the lock's config digest matches the old value (found via {label})",
    )


def _names(diffs: list[Difference], limit: int = 3) -> str:
    names = [d.name for d in diffs]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _is_config(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


def hints(diffs: list[Difference], notes: list[Difference], lock: Lock,
          commit: str | None = None) -> list[str]:
    """One sentence per likely cause, most fundamental first. `commit`: the git commit
    the build ran at (from run.json), if known."""
    by_kind: dict[str, list[Difference]] = {}
    for d in diffs:
        by_kind.setdefault(d.kind, []).append(d)
    out: list[str] = []
    if "data" in by_kind:
        out.append(f"the data differs ({_names(by_kind['data'])}): restore the exact files the lock names "
                   "(e.g. `dvc pull` or `git checkout`), or retrain with `repro train` if the change is intended")
    if "code" in by_kind:
        at = f"check out commit {commit[:12]}, which the lock was built at" if commit else \
            "restore the files the lock names"
        what = "config" if all(_is_config(d.name) for d in by_kind["code"]) else "code"
        out.append(f"the project's {what} differs ({_names(by_kind['code'])}): {at}, or, if the edit is "
                   "intended, rebuild the lock with `repro train` (`dvc repro`)")
    stages = sorted({d.name.partition(": ")[0] for d in diffs if d.kind.startswith("stage") and ": " in d.name})
    if stages:
        changed = [d for d in diffs if d.kind.startswith("stage")]
        runs = " and ".join(f"`repro run {name}`" for name in stages)
        out.append(f"the source behind the data changed since the lock was built ({_names(changed)}): "
                   f"run {runs}, then `repro train` (`dvc repro` does both), or restore the files")
    if "config" in by_kind:
        out.append(f"the lock's config was edited after the build ({_names(by_kind['config'])}): "
                   "a rebuild uses the edited values, so its weights cannot match the lock's")
    if "pin" in by_kind:
        out.append(f"the lock's build pins disagree with its own config ({_names(by_kind['pin'])}): the lock was "
                   "edited after the build; the rebuild applies the build section's pins")
    if "sample_order" in by_kind:
        out.append("the sample order differs: the seed or repro's sampler changed")
    if "weights" in by_kind and not any(d.section == "outputs" and d.kind in ("loss", "step") for d in diffs):
        out.append("the weights file does not match the lock: it is corrupted or not the file this lock "
                   "describes; download it again")
    if any(d.kind in ("tensor", "loss", "step", "metric") for d in diffs) and not out:
        drift = [n for n in notes if n.section == "toolchain"]
        if drift:
            version = lock["toolchain"]["repro"]["version"]
            out.append(f"the source and pins match but the toolchain differs ({_names(drift)}): the likely cause; "
                       f"rebuild in the recorded toolchain with `repro verify --toolchain recreate` "
                       f"(repro {version})")
        else:
            exact = [d.name for d in diffs if d.kind == "step" and d.name.startswith("step ")]
            step = next(iter(exact), next((d.name for d in diffs if d.kind == "loss"), "some step"))
            out.append(f"inputs and pins match, yet training diverges at {step}: the likely cause is this CPU "
                       "(MKL/oneDNN pick kernels by CPU model even with ATEN_CPU_CAPABILITY pinned), or the "
                       "lock's pins do not describe how its weights were really built; locks built with "
                       "build=portable are the likeliest to agree across CPUs (`repro verify --localize` "
                       "names the operation where qemu-user can emulate a CPU that reproduces the lock)")
    return out
