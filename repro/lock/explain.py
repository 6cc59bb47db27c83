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
from repro.lock.lockdiff import Difference, flatten
from repro.lock.types import JsonObject, Lock
from repro.source.compose import compose
from repro.source.config import EMBEDDED_CONFIG_DIR, ConfigSource, hashed_view

MAX_SUSPECTS = 12  # 2**12 candidate configs at most: milliseconds of hashing
_ABSENT = object()


def _set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Put `value` at `a.b.c`, replacing whatever non-mapping stands on the way (a hostile lock's
    `code: null` where the reference has a `code` group)."""
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is _ABSENT:
        node.pop(leaf, None)
    else:
        node[leaf] = copy.deepcopy(value)


def reference_configs(root: Path) -> list[tuple[str, JsonObject]]:
    """Configs the lock's config may have started from: repro's embedded one.

    Never the project's own `configs/`: verify only reads a stranger's release, and
    composing its Hydra config can import modules (`hydra.searchpath: [pkg://...]`)
    or stall on a YAML alias bomb (docs/security.md).
    """
    candidates = [("repro's embedded train.yaml", ConfigSource(EMBEDDED_CONFIG_DIR, "train", root, True))]
    out = []
    for label, source in candidates:
        try:
            out.append((label, hashed_view(compose(source, []))))
        except ConfigError:
            continue  # an unreadable project config explains nothing; try the next
    return out


def explain_config_edit(resolved: JsonObject, recorded_sha256: str,
                        references: list[tuple[str, JsonObject]]) -> list[Difference] | None:
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
          commit: str | None = None, built_here: bool | None = None) -> list[str]:
    """One sentence per likely cause, most fundamental first. `commit`: the git commit
    the build ran at (from run.json), if known; `built_here`: whether this machine built
    the lock (run.json's host and CPU model), None if unknown.

    Before naming the CPU, the lock's own record is read: a resume from a checkpoint
    of another source (`build.resumes`), the profile, and the first differing step.
    """
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
        out += _divergence(diffs, notes, lock, built_here)
    return out


def _divergence(diffs: list[Difference], notes: list[Difference], lock: Lock, built_here: bool | None) -> list[str]:
    """The source matches and the bits do not: the resume record, the toolchain, this machine, the profile, the CPU."""
    resumed = resumed_from_other_source(lock)
    if resumed:
        return [resumed]
    drift = [n for n in notes if n.section == "toolchain"]
    if drift:
        version = lock["toolchain"]["repro"]["version"]
        return [f"the source and pins match but the toolchain differs ({_names(drift)}): the likely cause; "
                f"rebuild in the recorded toolchain with `repro verify --toolchain recreate` (repro {version})"]
    exact = [d for d in diffs if d.kind == "step" and d.name.startswith("step ")]
    step = exact[0].name if exact else next((d.name for d in diffs if d.kind == "loss"), "some step")
    if exact and (exact[0].stats or {}).get("first_step") == 0:
        where = ("the initial parameters already differ (step 0): building the model depends on something the "
                 "lock does not record (Python's hash seed, a file the model reads that is not in inputs.code, "
                 "the time), or the lock's code is not what built its weights")
        return [where] if built_here else [where + ", or, for an initialiser that calls a BLAS or LAPACK kernel "
                                                   "(orthogonal init), this CPU"]
    if built_here:
        return [f"inputs, pins and toolchain match, and this is the machine that built the lock (its run.json "
                f"names this host and CPU model), yet training diverges at {step}: not the CPU. Something the "
                "lock does not record decided the bits: code that depends on the process (Python's hash seed, "
                "the time, a file read at run time), a resume from a checkpoint of other code made by a repro "
                "that did not check, or weights from another build than the one the lock describes"]
    localize = ("`repro verify --localize` names the operation where qemu-user can emulate a CPU that reproduces "
                "the lock")
    if lock.get("build", {}).get("kernels") == "portable":
        return [f"inputs, pins and toolchain match, yet training diverges at {step}: the lock was built with "
                "repro's portable kernels (build=default), whose operations give the same bits on every x86-64 "
                "CPU with AVX2, so the likely cause is an operation outside them or a build the lock does not "
                f"describe; {localize}"]
    return [f"inputs and pins match, yet training diverges at {step}: the likely cause is this CPU "
            "(build=native uses MKL/oneDNN, which pick kernels by CPU vendor and model even with "
            "ATEN_CPU_CAPABILITY pinned), or the lock's pins do not describe how its weights were really built; "
            f"build=default gives the same bits on every x86-64 CPU with AVX2 ({localize})"]


def resumed_from_other_source(lock: Lock) -> str | None:
    """The lock's own word that some of its steps came from another source (`build.resumes`), as a hint."""
    boundaries = [b for b in lock["build"].get("resumes", []) if b["differs"]]
    if not boundaries:
        return None
    first = boundaries[0]
    names = [f"{d['kind']} {d['name']}" for d in first["differs"]]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"this release was resumed at step {first['step']} from a checkpoint made from another source "
            f"({shown}): its steps up to {first['step']} ran other code or another toolchain than the lock "
            "records, so no rebuild of the recorded source gives its weights. Not a CPU difference: retrain it "
            "from step 0 with `repro train --no-resume`")
