"""Where two builds part: the first step whose parameters differ, then the first operation.

The step comes from the per-step parameter digests every build records
(`step_digests.txt`, whose digest is in the lock). The operation comes from
comparing two op sequences recorded under the dispatch recorder
(`repro.train.trace`) up to that step: `repro check`'s own builds record theirs
(see check_report), and a condition without a recording, or whose recording
agrees, is replayed. `repro check` and `repro verify --localize` both come
through here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from repro.check.project import Project
from repro.check.runs import Run, train
from repro.check.variations import BASELINE, Variation
from repro.filenames import OPS_NAME, REBUILD_NAME
from repro.lock.lockdiff import first_differing_step
from repro.lock.types import Lock

REPLAYS = 3  # replays of a variation before concluding that every op agrees


def first_step(a: Run, b: Run) -> int | None:
    """The first step after which the parameters differ; None when every step agrees (or unknown)."""
    if a.digests is None or b.digests is None:
        return None
    return first_differing_step(a.digests, b.digests)


def trace_folder(project: Project, variation: Variation, what: str) -> Path:
    """Where a build of `variation` records its ops: `what` is `all` (the check's own build) or a replay's step."""
    return project.work / f"trace-{variation.axis}-{variation.name.replace(' ', '-')}-{what}"


def trace_step(project: Project, variation: Variation, step: int, attempt: int = 1) -> tuple[Path | None, str | None]:
    """Replay `variation`'s build up to `step` under the op recorder; (trace folder, error)."""
    folder = trace_folder(project, variation, f"step{step}-{attempt}")
    run = train(project, variation, trace=(step, folder))
    if run.error is not None and not (folder / OPS_NAME).is_file():
        return None, run.error
    if not (folder / OPS_NAME).is_file():
        return None, f"the replay recorded no ops for step {step}"
    return folder, None


# A replay under the op recorder: attempt number -> (its trace folder, or why there is none).
Tracer = Callable[[int], tuple[Path | None, str | None]]


def first_op(base: Tracer, other: Tracer, step: int) -> dict[str, Any]:
    """The first op of steps 1..`step` whose outputs differ between two replays; `other` is
    replayed up to REPLAYS times (a nondeterministic op need not part every replay)."""
    from repro.train.opdiff import describe, first_difference

    if step == 0:
        return {"error": "the initial parameters differ: building the model depends on this condition "
                         "(before any step, so no op of a step to name)"}
    ours, error = base(1)
    if ours is None:
        return {"error": f"baseline replay failed: {error}"}
    found, tries = None, 0
    while found is None and tries < REPLAYS:
        tries += 1
        theirs, error = other(tries)
        if theirs is None:
            return {"error": f"replay failed: {error}"}
        found = first_difference(ours, theirs, upto=step)
    if found is None:
        return {"error": f"every op of steps 1-{step} agreed in {tries} replays (the difference came from "
                         "outside the steps, or is too rare to catch)"}
    line = describe(found)
    if found.get("step") not in (None, step):
        line += f" (the replays parted at step {found['step']}, not {step}: the same conditions give other bits)"
    return {**found, "line": line}


def _recorded(folder: Path) -> Tracer:
    """A replay that has already run: its folder, whatever the attempt."""
    return lambda _attempt: (folder, None)


class Localizer:
    """Names the first differing op against the baseline, replaying only what was not recorded.

    `recorded`: the baseline build's own recording of its steps; without one, the
    baseline is replayed once per distinct step and the replays are shared.
    """

    def __init__(self, project: Project, baseline: Variation = BASELINE, recorded: Path | None = None) -> None:
        self.project, self.baseline = project, baseline
        self.cache: dict[int, tuple[Path | None, str | None]] = {}
        self.recorded = recorded if recorded is not None and (recorded / OPS_NAME).is_file() else None

    def op(self, variation: Variation, step: int, recorded: Path | None = None) -> dict[str, Any]:
        """The first op of `step` whose outputs differ between the baseline and `variation`;
        `recorded`: a recording of the variation's steps made already, replayed only if it agrees."""
        def base(_attempt: int) -> tuple[Path | None, str | None]:
            if self.recorded is not None:
                return self.recorded, None
            if step not in self.cache:
                self.cache[step] = trace_step(self.project, self.baseline, step)
            return self.cache[step]

        def other(attempt: int) -> tuple[Path | None, str | None]:
            if recorded is not None and (recorded / OPS_NAME).is_file():
                attempt -= 1
                if attempt == 0:
                    return recorded, None
            return trace_step(self.project, variation, step, attempt)

        return first_op(base, other, step)


def explain(base: Run, other: Run) -> str:
    """In words, where two finished builds differ when no step does."""
    from repro.lock.lockdiff import compare_locks

    assert base.lock is not None and other.lock is not None
    if base.weights_sha256 != other.weights_sha256:
        return "every step's parameters agree, but the weights written differ"
    names = [f"{d.section}.{d.kind} {d.name}" for d in compare_locks(base.lock, other.lock)]
    return "same weights; the locks differ: " + ", ".join(names[:5]) if names else "identical"


def name_first_step(diffs: list[Any], lock: Lock, lock_dir: Path, rebuilt: Lock,
                    rebuilt_dir: Path) -> list[Any]:
    """Give verify's "step parameters differ" the exact step, from the digests beside both locks."""
    from repro.lock.lockfile import read_step_digests

    out = []
    for d in diffs:
        if d.kind == "step" and d.section == "outputs":
            d = _named_step(d, read_step_digests(lock_dir, lock), read_step_digests(rebuilt_dir, rebuilt))
        out.append(d)
    return out


def _named_step(d: Any, ours: list[str] | None, theirs: list[str] | None) -> Any:
    """The step difference `d`, named by the first step after which the parameter digests differ."""
    import dataclasses

    step = None if ours is None or theirs is None else first_differing_step(ours, theirs)
    if step is None:
        return d if ours is not None else dataclasses.replace(
            d, detail="the lock's step_digests.txt is not beside it (or does not match its digest): the exact step "
                      "cannot be named")
    detail = "the initial parameters already differ: model construction" if step == 0 else \
        f"the parameters first differ after step {step} of {len(ours or []) - 1}; after step {step - 1} they agree"
    return dataclasses.replace(d, name=f"step {step}", stats={"first_step": step}, detail=detail)


# Where the lock's own build may be reproduced here: this CPU in the clean shell `repro check`
# starts from, then each CPU model qemu-user emulates.
HERE = Variation("lock", "this machine, a clean shell", BASELINE.what)


def localize_lock(lock: Lock, root: Path, step: int, recorded: list[str], work: Path,
                  replay_here: Callable[[Path, dict[str, str]], None]) -> dict[str, Any]:
    """Name the op where verify's rebuild parts from the lock's build at `step`, if some environment
    here reproduces the lock's parameters up to that step.

    Each candidate (`HERE`, then the qemu CPU models) trains the lock's config (its
    pins applied) in a fresh process, recording steps 1..`step` under the op
    recorder; the first whose digests match `recorded` up to `step` stands in for
    the lock's machine. `replay_here(work_dir, env)` runs verify's rebuild again,
    as it ran, with `env` added (the recorder's variables), to record this side.
    """
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

    from repro.builder.rebuild import rebuild_config
    from repro.canonical import atomic_write_bytes
    from repro.check.variations import cpu_variations
    from repro.errors import ReproError
    from repro.source.config import ConfigSource
    from repro.train.trace import TRACE_DIR_ENV, TRACE_STEP_ENV

    resolved, _ = rebuild_config(lock)
    config_dir = work / "lock-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    # out_dir is no input (the lock does not hold it), but the config must have the key to override it.
    composable = {**resolved, "out_dir": "out"}
    atomic_write_bytes(config_dir / REBUILD_NAME, yaml.safe_dump(composable, sort_keys=True).encode("utf-8"))
    steps = int(resolved["trainer"]["max_steps"])  # the lock's whole run: a schedule may depend on it
    project = Project(ConfigSource(config_dir, Path(REBUILD_NAME).stem, root, False), [], resolved, steps, work)

    def here(attempt: int) -> tuple[Path | None, str | None]:
        folder = work / f"here-{attempt}"
        try:
            replay_here(folder, {TRACE_STEP_ENV: str(step), TRACE_DIR_ENV: str(folder / "trace")})
        except ReproError as exc:
            return None, str(exc)
        return (folder / "trace", None) if (folder / "trace" / OPS_NAME).is_file() else \
            (None, f"the replay recorded no ops for step {step}")

    tried = []
    for variation in [HERE, *(v for v in cpu_variations(project) if v.qemu)]:
        tried.append(variation.name)
        folder = work / f"trace-{len(tried)}"
        run = train(project, variation, trace=(step, folder))
        if run.digests is not None and run.digests[:step + 1] == recorded[:step + 1] and \
                (folder / OPS_NAME).is_file():
            return {"environment": variation.name, **first_op(_recorded(folder), here, step)}
    missing = "" if len(tried) > 1 else f"; {cpu_variations(project)[0].what.removeprefix('skipped: ')}"
    return {"error": f"no environment here reproduces the lock's parameters up to step {step} "
                     f"(tried {', '.join(tried)}{missing}): the operation cannot be named locally"}
