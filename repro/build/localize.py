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

from repro.build.check import BASELINE, Project, Run, Variation, train
from repro.lock.diff import first_differing_step


def first_step(a: Run, b: Run) -> int | None:
    """The first step after which the parameters differ; None when every step agrees (or unknown)."""
    if a.digests is None or b.digests is None:
        return None
    return first_differing_step(a.digests, b.digests)


def trace_step(project: Project, variation: Variation, step: int) -> tuple[Path | None, str | None]:
    """Replay `variation`'s build up to `step`, recording that step's ops; (trace folder, error)."""
    folder = project.work / f"trace-{variation.axis}-{variation.name.replace(' ', '-')}-step{step}"
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

        if step not in self.cache:
            self.cache[step] = trace_step(self.project, self.baseline, step)
        base, error = self.cache[step]
        if base is None:
            return {"error": f"baseline replay failed: {error}"}
        other, error = trace_step(self.project, variation, step)
        if other is None:
            return {"error": f"replay failed: {error}"}
        found = first_difference(base, other)
        if found is None:
            return {"error": f"every op of step {step} agreed on replay (the difference came from the state "
                             "before the step: optimizer state or RNG)"}
        return {**found, "line": describe(found)}


def explain(base: Run, other: Run) -> str:
    """In words, where two finished builds differ when no step does."""
    from repro.lock.diff import compare_locks

    assert base.lock is not None and other.lock is not None
    if base.weights_sha256 != other.weights_sha256:
        return "every step's parameters agree, but the weights written differ"
    names = [f"{d.section}.{d.kind} {d.name}" for d in compare_locks(base.lock, other.lock)]
    return "same weights; the locks differ: " + ", ".join(names[:5]) if names else "identical"
