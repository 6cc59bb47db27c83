"""examples/finetune end to end, at smoke size: a LoRA fine-tune of the tiny LM whose
base release is part of its source, and `verify --recursive` walking the chain.

Both example projects are copied under one folder (the fine-tune's project root,
as `examples/` is in the repository) made a git repository, the way a stranger's
clone is. One base build and one fine-tune build are shared by the module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.util import find_spec
from pathlib import Path

import pytest
from conftest import REPO, Result, run_repro, sha256_file

# Needs the `lm` extra; looked up, not imported: importing peft costs ~5 s of CPU in every
# worker that collects this file, and only the worker that runs it needs peft.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(find_spec("peft") is None or find_spec("transformers") is None,
                                                   reason="needs the `lm` extra (peft, transformers)")]

EXAMPLES = REPO / "examples"
SMOKE = ["--config-name", "smoke"]
BASE_OUT, OUT = "tiny-lm/out-smoke", "finetune/out-smoke"


def _copy(name: str, dst: Path) -> None:
    def outputs(folder: str, names: list[str]) -> set[str]:
        top = Path(folder).name == name
        return {n for n in names if n == "__pycache__" or (top and n.split("-")[0] in ("data", "out"))}

    shutil.copytree(EXAMPLES / name, dst / name, ignore=outputs)


def _ok(r: Result, what: str) -> Result:
    assert r.code == 0, f"{what} exited {r.code}\n{r.stdout}\n{r.stderr}"
    return r


def build_base(root: Path) -> None:
    _ok(run_repro(["run", "tokenize", *SMOKE], cwd=root / "tiny-lm"), "tiny-lm tokenize")
    _ok(run_repro(["train", "--quiet", *SMOKE], cwd=root / "tiny-lm"), "tiny-lm train")


def prepare(root: Path) -> None:
    _ok(run_repro(["run", "prepare", "--root", "..", *SMOKE], cwd=root / "finetune"), "finetune prepare")


def finetune(root: Path, *overrides: str) -> Result:
    return run_repro(["train", "--quiet", "--root", "..", *SMOKE, *overrides], cwd=root / "finetune")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/{tiny-lm,finetune} in a git repository: base built, fine-tune prepared and trained."""
    root = tmp_path_factory.mktemp("examples")
    _copy("tiny-lm", root)
    _copy("finetune", root)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    build_base(root)
    prepare(root)
    _ok(finetune(root), "finetune train")
    return root


def _lock(root: Path, out: str = OUT) -> dict:
    return json.loads((root / out / "repro.lock").read_text())


def test_the_base_release_is_hashed_into_the_lock(chain: Path) -> None:
    lock, base = _lock(chain), _lock(chain, BASE_OUT)
    record = lock["inputs"]["base"]
    assert record["path"] == BASE_OUT and record["status"] == "locked"
    files = {f["path"]: f["hashes"]["sha256"] for f in record["files"]}
    assert files[f"{BASE_OUT}/model.safetensors"] == base["outputs"]["weights"]["hashes"]["sha256"]
    assert record["lock"]["sha256"] == sha256_file(chain / BASE_OUT / "repro.lock")
    assert record["lock"]["data_root_digest"] == base["inputs"]["data"]["root_digest"]
    assert lock["build"]["precision"] == "bf16"  # bf16 autocast on the CPU, recorded as a pin


def test_finetune_is_bit_identical_twice_and_exports_a_loadable_adapter(chain: Path) -> None:
    _ok(finetune(chain, "out_dir=out-again"), "second fine-tune")
    first, again = chain / OUT, chain / "finetune" / "out-again"
    for name in ("model.safetensors", "adapter_model.safetensors", "adapter_config.json", "tokenizer.json"):
        assert sha256_file(first / name) == sha256_file(again / name), name
    config = json.loads((first / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_OUT  # relative: no machine's absolute path in the bytes

    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import GPT2LMHeadModel

    base = GPT2LMHeadModel.from_pretrained(chain / BASE_OUT, local_files_only=True)
    tuned = PeftModel.from_pretrained(base, first, local_files_only=True)
    trained = load_file(first / "model.safetensors")
    for name, tensor in tuned.state_dict().items():
        if "lora_" in name:
            assert torch.equal(tensor, trained[name]), name


def test_verify_recursive_rebuilds_the_fine_tune_and_its_base(chain: Path) -> None:
    r = _ok(run_repro(["verify", "--recursive", "--no-record", f"{OUT}/repro.lock"], cwd=chain), "verify")
    assert "OK: the whole chain is verified" in r.stdout
    links = [line for line in r.stdout.splitlines() if line.startswith("  ok")]
    assert len(links) == 2 and "rebuilt" in links[1] and BASE_OUT in links[1]


def test_one_changed_byte_in_the_base_weights_invalidates_the_fine_tune(chain: Path, tmp_path: Path) -> None:
    root = tmp_path / "examples"
    shutil.copytree(chain, root, symlinks=True)
    weights = root / BASE_OUT / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1
    weights.write_bytes(bytes(raw))
    r = run_repro(["verify", "--inputs-only", f"{OUT}/repro.lock"], cwd=root)
    assert r.code == 1, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "model.safetensors" in ln)
    assert line.split()[0] == "base" and f"{BASE_OUT}/model.safetensors" in line
    # And a new fine-tune refuses a base that is not the model its own lock describes.
    r = finetune(root, "out_dir=out-bad")
    assert r.code == 2 and f"{BASE_OUT}/model.safetensors" in r.stderr and "Traceback" not in r.stderr


def test_a_base_without_a_lock_is_recorded_unverified_and_ends_the_chain(chain: Path, tmp_path: Path) -> None:
    root = tmp_path / "examples"
    shutil.copytree(chain, root, symlinks=True)
    (root / BASE_OUT / "repro.lock").unlink()
    _ok(finetune(root, "out_dir=out-unlocked"), "fine-tune of an unlocked base")
    lock = _lock(root, "finetune/out-unlocked")
    assert lock["inputs"]["base"]["status"] == "unverified base" and lock["inputs"]["base"]["lock"] is None
    r = run_repro(["verify", "--inputs-only", "--recursive", "finetune/out-unlocked/repro.lock"], cwd=root)
    assert r.code == 1 and "unverified base" in r.stdout, r.stdout + r.stderr


def _record(root: Path, out: str, key: Path | None) -> None:
    """A PASSED verification record beside a lock, as `repro verify` leaves one (no rebuild here)."""
    from repro.trust.attestation import default_record_path, record_verification

    lock = _lock(root, out)
    record_verification(default_record_path(root / out / "repro.lock"), sha256_file(root / out / "repro.lock"),
                        lock["outputs"]["weights"]["hashes"]["sha256"], True, {}, signing_key=key)


def _audit(root: Path, *args: str) -> dict:
    r = run_repro(["audit", f"{OUT}/repro.lock", "--json", *args], cwd=root)
    assert r.code in (0, 1), r.stdout + r.stderr
    report = json.loads(r.stdout)
    return report.get("result", report)  # the command envelope, or the bare report


def test_reproducible_follows_the_base_signed_or_self_reported(chain: Path, tmp_path: Path) -> None:
    from signing_keys import make_keypair

    root = tmp_path / "examples"
    shutil.copytree(chain, root, symlinks=True)
    private, public = make_keypair(tmp_path, "rebuilder")
    _record(root, OUT, private)       # the fine-tune: rebuilt, signed by a key we trust
    _record(root, BASE_OUT, None)     # its base: an unsigned, self-reported record
    # Trusting the key: the fine-tune's own record is trusted, its base's is not, so the mark is not "yes".
    mark = _audit(root, "--trusted-key", str(public))["frameworks"]["reproducible"]
    assert mark["verdict"] in ("no", "self-reported") and BASE_OUT in mark["reasons"][0], mark
    # Trusting no key: both records are self-reported, and so is the fine-tune.
    mark = _audit(root)["frameworks"]["reproducible"]
    assert mark["verdict"] == "self-reported", mark
    _record(root, BASE_OUT, private)  # now the base is signed too
    assert _audit(root, "--trusted-key", str(public))["frameworks"]["reproducible"]["verdict"] == "yes"


def test_a_base_trained_on_non_free_data_makes_the_fine_tune_non_free(chain: Path, tmp_path: Path) -> None:
    root = tmp_path / "examples"
    shutil.copytree(chain, root, symlinks=True)
    before = _audit(root)["frameworks"]["debian_ml_policy"]
    assert before["verdict"] == "Free Model", before
    # The same base, released with its data under a proprietary licence: rebuilt, then fine-tuned again.
    _ok(run_repro(["train", "--quiet", *SMOKE, "release.data_license=LicenseRef-Proprietary"],
                  cwd=root / "tiny-lm"), "base with non-free data")
    _ok(finetune(root), "fine-tune of the non-free base")
    after = _audit(root)["frameworks"]["debian_ml_policy"]
    assert after["verdict"] != "Free Model" and BASE_OUT in after["reasons"][0], after
