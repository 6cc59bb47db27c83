"""The JSON records repro writes, as types: the lock's source and toolchain parts, stage records, run.json.

This module is the bottom layer (.importlinter) and imports nothing of repro,
because the writers sit in every layer: the source hasher makes `Inputs`, the
environment `ToolchainFacts`, a stage run a `StageRecord`, strict JSON reading
(repro.safeio) a `JsonObject`. Each TypedDict mirrors an object of a schema, key by key, and a
test holds the two together (tests/test_lockfile.py, tests/test_records.py).
`repro.lock.types` adds the lock's own sections and names them all for readers.

`JsonValue` is for data that really is arbitrary JSON, and only that: a resolved
Hydra config, a stage's params, a JSON Schema. Code that reads into it narrows
with isinstance, so a config of the wrong shape is an error, never a guess.
"""

from collections.abc import Mapping, Sequence
from typing import NotRequired, TypeAlias, TypedDict

# Nested arrays and objects are read-only views (Sequence, Mapping), so a list[str] or a dict[str, int]
# is JSON as it stands; isinstance(value, list) or (value, dict) narrows them. JsonObject, the top
# level, is a dict: the one level a writer fills in.
JsonValue: TypeAlias = "None | bool | int | float | str | Sequence[JsonValue] | Mapping[str, JsonValue]"
JsonObject: TypeAlias = "dict[str, JsonValue]"


class Hashes(TypedDict):
    sha256: str  # other algorithms may join (data.extra_hashes)


class FileRecord(TypedDict):
    path: str
    size: int
    hashes: Hashes


class FilesBlock(TypedDict):
    files: list[FileRecord]
    root_digest: str


class ConfigBlock(TypedDict):
    resolved: JsonObject  # the hashed view of the resolved config (repro.source.config.hashed_view)
    sha256: str


class PreprocessPackage(TypedDict):
    name: str
    version: str


class Preprocess(TypedDict):
    target: str
    file: NotRequired[FileRecord]
    package: NotRequired[PreprocessPackage]


class SampleOrder(TypedDict):
    sha256: str
    count: int


class DataBlock(FilesBlock):
    preprocess: NotRequired[Preprocess]
    # Required in a lock; absent from `hash_inputs`' view, which is made before training.
    sample_order: NotRequired[SampleOrder]


class BaseLock(TypedDict):
    path: str
    sha256: str
    weights_path: str
    weights_sha256: str
    config_sha256: str
    data_root_digest: str
    version: int


class BaseBlock(FilesBlock):
    """A fine-tune's base release (repro.source.base_model)."""

    path: str
    status: str  # "locked" | "unverified base"
    lock: BaseLock | None


class PythonFacts(TypedDict):
    implementation: str
    version: str


class PlatformFacts(TypedDict):
    system: str
    machine: str
    libc: str | None


class TorchFacts(TypedDict):
    version: str
    build: str | None
    commit: str | None
    cuda: str | None
    cudnn: str | None
    mkl: str | None
    onednn: str | None


class Compiler(FilesBlock):
    """The toolchain's `repro` entry: its version and the compiler modules that ran, hashed."""

    version: str


class KernelToolchain(TypedDict):
    cxx: str


class InterpreterFacts(TypedDict):
    python: PythonFacts
    platform: PlatformFacts


class ToolchainFacts(InterpreterFacts):
    """The toolchain less `repro`, as `repro.environment.toolchain.record` reads it."""

    distributions: dict[str, str]
    torch: TorchFacts | None
    kernels: NotRequired[KernelToolchain]  # the C++ compiler of repro's portable kernels, when a build loaded them


class StageToolchain(InterpreterFacts):
    """A stage record's `toolchain`: a stage never loads repro's kernels."""

    distributions: dict[str, str]
    torch: TorchFacts | None
    repro: Compiler


class Toolchain(StageToolchain):
    kernels: NotRequired[KernelToolchain]  # the C++ compiler of repro's portable kernels, when a build loaded them


class PinRecord(TypedDict):
    """The pins, as `repro.environment.pins.Pins.to_json` writes them, in the lock's (sorted) key order;
    the lock's `build` extends them.

    The one list of pin names is Pins' fields (`repro.environment.pins.PIN_KEYS`). A type
    checker reads a TypedDict's keys only as written, so they are written once more here;
    tests/test_single_source.py and tests/test_lockfile.py check that the two agree, key by
    key and type by type (and both with the schema).
    """

    cpu_capability: str
    deterministic: bool
    device: str
    kernels: str
    mkl_cbwr: str | None
    mkldnn: bool
    precision: str
    profile: str
    seed: int
    threads: int
    unportable: str
    world_size: int


class StageDeclaration(TypedDict):
    """A stage as its config declares it (repro.source.stages.StageSpec.declaration)."""

    target: str
    params: JsonObject
    inputs: list[str]
    outputs: list[str]
    code: list[str]


class StagePins(TypedDict):
    """The pins a stage runs under (repro.builder.stage.stage_pins)."""

    threads: int
    cpu_capability: str
    seed: int
    mkl_cbwr: str | None


class StageRecord(TypedDict):
    """What one stage read, ran and wrote (repro.lock.stagerecord; stagerecord.schema.json)."""

    version: int
    stage: str
    declared: StageDeclaration
    pins: StagePins
    config_sha256: str
    inputs: FilesBlock
    code: FilesBlock
    toolchain: StageToolchain
    outputs: FilesBlock


class ResumeSource(TypedDict):
    """The source identity of the run that trained up to a resume boundary, as digests (repro.lock.identity)."""

    config: str
    data: str
    code: str
    pins: str
    toolchain: str
    compiler: str


class Inputs(TypedDict):
    config: ConfigBlock
    data: DataBlock
    code: FilesBlock
    stages: NotRequired[list[StageRecord]]  # records of the stages that made the data (repro.lock.stagerecord)
    base: NotRequired[BaseBlock]  # a fine-tune's base release



class GitState(TypedDict):
    """The commit checked out at the root, and whether the code files differ from it (repro.source.inputs)."""

    commit: str
    dirty: bool


class CheckpointCounts(TypedDict):
    every: int
    keep: int
    written: int


class ResumedFrom(TypedDict):
    path: str  # the checkpoint folder, as the build named it
    step: int


class RunResume(TypedDict):
    """A resume boundary as run.json lists it: every one, whatever its source."""

    step: int
    checkpoint: str
    source: ResumeSource


class CheckpointReport(TypedDict):
    """What run.json says about checkpoints and resumes (repro.train.resume.Session.report)."""

    checkpoints: CheckpointCounts
    resumed_from: ResumedFrom | None
    resumes: list[RunResume]
    skipped_checkpoints: list[str]


class BuildFacts(CheckpointReport):
    """What the build adds to run.json: the git state, and checkpoints and resumes."""

    git: GitState | None


class RunRecord(BuildFacts):
    """run.json: the machine-incidental facts of one build, beside the lock and never hashed into it.

    Written by repro.builder.outputs; its schema is docs/run.schema.json (tests/test_records.py).
    """

    argv: list[str]
    hostname: str
    cpu_model: str
    platform: str
    cores: int | None
    wall_seconds: float
    finished_unix: int
    datasets_fingerprint: str
    python_executable: str


def dig(value: JsonValue, *keys: str) -> JsonValue:
    """`value[k1][k2]...` in arbitrary JSON (a resolved config), or None where a key is missing or a level
    is not an object: how a reader narrows `JsonValue` to what it looks for."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def git_record(run: JsonValue) -> GitState | None:
    """run.json's `git`, if it is the record a build writes: run.json is read beside a release, never trusted."""
    git = dig(run, "git")
    if not isinstance(git, dict):
        return None
    commit, dirty = git.get("commit"), git.get("dirty")
    return {"commit": commit, "dirty": dirty} if isinstance(commit, str) and isinstance(dirty, bool) else None
