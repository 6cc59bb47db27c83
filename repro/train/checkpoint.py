"""Checkpoint folders on disk: written atomically, checked by digest, never unpickled. No torch.

The format is specified in docs/checkpoints.md and `checkpoint.schema.json` beside
this module. A checkpoint is a folder `step-NNNNNNNN/` holding safetensors files,
`state.json`, and `MANIFEST.json` with every file's size and sha256. The folder is
built under a temporary name and renamed into place only once the manifest, the
last file, is on disk; so a folder with a valid name is either complete or was
damaged afterwards, and a damaged one fails its digests and is skipped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict, cast

from repro.canonical import canonical_json, fsync_dir, sha256_bytes
from repro.errors import CheckpointError, CheckpointTooOld, DataError, TrainingFailed, output_error
from repro.filenames import MANIFEST_NAME, OPTIMIZER_NAME, PICKLED_SUFFIXES, STATE_NAME, WEIGHTS_NAME
from repro.lock.identity import Boundary, Identity
from repro.records import FileRecord, Inputs, JsonObject, JsonValue, PinRecord
from repro.safeio import loads, open_regular, read_bytes
from repro.source.hashfile import digest_fd
from repro.source.statkey import pack_key

VERSION = 2  # 2: state.json records the source identity of the run that wrote it (repro.lock.identity)
MODEL_NAME = WEIGHTS_NAME
REQUIRED = (MODEL_NAME, OPTIMIZER_NAME, STATE_NAME)
SCHEMA_PATH = Path(__file__).resolve().parent / "checkpoint.schema.json"

_STEP_DIR = re.compile(r"^step-(\d{8,})$")


# Writes one file of a checkpoint to the path it is given (safetensors' save_file, ...).
Writer = Callable[[Path], None]


# state.json and MANIFEST.json as types. Each mirrors an object of checkpoint.schema.json
# key by key (tests/test_checkpoint_schema.py), as repro.lock.types mirrors the lock's schema.
class Manifest(TypedDict):
    version: int
    step: int
    files: list[FileRecord]


class OrderPosition(TypedDict):
    """Where the sample order stands after the last step, and the digest of every sample drawn so far."""

    epoch: int
    offset: int
    count: int
    sha256: str


class PythonRng(TypedDict):
    version: int
    state: list[int]  # the Mersenne Twister's 624 words, then its position
    gauss_next: float | None


class NumpyRng(TypedDict):
    bit_generator: str
    keys: list[int]
    pos: int
    has_gauss: int
    cached_gaussian: float


class RngState(TypedDict):
    python: PythonRng
    numpy: NumpyRng
    torch: str  # the CPU generator's state bytes, as hex
    cuda: list[str]  # each initialised device's, as hex


class StepState(TypedDict):
    """What `repro.train.state.capture` takes after a step: everything the next step depends on, but tensors."""

    version: int
    step: int
    sample_order: OrderPosition
    losses: list[float]
    step_digests: list[str]
    rng: RngState
    # state_dicts in `repro.train.state.encode`'s tagged JSON (tensors are in the safetensors files)
    optimizer: JsonValue
    scheduler: JsonValue
    grad_scaler: JsonValue


class CheckpointBuild(PinRecord):
    packages: Mapping[str, str | None]  # installed versions of the recorded distributions (None: not installed)


class RunSource(TypedDict):
    """The inputs and build a run started from: stored in every checkpoint, compared before a resume."""

    inputs: Inputs
    build: CheckpointBuild


class CheckpointState(StepState, RunSource):
    """state.json: a step's state, the source it came from, and the identity of the run that wrote it."""

    resumes: list[Boundary]  # every earlier resume boundary of this run, oldest first
    identity: Identity


@dataclass(frozen=True)
class Checkpoint:
    """One verified checkpoint: its parsed state, the paths of its files, and the stat each had when hashed.

    `keys` holds `statkey.pack_key` of each tensor file's descriptor while its
    digest was taken: `open_checked` hands out a file only while it still is that
    one, unchanged, so what a resume loads is what `read` checked.
    """

    path: Path
    step: int
    state: CheckpointState
    files: dict[str, Path]
    keys: dict[str, bytes] = field(default_factory=dict)


def dir_name(step: int) -> str:
    return f"step-{step:08d}"


@lru_cache(maxsize=1)
def schema() -> JsonObject:
    loaded: JsonObject = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


def write(root: Path, step: int, writers: dict[str, Writer]) -> Path:
    """Write `root/step-N/` atomically: files into a temp folder, manifest last, rename.

    The unit of atomicity is the folder: a temp folder beside the final one, every
    file in it written and fsynced, the folder fsynced, `os.replace` to its name,
    then `root` fsynced. (A temp name per file inside a folder that is itself
    temporary would only add fsyncs.) Files stream to disk and are hashed back
    from the page cache, so a checkpoint never sits in memory a second time.
    """
    missing = [n for n in REQUIRED if n not in writers]
    if missing:
        raise ValueError(f"checkpoint at step {step} lacks {missing}")
    root.mkdir(parents=True, exist_ok=True)
    final = root / dir_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        # hashlib releases the GIL: hash and fsync each file in a thread while the next is
        # written (in the order given: largest first leaves the least hashing at the end).
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = {}
            for name in writers:
                writers[name](tmp / name)
                pending[name] = pool.submit(_hash_file, tmp / name, True)
            files = [{"path": n, "size": size, "hashes": {"sha256": digest}}
                     for n in sorted(writers) for size, digest in [pending[n].result()]]
        _write_synced(tmp / MANIFEST_NAME, canonical_json({"version": VERSION, "step": step, "files": files}))
        fsync_dir(tmp)
        if final.exists():  # an unusable earlier write of this step (it was skipped on resume)
            _remove(final)
        os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            root.rmdir()  # only if empty: a first checkpoint that failed leaves no folder behind
        failure = _os_error(exc)
        if failure is not None:  # a full disk, a quota, no permission: one line naming the checkpoint
            raise output_error(failure, root / final.name) from None
        raise
    fsync_dir(root)
    return final


def read(path: Path) -> Checkpoint:
    """Load and verify one checkpoint folder; CheckpointError says what is wrong with it."""
    path = Path(path)
    refuse_pickled(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint folder (expected {MANIFEST_NAME} and safetensors files)")
    try:
        # validated against the schema that Manifest mirrors
        manifest = cast(Manifest, _load_json(path / MANIFEST_NAME, f"{path.name}/{MANIFEST_NAME}", "#/$defs/manifest"))
    except CheckpointTooOld as exc:  # name the whole path: this one is refused, not skipped
        raise CheckpointTooOld(f"{path.parent}/{exc}") from None
    records = {rec["path"]: rec for rec in manifest["files"]}
    absent = [n for n in REQUIRED if n not in records]
    if absent:
        raise CheckpointError(f"{path.name}/{MANIFEST_NAME}: lists no {absent}")
    keys: dict[str, bytes] = {}
    for name, rec in records.items():
        refuse_pickled(path / name)
        if name != STATE_NAME:
            size, digest, keys[name] = _hash_checked(path / name, f"{path.name}/{name}")
            _check(path, name, rec, size, digest)
    # state.json is parsed from the very bytes that were checked
    raw = read_bytes(path / STATE_NAME, f"checkpoint {STATE_NAME}", error=CheckpointError)
    _check(path, STATE_NAME, records[STATE_NAME], len(raw), sha256_bytes(raw))
    # validated against the schema that CheckpointState mirrors
    state = cast(CheckpointState, _parse_json(raw, f"{path.name}/{STATE_NAME}", "#/$defs/state"))
    check_state(state, f"{path.name}/{STATE_NAME}")
    named = parse_step(path.name)
    if manifest["step"] != state["step"] or named not in (None, state["step"]):
        raise CheckpointError(f"{path.name}: folder name, manifest and state.json disagree on the step")
    return Checkpoint(path, state["step"], state, {name: path / name for name in records}, keys)


def open_checked(ckpt: Checkpoint, name: str) -> int:
    """A descriptor on the checkpoint file `name`, if it is still the file `read` hashed, unchanged.

    Opened as `read` opened it (no link, a regular file), and its stat must equal
    the one that held while its digest was taken (device, inode, size, mtime,
    ctime): a file swapped or rewritten since the check is a CheckpointError, never
    loaded. Load it through this descriptor (`/proc/self/fd/N`), then call
    `still_checked`; close it after.
    """
    where = f"{ckpt.path.name}/{name}"
    fd, st = open_regular(ckpt.files[name], f"checkpoint file {where}", CheckpointError)
    if pack_key(st) != ckpt.keys.get(name):
        os.close(fd)
        raise CheckpointError(f"{where}: changed since its digest was checked; not loaded")
    return fd


def still_checked(ckpt: Checkpoint, name: str, fd: int) -> None:
    """CheckpointError if the file behind `fd` changed while it was loaded (see `open_checked`)."""
    if pack_key(os.fstat(fd)) != ckpt.keys.get(name):
        raise CheckpointError(f"{ckpt.path.name}/{name}: changed while it was loaded")


_UINT32 = 1 << 32
_MT_WORDS = 624  # Mersenne Twister state: 624 words, then the position in them
_TAGS = {"$tensor": str, "$float": str, "$tuple": list, "$items": list}
_HEX_LIMIT = 1 << 16  # hex characters of one generator's state (torch's CPU one is 10,112)


def check_state(state: CheckpointState, where: str) -> None:
    """Every field of a checkpoint's state.json, beyond its schema: what restoring it would need. No torch.

    `where` ("step-00000004/state.json") starts each CheckpointError (exit 2). A
    field that passed the schema can still be one Python, numpy or the restore
    code would choke on (a Mersenne Twister state of the wrong length, a tag that
    is not one of ours, a loss list longer than the steps): refused here, named,
    so a resume never ends in a ValueError from deep inside (exit 4) or exit 70.
    """
    def bad(field: str, expected: str) -> CheckpointError:
        return CheckpointError(f"{where}: field '{field}': expected {expected}")

    step = state["step"]
    if len(state["losses"]) != step:
        raise bad("losses", f"one loss per step ({step}), got {len(state['losses'])}")
    if len(state["step_digests"]) not in (0, step + 1):
        raise bad("step_digests", f"one parameter digest before the first step and one after each ({step + 1})")
    for i, resume in enumerate(state["resumes"]):
        if resume["step"] > step:
            raise bad(f"resumes.{i}.step", f"a step at most {step}")
    py = state["rng"]["python"]
    words = py["state"]
    if py["version"] != 3 or len(words) != _MT_WORDS + 1 or any(w >= _UINT32 for w in words[:_MT_WORDS]) \
            or not 0 <= words[_MT_WORDS] <= _MT_WORDS:
        raise bad("rng.python", "Python's random state: version 3, 624 words below 2**32 and a position 0..624")
    if py["gauss_next"] is not None and not math.isfinite(py["gauss_next"]):
        raise bad("rng.python.gauss_next", "null or a finite number")
    np_state = state["rng"]["numpy"]
    if len(np_state["keys"]) != _MT_WORDS or not 0 <= np_state["pos"] <= _MT_WORDS \
            or np_state["has_gauss"] not in (0, 1) or not math.isfinite(np_state["cached_gaussian"]):
        raise bad("rng.numpy", "numpy's MT19937 state: 624 keys, a position 0..624, has_gauss 0 or 1")
    for name, text in [("rng.torch", state["rng"]["torch"])] + \
            [(f"rng.cuda.{i}", t) for i, t in enumerate(state["rng"]["cuda"])]:
        if len(text) % 2 or len(text) > _HEX_LIMIT:
            raise bad(name, f"a generator state as an even number of hex digits, at most {_HEX_LIMIT}")
    for key in ("optimizer", "scheduler", "grad_scaler"):
        _check_tags(state[key], key, bad)
    for block in ("data", "code"):
        files = state["inputs"][block]["files"]
        if not isinstance(files, list) or not all(_is_file_record(f) for f in files):
            raise bad(f"inputs.{block}.files", "a list of {path, size, hashes: {sha256}} records")
    if not isinstance(state["inputs"]["config"]["resolved"], dict):
        raise bad("inputs.config.resolved", "a mapping")
    packages = state["build"]["packages"]
    if not isinstance(packages, dict) or not all(isinstance(v, (str, type(None))) for v in packages.values()):
        raise bad("build.packages", "a mapping of distribution names to versions (or null)")


def _check_tags(node: Any, field: str, bad: Callable[[str, str], CheckpointError]) -> None:
    """A state_dict as `repro.train.state.encode` writes it: a key starting with `$` is exactly one known tag."""
    stack: list[tuple[str, Any]] = [(field, node)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, list):
            stack.extend((f"{where}.{i}", v) for i, v in enumerate(value))
        elif isinstance(value, dict):
            tags = [k for k in value if k.startswith("$")]
            if tags:
                tag = tags[0]
                if len(value) != 1 or tag not in _TAGS or not isinstance(value[tag], _TAGS[tag]):
                    raise bad(where, "a plain value or one of the tags $tensor, $float, $tuple, $items")
                if tag == "$float" and value[tag] not in ("inf", "-inf", "nan"):
                    raise bad(f"{where}.$float", "'inf', '-inf' or 'nan'")
                if tag == "$items" and not all(isinstance(p, list) and len(p) == 2 for p in value[tag]):
                    raise bad(f"{where}.$items", "a list of [key, value] pairs")
                stack.append((f"{where}.{tag}", value[tag]))
            else:
                stack.extend((f"{where}.{k}", v) for k, v in value.items())


def _is_file_record(f: Any) -> bool:
    return isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int) \
        and isinstance(f.get("hashes"), dict) and isinstance(f["hashes"].get("sha256"), str)


def bytes_writer(data: bytes) -> Writer:
    """A Writer for content already in memory (state.json)."""

    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


def _check(path: Path, name: str, rec: FileRecord, size: int, digest: str) -> None:
    if size != rec["size"]:
        raise CheckpointError(f"{path.name}/{name}: {size} bytes, the manifest records {rec['size']} (truncated?)")
    if digest != rec["hashes"]["sha256"]:
        raise CheckpointError(
            f"{path.name}/{name}: sha256 {digest[:12]}…, the manifest records {rec['hashes']['sha256'][:12]}…")


def _hash_file(path: Path, sync: bool, where: str = "") -> tuple[int, str]:
    """Size and sha256 of a checkpoint file being written (ours), then fsync'ed through the same descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            hashed = digest_fd(fd, shown=where or str(path))
            os.fsync(fd)  # Linux flushes the file's dirty pages through any descriptor
        finally:
            os.close(fd)
    except (DataError, OSError) as exc:  # a checkpoint being written is the run's failure
        raise TrainingFailed(f"{where or path}: {exc}" if isinstance(exc, OSError) else str(exc)) from None
    return hashed.size, hashed.digests["sha256"]


def _hash_checked(path: Path, where: str) -> tuple[int, str, bytes]:
    """Size, sha256 and packed stat key of a checkpoint file being read back: a stranger's, maybe.

    A link, FIFO or device is refused, never followed (`open_regular`), and the
    digest is taken through that very descriptor, so a file swapped in after the
    check is never the one hashed.
    """
    fd, _ = open_regular(path, f"checkpoint file {where}", CheckpointError)
    try:
        hashed = digest_fd(fd, shown=where)
    except DataError as exc:  # one being read is unusable
        raise CheckpointError(str(exc)) from None
    finally:
        os.close(fd)
    return hashed.size, hashed.digests["sha256"], pack_key(hashed.key)


def newest_valid(root: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that passes `read`, and why each newer one was skipped."""
    skipped: list[str] = []
    if not root.is_dir():
        return None, skipped
    for entry in sorted(root.iterdir()):
        if entry.suffix in PICKLED_SUFFIXES:
            skipped.append(f"{entry.name}: not loaded: pickled checkpoints can run code; "
                           "repro's are safetensors + JSON")
    for path in reversed(step_dirs(root)):
        try:
            return read(path), skipped
        except CheckpointTooOld:  # refused by the caller, never silently skipped (and then deleted)
            raise
        except CheckpointError as exc:
            skipped.append(str(exc))
    return None, skipped


def refuse_pickled(path: Path) -> None:
    if Path(path).suffix in PICKLED_SUFFIXES:
        raise CheckpointError(
            f"{path}: pickled checkpoints are never loaded (unpickling runs code the file chooses); "
            "repro checkpoints are folders of safetensors + JSON")


def parse_step(name: str) -> int | None:
    m = _STEP_DIR.match(name)
    return int(m.group(1)) if m else None


def step_dirs(root: Path) -> list[Path]:
    """Checkpoint folders under `root`, oldest step first; temp and hidden entries ignored."""
    if not root.is_dir():
        return []
    found = [(s, p) for p in root.iterdir() if p.is_dir() and (s := parse_step(p.name)) is not None]
    return [p for _, p in sorted(found)]


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoint folders."""
    for path in step_dirs(root)[:-keep]:
        _remove(path)


def remove_stale(root: Path) -> list[str]:
    """Delete temp folders of writes that never finished (the process died); return their names."""
    if not root.is_dir():
        return []
    stale = sorted(p for p in root.iterdir() if p.name.startswith((".tmp-", ".trash-", ".paused-")))
    for p in stale:
        if p.is_dir():
            _remove(p)
        else:
            p.unlink(missing_ok=True)
    return [p.name for p in stale if p.name.startswith(".tmp-")]


def clear(root: Path) -> None:
    """Delete every checkpoint under `root` (a fresh start or a finished run)."""
    if root.is_dir():
        _remove(root)


# safetensors reports an I/O failure as SafetensorError("... (os error 28)") or "Os { code: 28, ...".
_RUST_OS_ERROR = re.compile(r"(?:Os \{ code: |os error )(\d+)")


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind a failed write, also when safetensors wrapped it in its own error type."""
    if isinstance(exc, OSError):
        return exc
    m = _RUST_OS_ERROR.search(str(exc)) if type(exc).__name__ == "SafetensorError" else None
    return OSError(int(m.group(1)), os.strerror(int(m.group(1)))) if m else None


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    """Rename out of the way, then delete: a half-deleted folder never looks like a checkpoint."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _load_json(path: Path, where: str, ref: str) -> JsonObject:
    if not os.path.lexists(path):
        raise CheckpointError(f"{where}: missing (the write did not finish)")
    return _parse_json(read_bytes(path, where, error=CheckpointError), where, ref)


def _parse_json(raw: bytes, where: str, ref: str) -> JsonObject:
    """Parse, check `version`, validate against the schema; one-line errors naming the field."""
    import jsonschema

    obj = loads(raw, where, CheckpointError)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: expected a JSON object")
    version = obj.get("version")
    if isinstance(version, int) and 1 <= version < VERSION:
        raise CheckpointTooOld(f"{where}: checkpoint version {version}, written by an earlier repro that did not "
                               "record the source identity (code, toolchain) of the run that wrote it, so resuming "
                               "from it could mix two sources")
    if version != VERSION:
        newer = isinstance(version, int) and version > VERSION
        raise CheckpointError(f"{where}: version {version!r} " + ("is newer than this repro understands; upgrade repro"
                                                                   if newer else f"is not {VERSION}"))
    full = schema()
    validator = jsonschema.Draft202012Validator({"$schema": full["$schema"], "$defs": full["$defs"], "$ref": ref})
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        field = ".".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise CheckpointError(f"{where}: field '{field}': {errors[0].message[:160]}")
    return obj
