"""The lockfile as types: what `lockfile.read` returns and `lockfile.assemble` takes, key by key. No torch.

These TypedDicts mirror `lockfile.schema.json` (tests/test_lockfile.py checks
every object's required and optional keys against it), so a reader that names a
key the schema lacks is a type error, not a KeyError at run time. The source and
toolchain parts are defined in `repro.records`, below every layer, because the
source hasher and the environment write them; they are named here too, so a
reader of locks imports from one place. Objects the schema leaves open are
`JsonObject`, arbitrary JSON (a resolved config, flags), unless their values
have one type (metrics are floats, env strings).
"""

from typing import NotRequired, TypedDict

from repro.records import (
    BaseBlock,
    BaseLock,
    Compiler,
    ConfigBlock,
    DataBlock,
    FileRecord,
    FilesBlock,
    Hashes,
    Inputs,
    JsonObject,
    JsonValue,
    KernelToolchain,
    PinRecord,
    PlatformFacts,
    Preprocess,
    PreprocessPackage,
    PythonFacts,
    ResumeSource,
    SampleOrder,
    StageRecord,
    Toolchain,
    ToolchainFacts,
    TorchFacts,
)

__all__ = [
    "BaseBlock", "BaseLock", "Build", "Compiler", "ConfigBlock", "CpuFacts", "CudaFacts", "DataBlock", "FileRecord",
    "FilesBlock", "Hashes", "Inputs", "JsonObject", "JsonValue", "KernelToolchain", "Lock",
    "LossTrajectory", "Outputs", "PinRecord", "PlatformFacts", "Preprocess", "PreprocessPackage", "PythonFacts",
    "ResumeBoundary", "ResumeDifference", "ResumeSource", "SampleOrder", "StageRecord", "StepDigests",
    "TensorRecord", "Toolchain", "ToolchainFacts", "TorchFacts", "Weights",
]


class CudaFacts(TypedDict):
    """The GPU a CUDA build ran on (repro.train.determinism.cuda_facts): the schema leaves it open."""

    gpu: str
    compute_capability: str
    cuda: str | None
    cudnn: int | None


class CpuFacts(TypedDict):
    """What decides a native build's bits besides the pins: the CPU and the code paths its libraries chose."""

    vendor: str
    family: str
    model: str
    mkl: str | None


class ResumeDifference(TypedDict):
    kind: str  # a repro.lock.lockdiff.Difference's kind: code, compiler, distribution, pin, ...
    name: str
    change: str


class ResumeBoundary(TypedDict):
    step: int
    source: ResumeSource
    differs: list[ResumeDifference]  # what in `source` differs from the lock's own source and toolchain


class Build(PinRecord):
    """The pins, and what the build set and saw because of them."""

    flags: JsonObject  # what the loop set in torch and found (repro.train.loop.RunFlags): open in the schema
    env: dict[str, str]
    cuda: CudaFacts | None
    cpu: CpuFacts | None  # a native build's CPU (build.kernels == "vendor" on the CPU); else None
    # A version 3 lock only: every resume boundary, when some step came from another source.
    resumes: NotRequired[list[ResumeBoundary]]


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
