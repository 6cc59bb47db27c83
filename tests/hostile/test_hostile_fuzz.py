"""Property: whatever bytes sit where a lock should, verify --inputs-only, diff and audit
answer 0, 1 or 2: never a traceback (70), never a hang, never an import.

Inputs are arbitrary JSON documents, structural mutations of a real published lock
(a value replaced, a key deleted or added, anywhere in the tree) and byte-level
mutations of its text. Values include what an attacker would try (issue 29):
`${...}` interpolations, lone surrogates, terminal escapes, paths out of the root,
oversized strings and integers. The same mutations reach a stage record embedded
in the lock, a checkpoint's state.json (through `checkpoint.read`) and the
verification records `audit` weighs; `--json` forms are run too, since a lone
surrogate once broke them. Each case runs in-process under a SIGALRM deadline;
examples are bounded so the whole file stays near 40 s (REPRO_FUZZ_EXAMPLES=N
searches longer).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_helpers import trained  # noqa: F401  (the session's trained project, a fixture)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.cli import main

DEADLINE_S = 10
EXAMPLES = os.environ.get("REPRO_FUZZ_EXAMPLES")  # set it for a longer, random search
SETTINGS = settings(max_examples=int(EXAMPLES or 25), deadline=None, derandomize=EXAMPLES is None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

hostile = st.sampled_from([
    "${oc.create:'{_target_: logging.basicConfig, filename: /tmp/M}'}", "${oc.env:HOME}", "\\${x}", "${",
    "\ud800", "a\udfffb", "\x1b[2Kidentical: all is well\r", "../../etc/passwd", "/etc/passwd", "x" * 200_000,
    "p.net.torch.save", "torch.nn.functional.torch.load"]) | st.integers(10 ** 38, 10 ** 60)
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
           | hostile)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8) | hostile.filter(lambda v: isinstance(v, str)),
                                             inner, max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, trained: Path) -> Path:  # noqa: F811
    """A copy of a lock this repro just wrote (outside git: its data resolves to the installed example)."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "a").mkdir()
    (folder / "real.lock").write_bytes((trained / "out" / "repro.lock").read_bytes())
    (folder / "cache").mkdir()
    return folder


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def mutated_lock(draw: Any, real: bytes) -> bytes:
    return json.dumps(mutated(draw, json.loads(real)), indent=2).encode()


def mutated(draw: Any, lock: Any) -> Any:
    """`lock` (any JSON value) with 1-3 values replaced, keys deleted or added, anywhere in the tree."""
    paths = [p for p in _paths(lock) if p]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        parent: Any = lock
        try:
            for part in path[:-1]:
                parent = parent[part]
            op = draw(st.sampled_from(["replace", "delete", "add"]))
            if op == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif op == "add" and isinstance(parent, dict):
                parent[draw(st.text(max_size=6))] = draw(json_values)
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed the path
            continue
    return lock


def byte_mutation(draw: Any, real: bytes) -> bytes:
    raw = bytearray(real)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            raw[at:at] = draw(st.sampled_from([b"[", b"{", b"}", b"NaN", b"1e999", b'"', b",", b"\\", b"\x00",
                                               b"9" * 5000]))
        else:
            del raw[at:at + draw(st.integers(1, 50))]
    return bytes(raw)


def _check(workspace: Path, data: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    os.environ["REPRO_CACHE_DIR"] = str(workspace / "cache")
    lock = workspace / "a" / "repro.lock"
    lock.write_bytes(data)
    torch_before = "torch" in sys.modules
    before = set(sys.modules)
    for argv in (["verify", "--inputs-only", "--quiet", str(lock)], ["diff", str(workspace / "real.lock"), str(lock)],
                 ["audit", str(lock)], ["verify", "--inputs-only", "--json", str(lock)],
                 ["diff", "--json", str(lock), str(workspace / "real.lock")]):
        def hung(*_: object, command: str = argv[0]) -> None:
            raise TimeoutError(f"repro {command} hung")

        old = signal.signal(signal.SIGALRM, hung)
        signal.alarm(DEADLINE_S)
        try:
            code = main(argv)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        out, err = capsys.readouterr()
        assert code in (0, 1, 2), f"repro {' '.join(argv)} exited {code}:\n{err}\n{data[:300]!r}"
        if "--json" in argv:
            assert json.loads(out)["exit_code"] == code
    new = set(sys.modules) - before
    assert not [m for m in new if str(getattr(sys.modules[m], "__file__", "") or "").startswith(str(workspace))]
    assert torch_before or "torch" not in sys.modules, "a read-only command imported torch"


@SETTINGS
@given(doc=json_values)
def test_arbitrary_json(workspace: Path, capsys: pytest.CaptureFixture[str], doc: Any) -> None:
    _check(workspace, json.dumps(doc).encode(), capsys)


@SETTINGS
@given(data=st.data())
def test_structural_mutations_of_a_real_lock(workspace: Path, capsys: pytest.CaptureFixture[str],
                                             data: st.DataObject) -> None:
    _check(workspace, mutated_lock(data.draw, (workspace / "real.lock").read_bytes()), capsys)


@SETTINGS
@given(data=st.data())
def test_byte_mutations_of_a_real_lock(workspace: Path, capsys: pytest.CaptureFixture[str],
                                       data: st.DataObject) -> None:
    _check(workspace, byte_mutation(data.draw, (workspace / "real.lock").read_bytes()), capsys)


def test_the_real_lock_itself_is_accepted(workspace: Path, trained: Path,  # noqa: F811
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The seed of the mutations must be a lock this repro reads, or they would test only the version check.
    Its project's config files are source (inputs.code), so the project is its root."""
    lock = workspace / "a" / "repro.lock"
    lock.write_bytes((workspace / "real.lock").read_bytes())
    os.environ["REPRO_CACHE_DIR"] = str(workspace / "cache")
    assert main(["diff", str(workspace / "real.lock"), str(lock)]) == 0
    assert main(["verify", "--inputs-only", "--quiet", "--root", str(trained), str(lock)]) == 0, capsys.readouterr()


GOLDEN_RECORD = Path(__file__).resolve().parents[1] / "fixtures" / "stagerecord" / "golden-v1.json"


@SETTINGS
@given(data=st.data())
def test_mutated_stage_records_inside_a_real_lock(workspace: Path, capsys: pytest.CaptureFixture[str],
                                                  data: st.DataObject) -> None:
    """A stage record (its own schema, its own digest rule) embedded in `inputs.stages`, then mutated."""
    from repro.lock.stagerecord import config_sha256

    lock = json.loads((workspace / "real.lock").read_bytes())
    record = json.loads(GOLDEN_RECORD.read_text())
    record = mutated(data.draw, record)
    if isinstance(record, dict) and isinstance(record.get("declared"), dict) and isinstance(record.get("pins"), dict):
        # Re-sealed, as an attacker would; a lone surrogate has no UTF-8 bytes to hash, so it stays unsealed.
        with contextlib.suppress(UnicodeEncodeError):
            record["config_sha256"] = config_sha256(record["declared"], record["pins"])
    lock["inputs"]["stages"] = [record]
    _check(workspace, json.dumps(lock).encode(), capsys)


def _valid_state() -> dict[str, Any]:
    """A checkpoint state.json that `checkpoint.read` accepts: step 2 of a run, real RNG states (no torch)."""
    import random

    import numpy as np

    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    files = [{"path": "d.csv", "size": 3, "hashes": {"sha256": "ab" * 32}}]
    identity = {"config": "12" * 32, "data": "34" * 32, "code": {"files": [], "root_digest": "56" * 32},
                "pins": {"seed": 0}, "toolchain": {"python": {}, "platform": {}, "distributions": {}, "torch": None,
                                                    "repro": {"version": "0.2.0", "files": [],
                                                              "root_digest": "78" * 32}}}
    return {"version": 2, "identity": identity, "step": 2,
            "sample_order": {"epoch": 0, "offset": 2, "count": 2, "sha256": "cd" * 32},
            "losses": [0.5, 0.25], "step_digests": ["ef" * 16] * 3,
            "rng": {"python": {"version": version, "state": list(words), "gauss_next": gauss},
                    "numpy": {"bit_generator": name, "keys": [int(k) for k in keys], "pos": int(pos),
                              "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
                    "torch": "00" * 5056, "cuda": []},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
            "scheduler": None, "grad_scaler": None,
            "inputs": {"config": {"resolved": {"seed": 0}, "sha256": "12" * 32},
                       "data": {"files": files, "root_digest": "34" * 32},
                       "code": {"files": [], "root_digest": "56" * 32}},
            "build": {"packages": {"torch": "2.13.0"}}, "resumes": []}


@SETTINGS
@given(data=st.data())
def test_mutated_checkpoint_state_is_a_checkpoint_error_or_accepted(tmp_path_factory: pytest.TempPathFactory,
                                                                    data: st.DataObject) -> None:
    """Whatever state.json holds (re-sealed in the manifest), reading the checkpoint raises CheckpointError
    (exit 2, naming the file) or accepts it: never another exception."""
    import hashlib

    from repro.canonical import canonical_json
    from repro.errors import CheckpointError
    from repro.train import checkpoint

    base = _valid_state()
    folder = checkpoint.write(tmp_path_factory.mktemp("ckpt"), 2, {
        checkpoint.MODEL_NAME: checkpoint.bytes_writer(b"m"), checkpoint.OPTIMIZER_NAME: checkpoint.bytes_writer(b"o"),
        checkpoint.STATE_NAME: checkpoint.bytes_writer(canonical_json(base))})
    assert checkpoint.read(folder).step == 2  # the seed is valid
    state = mutated(data.draw, base)
    raw = json.dumps(state).encode()
    (folder / checkpoint.STATE_NAME).write_bytes(raw)
    manifest = json.loads((folder / checkpoint.MANIFEST_NAME).read_text())
    for f in manifest["files"]:
        if f["path"] == checkpoint.STATE_NAME:
            f["size"], f["hashes"]["sha256"] = len(raw), hashlib.sha256(raw).hexdigest()
    (folder / checkpoint.MANIFEST_NAME).write_bytes(canonical_json(manifest))
    try:
        checkpoint.read(folder)
    except CheckpointError as exc:
        assert exc.exit_code == 2 and folder.name in str(exc)


@SETTINGS
@given(data=st.data())
def test_mutated_verification_records_beside_a_lock(workspace: Path, capsys: pytest.CaptureFixture[str],
                                                    data: st.DataObject) -> None:
    """The DSSE records `audit` weighs, mutated as JSON and inside their base64 payload."""
    import base64
    import hashlib

    from repro.trust.attestation import record_verification

    real = workspace / "real.lock"
    folder = workspace / "records"
    folder.mkdir(exist_ok=True)
    (folder / "repro.lock").write_bytes(real.read_bytes())
    weights = json.loads(real.read_text())["outputs"]["weights"]["hashes"]["sha256"]
    record = folder / "verification.json"
    record_verification(record, hashlib.sha256(real.read_bytes()).hexdigest(), weights, True, {"by": "fuzz"})
    envelope = json.loads(record.read_text())
    if data.draw(st.booleans()):
        statement = json.loads(base64.b64decode(envelope["payload"]))
        envelope["payload"] = base64.b64encode(json.dumps(mutated(data.draw, statement)).encode()).decode()
    else:
        envelope = mutated(data.draw, envelope)
    record.write_text(json.dumps(envelope))
    for argv in (["audit", str(folder / "repro.lock")], ["audit", "--json", str(folder / "repro.lock")]):
        code = main(argv)
        out, err = capsys.readouterr()
        assert code in (0, 1, 2), f"repro {' '.join(argv)} exited {code}:\n{err}"
