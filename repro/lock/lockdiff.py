"""Compare two lockfiles (and two stage records), section by section, in one vocabulary. Never imports torch.

`repro diff` prints these differences; `repro verify` builds a lock-shaped view of
what it finds (re-hashed inputs, a rebuilt lock) and compares it with the same
functions, so both commands name a culprit the same way: section, kind, name,
change, the lock's value and the value found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

# The build keys that are pins (they decide the bits), as opposed to recorded facts; re-exported.
from repro.environment.pins import PIN_KEYS as PIN_KEYS
from repro.lock.lockfile import logged_steps
from repro.lock.types import (
    BaseBlock,
    FileRecord,
    FilesBlock,
    Inputs,
    Lock,
    LossTrajectory,
    Outputs,
    TensorRecord,
    Toolchain,
)
from repro.records import JsonObject, StageRecord
from repro.safeio import printable

_MISSING = object()


@dataclass(frozen=True)
class Difference:
    """One thing that differs. `old` is the (first) lock's value, `new` the other's.

    section: inputs | build | toolchain | outputs
    kind:    data | code | config | preprocess | sample_order (inputs: the source);
             pin | flag | env | cuda | cpu (build); python | platform | distribution | torch | kernels | compiler
             (toolchain);
             weights | tensor | loss | step | metric (outputs); other;
             stage | stage config | stage input | stage code | stage output | stage tool (a stage record)
    change:  changed | added | removed | renamed
    stats:   numbers behind `detail`, for --json (e.g. a tensor's differing elements)
    """

    section: str
    kind: str
    name: str
    change: str
    old: Any = None
    new: Any = None
    detail: str = ""
    stats: dict[str, float | None] | None = None  # counts and sizes: first_step, elements, max_abs_diff

    def to_json(self) -> JsonObject:
        return asdict(self)

    def line(self) -> str:
        """One human-readable line; digests are shortened, values shown as JSON-ish."""
        values = ""
        if self.change == "changed":
            values = f"  {show(self.old)} -> {show(self.new)}"
        elif self.change == "renamed":
            values = f"  (from {self.old})"
        detail = f"  ({self.detail})" if self.detail else ""
        # Escaped here, not only at print time: a newline in a config key must not start a line of its own.
        return printable(f"{self.kind:<12} {self.change:<8} {self.name}{values}{detail}")


def show(value: Any) -> str:
    """A value as a diff line shows it: a sha256 shortened, strings quoted, JSON's null/true/false."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted leaf keys; lists and scalars are leaves, empty dicts vanish."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key in sorted(obj):
        out.update(flatten(obj[key], f"{prefix}.{key}" if prefix else str(key)))
    return out


def compare_values(section: str, kind: str, a: Any, b: Any, prefix: str = "") -> list[Difference]:
    """Leaf-by-leaf comparison of two nested dicts, named by dotted key."""
    fa, fb = flatten(a, prefix), flatten(b, prefix)
    diffs = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, _MISSING), fb.get(key, _MISSING)
        if va is _MISSING:
            diffs.append(Difference(section, kind, key, "added", None, vb))
        elif vb is _MISSING:
            diffs.append(Difference(section, kind, key, "removed", va, None))
        elif va != vb or type(va) is not type(vb):
            diffs.append(Difference(section, kind, key, "changed", va, vb))
    return diffs


def compare_files(kind: str, a: Iterable[FileRecord], b: Iterable[FileRecord],
                  section: str = "inputs") -> list[Difference]:
    """Files by path: changed content, added, removed; a removed+added pair with the
    same sha256 is reported once, as renamed."""
    fa = {f["path"]: f for f in a}
    fb = {f["path"]: f for f in b}
    removed = {p: fa[p] for p in fa if p not in fb}
    added = {p: fb[p] for p in fb if p not in fa}
    diffs: list[Difference] = []
    for path in sorted(set(fa) & set(fb), key=lambda s: s.encode("utf-8")):
        ha, hb = fa[path]["hashes"]["sha256"], fb[path]["hashes"]["sha256"]
        if ha != hb or fa[path]["size"] != fb[path]["size"]:
            detail = f"size {fa[path]['size']} -> {fb[path]['size']}" if fa[path]["size"] != fb[path]["size"] else ""
            diffs.append(Difference(section, kind, path, "changed", ha, hb, detail))
    by_digest = {f["hashes"]["sha256"]: p for p, f in sorted(removed.items())}
    for path in sorted(added, key=lambda s: s.encode("utf-8")):
        source = by_digest.pop(added[path]["hashes"]["sha256"], None)
        if source is not None:
            del removed[source]
            diffs.append(Difference(section, kind, path, "renamed", source, path))
        else:
            diffs.append(Difference(section, kind, path, "added", None, added[path]["hashes"]["sha256"]))
    for path in sorted(removed, key=lambda s: s.encode("utf-8")):
        diffs.append(Difference(section, kind, path, "removed", removed[path]["hashes"]["sha256"], None))
    return diffs


def compare_file_block(kind: str, a: FilesBlock, b: FilesBlock, section: str = "inputs") -> list[Difference]:
    """A `{files, root_digest}` block; a root digest that disagrees on equal file
    lists is reported too (it means the lock's own numbers do not add up)."""
    diffs = compare_files(kind, a["files"], b["files"], section)
    if not diffs and a["root_digest"] != b["root_digest"]:
        diffs.append(Difference(section, kind, "root_digest", "changed", a["root_digest"], b["root_digest"]))
    return diffs


def compare_stage_records(a: StageRecord, b: StageRecord) -> list[Difference]:
    """How two records of one stage (repro.lock.stagerecord) differ: config, toolchain, inputs, code, then outputs.

    Names are `STAGE: path` (or `STAGE: key`), so a chain of stages reads in one list.
    """
    name = a["stage"]
    diffs = compare_values("inputs", "stage config", {"declared": a["declared"], "pins": a["pins"]},
                           {"declared": b["declared"], "pins": b["pins"]}, name)
    ta = {k: v for k, v in a["toolchain"].items() if k != "repro"}
    tb = {k: v for k, v in b["toolchain"].items() if k != "repro"}
    ra, rb = a["toolchain"]["repro"], b["toolchain"]["repro"]
    diffs += compare_values("toolchain", "stage tool", ta, tb, name)
    if ra["version"] != rb["version"]:
        diffs.append(Difference("toolchain", "stage tool", f"{name}.repro version", "changed", ra["version"],
                                rb["version"]))
    diffs += compare_files("stage tool", ra["files"], rb["files"], section="toolchain")
    diffs += compare_files("stage input", a["inputs"]["files"], b["inputs"]["files"])
    diffs += compare_files("stage code", a["code"]["files"], b["code"]["files"])
    diffs += compare_files("stage output", a["outputs"]["files"], b["outputs"]["files"], section="outputs")
    return [_named(d, name) for d in diffs]


def _named(d: Difference, stage: str) -> Difference:
    return d if d.name.startswith(f"{stage}.") or d.name.startswith(f"{stage}:") else replace(
        d, name=f"{stage}: {d.name}")


def compare_stage_chains(a: Sequence[StageRecord], b: Sequence[StageRecord]) -> list[Difference]:
    """Two locks' `inputs.stages`, stage by stage, in a's order."""
    by_name = {r["stage"]: r for r in b}
    diffs: list[Difference] = []
    for rec in a:
        other = by_name.pop(rec["stage"], None)
        if other is None:
            diffs.append(Difference("inputs", "stage", rec["stage"], "removed", rec["config_sha256"], None))
        else:
            diffs += compare_stage_records(rec, other)
    diffs += [Difference("inputs", "stage", n, "added", None, r["config_sha256"]) for n, r in by_name.items()]
    return diffs


def compare_inputs(a: Inputs, b: Inputs) -> list[Difference]:
    """Config by key, data and project code files by path: the source."""
    diffs: list[Difference] = []
    ca, cb = a["config"], b["config"]
    if ca["sha256"] != cb["sha256"] or ca["resolved"] != cb["resolved"]:
        keyed = compare_values("inputs", "config", ca["resolved"], cb["resolved"])
        diffs += keyed or [Difference("inputs", "config", "sha256", "changed", ca["sha256"], cb["sha256"])]
    diffs += compare_file_block("data", a["data"], b["data"])
    # The preprocessing step's code (its params are config): target, file digest or package version.
    diffs += compare_values("inputs", "preprocess", a["data"].get("preprocess") or {},
                            b["data"].get("preprocess") or {}, "preprocess")
    if "sample_order" in a["data"] and "sample_order" in b["data"]:
        diffs += compare_values("inputs", "sample_order", a["data"]["sample_order"], b["data"]["sample_order"],
                                "sample_order")
    diffs += compare_file_block("code", a["code"], b["code"])
    if "stages" in a or "stages" in b:  # the chain of stage records behind the data
        diffs += compare_stage_chains(a.get("stages", []), b.get("stages", []))
    return diffs + compare_base(a.get("base"), b.get("base"))


def compare_base(a: BaseBlock | None, b: BaseBlock | None) -> list[Difference]:
    """A fine-tune's base release: its files by path, then its lock's digest and status."""
    if a is None or b is None:
        if a is b:
            return []
        change, present = ("added", b) if a is None else ("removed", a)
        assert present is not None  # exactly one side is None here
        return [Difference("inputs", "base", str(present["path"]), change,
                           detail="a model trained from scratch on one side, a fine-tune on the other")]
    diffs = [replace(d, detail=d.detail or f"a file of the base release {b['path']}")  # name the release
             for d in compare_file_block("base", a, b)]
    diffs += compare_values("inputs", "base", {"lock": a["lock"], "status": a["status"]},
                            {"lock": b["lock"], "status": b["status"]}, b["path"])
    return diffs


def compare_toolchain(a: Toolchain, b: Toolchain) -> list[Difference]:
    """What compiled the source: interpreter, platform, distributions, torch's build, repro's compiler."""
    diffs = compare_values("toolchain", "python", a["python"], b["python"], "python")
    diffs += compare_values("toolchain", "platform", a["platform"], b["platform"], "platform")
    diffs += compare_values("toolchain", "distribution", a["distributions"], b["distributions"])
    diffs += compare_values("toolchain", "torch", a["torch"] or {}, b["torch"] or {}, "torch")
    diffs += compare_values("toolchain", "kernels", a.get("kernels") or {}, b.get("kernels") or {}, "kernels")
    ra, rb = a["repro"], b["repro"]
    if ra["version"] != rb["version"]:
        diffs.append(Difference("toolchain", "compiler", "repro version", "changed", ra["version"], rb["version"]))
    return diffs + compare_file_block("compiler", ra, rb, "toolchain")


def compare_build(a: Mapping[str, object], b: Mapping[str, object]) -> list[Difference]:
    """Pins, the flags torch reported, the pinned environment, GPU facts (a lock's `Build`, a checkpoint's)."""
    diffs: list[Difference] = []
    for key in PIN_KEYS:
        if a.get(key, _MISSING) != b.get(key, _MISSING):
            diffs.append(Difference("build", "pin", key, "changed", a.get(key), b.get(key)))
    diffs += compare_values("build", "flag", a.get("flags", {}), b.get("flags", {}), "flags")
    diffs += compare_values("build", "env", a.get("env", {}), b.get("env", {}))
    diffs += compare_values("build", "cuda", a.get("cuda") or {}, b.get("cuda") or {}, "cuda")
    diffs += compare_values("build", "cpu", a.get("cpu") or {}, b.get("cpu") or {}, "cpu")
    known = {*PIN_KEYS, "flags", "env", "cuda", "cpu"}
    rest_a = {k: v for k, v in a.items() if k not in known}
    rest_b = {k: v for k, v in b.items() if k not in known}
    return diffs + compare_values("build", "other", rest_a, rest_b)


def first_loss_difference(a: LossTrajectory, b: LossTrajectory) -> Difference | None:
    """The first logged training step whose loss differs between two trajectories."""
    if a == b:
        return None
    sa, sb = logged_steps(a["steps"], a["every"]), logged_steps(b["steps"], b["every"])
    pa = dict(zip(sa, a["losses"], strict=False))
    pb = dict(zip(sb, b["losses"], strict=False))
    previous = 0
    for step in sorted(set(pa) | set(pb)):
        if pa.get(step) != pb.get(step):
            where = f"first differing logged step; steps up to {previous} agree" if previous else \
                "first logged step already differs"
            return Difference("outputs", "loss", f"step {step}", "changed", pa.get(step), pb.get(step), where)
        previous = step
    if a["steps"] != b["steps"] or a["every"] != b["every"]:
        return Difference("outputs", "loss", "trajectory", "changed", f"{a['steps']} steps every {a['every']}",
                          f"{b['steps']} steps every {b['every']}")
    return Difference("outputs", "loss", "trajectory", "changed", a["sha256"], b["sha256"],
                      "every logged loss agrees; an unlogged step differs")


def compare_outputs(a: Outputs, b: Outputs) -> list[Difference]:
    """Weights file, tensors by name, loss trajectory, final loss and metrics."""
    diffs: list[Difference] = []
    wa, wb = a["weights"], b["weights"]
    if wa["hashes"]["sha256"] != wb["hashes"]["sha256"] or wa["size"] != wb["size"]:
        detail = f"size {wa['size']} -> {wb['size']}" if wa["size"] != wb["size"] else ""
        diffs.append(Difference("outputs", "weights", wa["path"], "changed",
                                wa["hashes"]["sha256"], wb["hashes"]["sha256"], detail))
    diffs += compare_tensor_records(wa["tensors"], wb["tensors"])
    loss = first_loss_difference(a["loss_trajectory"], b["loss_trajectory"])
    diffs += [loss] if loss else []
    if a["final_loss"] != b["final_loss"]:
        diffs.append(Difference("outputs", "loss", "final", "changed", a["final_loss"], b["final_loss"]))
    diffs += compare_values("outputs", "metric", a["metrics"], b["metrics"])
    # Locks written before per-step digests existed lack the field: nothing to compare then.
    sa, sb = a.get("step_digests"), b.get("step_digests")
    if sa is not None and sb is not None and sa != sb:
        diffs.append(Difference("outputs", "step", "parameters", "changed", sa["sha256"], sb["sha256"],
                                "the parameter digests after some step differ"))
    known = {"weights", "final_loss", "loss_trajectory", "metrics", "step_digests"}
    return diffs + compare_values("outputs", "other", {k: v for k, v in a.items() if k not in known},
                                  {k: v for k, v in b.items() if k not in known})


def first_differing_step(a: list[str], b: list[str]) -> int | None:
    """The first step after which two runs' parameter digests differ (0: the initial
    parameters already do); None when both lists agree."""
    for step, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return step
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_tensor_records(a: list[TensorRecord], b: list[TensorRecord]) -> list[Difference]:
    """Tensors by name: content digest, dtype and shape."""
    ta, tb = {t["name"]: t for t in a}, {t["name"]: t for t in b}
    diffs = []
    for name in sorted(set(ta) | set(tb)):
        if name not in tb:
            diffs.append(Difference("outputs", "tensor", name, "removed", ta[name]["sha256"], None))
        elif name not in ta:
            diffs.append(Difference("outputs", "tensor", name, "added", None, tb[name]["sha256"]))
        elif ta[name] != tb[name]:
            x, y = ta[name], tb[name]
            detail = "" if (x["dtype"], x["shape"]) == (y["dtype"], y["shape"]) else \
                f"{x['dtype']}{x['shape']} -> {y['dtype']}{y['shape']}"
            diffs.append(Difference("outputs", "tensor", name, "changed", x["sha256"], y["sha256"], detail))
    return diffs


def compare_locks(a: Lock, b: Lock) -> list[Difference]:
    """Every difference between two valid locks, grouped inputs, build, outputs."""
    diffs = compare_inputs(a["inputs"], b["inputs"]) + compare_build(a["build"], b["build"])
    diffs += compare_toolchain(a["toolchain"], b["toolchain"]) + compare_outputs(a["outputs"], b["outputs"])
    if a["version"] != b["version"]:
        diffs.insert(0, Difference("inputs", "other", "version", "changed", a["version"], b["version"]))
    return diffs


SECTIONS = ("inputs", "build", "toolchain", "outputs")


def render(diffs: list[Difference], indent: str = "  ") -> list[str]:
    """Lines grouped under `inputs:`, `build:`, `toolchain:`, `outputs:` headings (empty groups omitted)."""
    lines: list[str] = []
    for section in SECTIONS:
        group = [d for d in diffs if d.section == section]
        if group:
            lines.append(f"{section}:")
            lines += [indent + d.line() for d in group]
    return lines
