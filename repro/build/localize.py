"""Where two builds part: the first step whose parameters differ, then the first operation.

The step comes from the per-step parameter digests every build records
(`step_digests.txt`, whose digest is in the lock). The operation comes from
replaying that step in both conditions under the dispatch recorder
(`repro.train.trace`) and comparing the two op sequences. `repro check` and
`repro verify --localize` both come through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.build.check import Project, Run, train
from repro.build.variations import BASELINE, Variation
from repro.lock.diff import first_differing_step
from repro.lock.types import Lock

REPLAYS = 3  # replays of a variation before concluding that every op agrees


def first_step(a: Run, b: Run) -> int | None:
    """The first step after which the parameters differ; None when every step agrees (or unknown)."""
    if a.digests is None or b.digests is None:
        return None
    return first_differing_step(a.digests, b.digests)


def trace_step(project: Project, variation: Variation, step: int, attempt: int = 1) -> tuple[Path | None, str | None]:
    """Replay `variation`'s build up to `step` under the op recorder; (trace folder, error)."""
    folder = project.work / f"trace-{variation.axis}-{variation.name.replace(' ', '-')}-step{step}-{attempt}"
    run = train(project, variation, trace=(step, folder))
    if run.error is not None and not (folder / "ops.json").is_file():
        return None, run.error
    if not (folder / "ops.json").is_file():
        return None, f"the replay recorded no ops for step {step}"
    return folder, None


class Localizer:
    """Replays steps, sharing the baseline's recordings between variations."""

    def __init__(self, project: Project, baseline: Variation = BASELINE) -> None:
        self.project, self.baseline = project, baseline
        self.cache: dict[int, tuple[Path | None, str | None]] = {}

    def op(self, variation: Variation, step: int) -> dict[str, Any]:
        """The first op of `step` whose outputs differ between the baseline and `variation`."""
        from repro.train.trace import describe, first_difference

        if step == 0:
            return {"error": "the initial parameters differ: building the model depends on this condition "
                             "(before any step, so no op of a step to name)"}
        if step not in self.cache:
            self.cache[step] = trace_step(self.project, self.baseline, step)
        base, error = self.cache[step]
        if base is None:
            return {"error": f"baseline replay failed: {error}"}
        found, tries = None, 0
        while found is None and tries < REPLAYS:  # a nondeterministic op need not part every replay
            tries += 1
            other, error = trace_step(self.project, variation, step, tries)
            if other is None:
                return {"error": f"replay failed: {error}"}
            found = first_difference(base, other)
        if found is None:
            return {"error": f"every op of steps 1-{step} agreed in {tries} replays (the difference came from "
                             "outside the steps, or is too rare to catch)"}
        line = describe(found)
        if found.get("step") not in (None, step):
            line += f" (the replays parted at step {found['step']}, not {step}: the same conditions give other bits)"
        return {**found, "line": line}


def explain(base: Run, other: Run) -> str:
    """In words, where two finished builds differ when no step does."""
    from repro.lock.diff import compare_locks

    assert base.lock is not None and other.lock is not None
    if base.weights_sha256 != other.weights_sha256:
        return "every step's parameters agree, but the weights written differ"
    names = [f"{d.section}.{d.kind} {d.name}" for d in compare_locks(base.lock, other.lock)]
    return "same weights; the locks differ: " + ", ".join(names[:5]) if names else "identical"


def name_first_step(diffs: list[Any], lock: Lock, lock_dir: Path, rebuilt: Lock,
                    rebuilt_dir: Path) -> list[Any]:
    """Give verify's "step parameters differ" the exact step, from the digests beside both locks."""
    import dataclasses

    from repro.lock.lockfile import read_step_digests

    out = []
    for d in diffs:
        if d.kind == "step" and d.section == "outputs":
            ours, theirs = read_step_digests(lock_dir, lock), read_step_digests(rebuilt_dir, rebuilt)
            step = None if ours is None or theirs is None else first_differing_step(ours, theirs)
            if step == 0:
                d = dataclasses.replace(d, name="step 0", stats={"first_step": 0},
                                        detail="the initial parameters already differ: model construction")
            elif step is not None:
                d = dataclasses.replace(d, name=f"step {step}", stats={"first_step": step},
                                        detail=f"the parameters first differ after step {step} of "
                                               f"{len(ours or []) - 1}; after step {step - 1} they agree")
            elif ours is None:
                d = dataclasses.replace(d, detail="the lock's step_digests.txt is not beside it (or does not "
                                                  "match its digest): the exact step cannot be named")
        out.append(d)
    return out


def localize_lock(lock: Lock, root: Path, step: int, recorded: list[str], work: Path) -> dict[str, Any]:
    """Name the op where this machine parts from the lock's build at `step`, if some environment
    here reproduces the lock's parameters after that step (an emulated CPU model under qemu-user).

    Every candidate trains the lock's config (its pins applied) for `step` steps in a fresh
    process; the first whose digests match `recorded` up to `step` stands in for the lock's
    machine, and the step is replayed there and on this machine under the op recorder.
    """
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

    from repro.build.rebuild import rebuild_config
    from repro.build.variations import _cpu
    from repro.canonical import atomic_write_bytes
    from repro.source.config import ConfigSource

    resolved, _ = rebuild_config(lock)
    config_dir = work / "lock-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(config_dir / "rebuild.yaml", yaml.safe_dump(resolved, sort_keys=True).encode("utf-8"))
    project = Project(ConfigSource(config_dir, "rebuild", root, False), [], resolved, step, work)
    tried = []
    for variation in _cpu(project):
        if not variation.qemu:
            return {"error": f"cannot localize: {variation.what.removeprefix('skipped: ')}"}
        tried.append(variation.name)
        run = train(project, variation)
        if run.digests is not None and run.digests[:step + 1] == recorded[:step + 1]:
            found = Localizer(project).op(variation, step)
            return {"environment": variation.name, **found}
    return {"error": f"no environment here reproduces the lock's parameters after step {step} "
                     f"(tried this CPU and {', '.join(tried)}): the operation cannot be named locally"}
