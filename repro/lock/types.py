"""The lockfile as types: what `lockfile.read` returns, key by key. No torch.

These TypedDicts mirror `lockfile.schema.json` (tests/test_lockfile.py checks
every object's required and optional keys against it), so a reader that names a
key the schema lacks is a type error, not a KeyError at run time. Objects the
schema leaves open (a config, flags, metrics) stay `dict[str, Any]`.
"""

from typing import Any, NotRequired, TypedDict


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
    resolved: dict[str, Any]
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


class Inputs(TypedDict):
    config: ConfigBlock
    data: DataBlock
    code: FilesBlock
    stages: NotRequired[list[dict[str, Any]]]  # records of the stages that made the data (repro.lock.stagerecord)
    base: NotRequired[BaseBlock]  # a fine-tune's base release


class CpuFacts(TypedDict):
    """What decides a native build's bits besides the pins: the CPU and the code paths its libraries chose."""

    vendor: str
    family: str
    model: str
    mkl: str | None


class ResumeSource(TypedDict):
    """The source identity of the run that trained up to a resume boundary, as digests (repro.lock.identity)."""

    config: str
    data: str
    code: str
    pins: str
    toolchain: str
    compiler: str


class ResumeDifference(TypedDict):
    kind: str  # a repro.lock.lockdiff.Difference's kind: code, compiler, distribution, pin, ...
    name: str
    change: str


class ResumeBoundary(TypedDict):
    step: int
    source: ResumeSource
    differs: list[ResumeDifference]  # what in `source` differs from the lock's own source and toolchain


class PinsRecord(TypedDict):
    """The pins, as `repro.environment.pins.Pins.to_json` writes them, in the lock's (sorted) key order.

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


class Build(PinsRecord):
    flags: dict[str, Any]
    env: dict[str, str]
    cuda: dict[str, Any] | None
    cpu: CpuFacts | None  # a native build's CPU (build.kernels == "vendor" on the CPU); else None
    # A version 3 lock only: every resume boundary, when some step came from another source.
    resumes: NotRequired[list[ResumeBoundary]]


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
    version: str


class KernelToolchain(TypedDict):
    cxx: str


class Toolchain(TypedDict):
    python: PythonFacts
    platform: PlatformFacts
    distributions: dict[str, str]
    torch: TorchFacts | None
    kernels: NotRequired[KernelToolchain]  # the C++ compiler of repro's portable kernels, when a build loaded them
    repro: Compiler



class TensorRecord(TypedDict):
    name: str
    dtype: str
    shape: list[int]
    sha256: str


class Weights(FileRecord):
    tensors: list[TensorRecord]


class LossTrajectory(TypedDict):
    every: int
    steps: int
    losses: list[float]
    sha256: str


class StepDigests(TypedDict):
    path: str
    steps: int
    algorithm: str
    sha256: str


class Outputs(TypedDict):
    weights: Weights
    final_loss: float | None
    loss_trajectory: LossTrajectory
    metrics: dict[str, float]
    files: NotRequired[list[FileRecord]]
    samples: NotRequired[list[str]]
    step_digests: NotRequired[StepDigests]


class Lock(TypedDict):
    version: int
    inputs: Inputs
    build: Build
    toolchain: Toolchain
    outputs: Outputs
