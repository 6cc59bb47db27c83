"""The tiny-LM example end to end, at smoke size: tokenizer bytes, weights, lock,
a stranger's verify, and `transformers` loading what repro wrote.

The example's own `configs/smoke.yaml` is the test-sized build (one novel, a
512-token vocabulary, a one-layer GPT-2, 30 steps). One build per module is
shared; tests that change files work on copies of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from conftest import REPO, Result, run_repro, sha256_file

from repro.canonical import canonical_json
from repro.cli import COMMANDS

# The example needs the `lm` extra (transformers, tokenizers); the reference env has it.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(find_spec("transformers") is None or find_spec("tokenizers") is None,
                                                   reason="needs the `lm` extra (transformers, tokenizers)")]

EXAMPLE = REPO / "examples" / "tiny-lm"
VENV_BIN = Path(sys.executable).parent
SMOKE = ["--config-name", "smoke"]
DATA, OUT = "data-smoke", "out-smoke"
CORPUS = "corpus/persuasion.txt"
needs_verify = pytest.mark.skipif("verify" not in COMMANDS, reason="`repro verify` (issue 3) is not merged yet")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}",
               HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1",
               GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, ok: bool = True) -> Result:
    proc = subprocess.run(args, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=600)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return Result(proc.returncode, proc.stdout, proc.stderr)


def copy_example(dst: Path) -> Path:
    """The example as a user copies it: sources only, no build outputs."""
    def outputs(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == EXAMPLE
        return {n for n in names if n == "__pycache__" or (top and n.split("-")[0] in ("data", "out"))}

    shutil.copytree(EXAMPLE, dst, ignore=outputs)
    return dst


def use_smoke_pipeline(root: Path) -> None:
    """dvc.yaml for the smoke build: the same stages, generated from the smoke config."""
    r = run_repro(["dvc-yaml", "--write", *SMOKE], cwd=root)
    assert r.code == 0, r.stderr
    assert "--config-name smoke" in (root / "dvc.yaml").read_text()


def tokenize(root: Path, *overrides: str, **env: str) -> Result:
    return _run([sys.executable, "-m", "repro", "run", "tokenize", *overrides, "--quiet", *SMOKE], root,
                _env(**env))


def train(root: Path, *overrides: str) -> Result:
    r = run_repro(["train", "--quiet", *SMOKE, *overrides], cwd=root)
    assert r.code == 0, r.stderr
    return r


def lock_of(root: Path, out: str = OUT) -> dict:
    return json.loads((root / out / "repro.lock").read_text())


def data_digests(lock: dict) -> dict[str, str]:
    return {f["path"]: f["hashes"]["sha256"] for f in lock["inputs"]["data"]["files"]}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """One smoke build: tokenize, then train; (project root, `repro train` result)."""
    root = copy_example(tmp_path_factory.mktemp("publisher") / "tiny-lm")
    tokenize(root)
    return root, train(root)


# 1. Tokenizer bytes are stable -------------------------------------------------------

@pytest.mark.parametrize("threads", ["1", "4"])
def test_tokenizer_bytes_do_not_depend_on_rayon_threads(built: tuple[Path, Result], threads: str) -> None:
    root, _ = built
    tokenize(root, f"tokenize.out_dir=tok-{threads}", RAYON_NUM_THREADS=threads)
    for name in ("tokenizer.json", "blocks.jsonl"):
        assert (root / f"tok-{threads}" / name).read_bytes() == (root / DATA / name).read_bytes(), name


def test_tokenizer_is_a_hashed_input_and_ships_with_the_weights(built: tuple[Path, Result]) -> None:
    root, _ = built
    lock = lock_of(root)
    # Everything the build read: the corpus it was derived from, the blocks it loaded,
    # the tokenizer that made them. Nothing else from the corpus folder (smoke uses one novel).
    assert data_digests(lock) == {p: sha256_file(root / p) for p in
                                  (CORPUS, f"{DATA}/blocks.jsonl", f"{DATA}/tokenizer.json")}
    assert (root / OUT / "tokenizer.json").read_bytes() == (root / DATA / "tokenizer.json").read_bytes()
    exported = {f["path"]: f for f in lock["outputs"]["files"]}
    assert sorted(exported) == ["config.json", "tokenizer.json", "tokenizer_config.json"]
    for name, rec in exported.items():
        raw = (root / OUT / name).read_bytes()
        assert rec["hashes"]["sha256"] == hashlib.sha256(raw).hexdigest() and rec["size"] == len(raw)
        assert canonical_json(json.loads(raw)) == raw or name == "tokenizer.json"
    # The tokenize stage's record is embedded: its code, toolchain, and the outputs training read.
    [stage] = lock["inputs"]["stages"]
    assert stage["stage"] == "tokenize" and [f["path"] for f in stage["code"]["files"]] == ["tokenize_corpus.py"]
    assert stage["toolchain"]["distributions"]["tokenizers"] == _version("tokenizers")
    assert {f["path"]: f["hashes"]["sha256"] for f in stage["outputs"]["files"]} == {
        p: d for p, d in data_digests(lock).items() if p.startswith(DATA)}
    assert stage == json.loads((root / DATA / "tokenize.stage.json").read_text())
    assert lock["toolchain"]["distributions"]["transformers"] == _version("transformers")


# 2. Weights are stable ----------------------------------------------------------------

def test_two_training_runs_give_identical_weights_lock_and_exports(built: tuple[Path, Result],
                                                                   tmp_path: Path) -> None:
    root, _ = built
    other = tmp_path / "elsewhere" / "tiny-lm"
    shutil.copytree(root, other, ignore=lambda d, names: {n for n in names if n == OUT or n.startswith("tok-")})
    train(other)
    for name in ("model.safetensors", "repro.lock", "config.json", "tokenizer.json", "tokenizer_config.json"):
        assert sha256_file(root / OUT / name) == sha256_file(other / OUT / name), name
    assert str(tmp_path) not in (other / OUT / "repro.lock").read_text()


def test_validation_loss_falls_and_samples_are_recorded_and_printed(built: tuple[Path, Result]) -> None:
    root, result = built
    lock = lock_of(root)
    vocab = lock["inputs"]["config"]["resolved"]["tokenize"]["vocab_size"]
    # An untrained model scores about ln(vocab) per token; 30 steps must beat it clearly.
    assert lock["outputs"]["metrics"]["loss"] < math.log(vocab) - 0.5
    assert lock["outputs"]["metrics"]["perplexity"] == pytest.approx(math.exp(lock["outputs"]["metrics"]["loss"]))
    prompts = lock["inputs"]["config"]["resolved"]["task"]["prompts"]
    samples = lock["outputs"]["samples"]
    assert len(samples) == len(prompts)
    assert all(s.startswith(p) and len(s) > len(p) for s, p in zip(samples, prompts, strict=True))
    for s in samples:
        assert repr(s) in result.stdout


# 5. transformers can load the output --------------------------------------------------

LOAD = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
out = sys.argv[1]
torch.set_num_threads(2)  # the build's pins (ATEN_CPU_CAPABILITY comes from the environment)
model = AutoModelForCausalLM.from_pretrained(out).eval()
tok = AutoTokenizer.from_pretrained(out)
task = json.load(open(out + "/repro.lock"))["inputs"]["config"]["resolved"]["task"]
texts = []
for prompt in task["prompts"]:
    ids = tok(prompt, return_tensors="pt").input_ids
    gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=task["sample_tokens"],
                         do_sample=False)
    texts.append(tok.decode(gen[0]))
print(json.dumps({"class": type(model).__name__, "samples": texts,
                  "tied": model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()}))
"""


def test_transformers_loads_the_output_offline_and_generates_the_recorded_samples(
        built: tuple[Path, Result]) -> None:
    root, _ = built
    r = _run([sys.executable, "-c", LOAD, str(root / OUT)], root,
             _env(TRANSFORMERS_OFFLINE="1", ATEN_CPU_CAPABILITY="avx2"))  # _env sets HF_HUB_OFFLINE=1
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["class"] == "GPT2LMHeadModel" and got["tied"]
    assert got["samples"] == lock_of(root)["outputs"]["samples"]


# 4 (without verify). A corpus byte reaches the tokenizer and the lock ------------------

def test_one_corpus_byte_changes_corpus_tokenizer_and_weights_digests(built: tuple[Path, Result],
                                                                      tmp_path: Path) -> None:
    root, _ = built
    other = copy_example(tmp_path / "changed")
    _flip_one_byte(other / CORPUS)
    tokenize(other)
    train(other)
    before, after = data_digests(lock_of(root)), data_digests(lock_of(other))
    changed = sorted(p for p in before if before[p] != after[p])
    assert changed == sorted([CORPUS, f"{DATA}/blocks.jsonl", f"{DATA}/tokenizer.json"])
    assert lock_of(root)["outputs"]["weights"]["hashes"] != lock_of(other)["outputs"]["weights"]["hashes"]


def _flip_one_byte(path: Path) -> None:
    """Change one letter in the middle of a word: a real edit a tokenizer sees."""
    raw = bytearray(path.read_bytes())
    idx = raw.index(b"Elliot") + 1
    raw[idx : idx + 1] = b"m"
    path.write_bytes(bytes(raw))


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


# 3 and 4. A stranger's rebuild: git clone, tokenize, verify ------------------------------

def _git(args: list[str], cwd: Path) -> Result:
    return _run(["git", "-c", "user.name=repro tests", "-c", "user.email=tests@repro.invalid", *args], cwd)


@pytest.fixture(scope="module")
def published(built: tuple[Path, Result], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The publisher's repository: sources and repro.lock committed; tokenizer, blocks
    and weights are build outputs a stranger regenerates."""
    root, _ = built
    repo = copy_example(tmp_path_factory.mktemp("git") / "tiny-lm")
    use_smoke_pipeline(repo)  # the stage graph verify reads to say what is downstream
    shutil.copytree(root / OUT, repo / OUT)
    _git(["init", "-q", "-b", "main"], repo)
    _git(["add", "-A"], repo)
    _git(["add", "-f", f"{OUT}/repro.lock"], repo)
    _git(["commit", "-q", "-m", "tiny-lm smoke build"], repo)
    return repo


def _clone_and_tokenize(published: Path, dst: Path) -> Path:
    _run(["git", "clone", "-q", str(published), str(dst)], published.parent)
    assert not (dst / DATA).exists()
    tokenize(dst)
    return dst


@pytest.mark.integration
@needs_verify
def test_a_strangers_rebuild_in_a_fresh_clone_verifies(published: Path, tmp_path: Path) -> None:
    clone = _clone_and_tokenize(published, tmp_path / "stranger" / "tiny-lm")
    r = run_repro(["verify", f"{OUT}/repro.lock", "--root", "."], cwd=clone)
    assert r.code == 0, r.stdout + r.stderr


@pytest.mark.integration
@needs_verify
def test_verify_names_a_changed_corpus_byte_and_the_tokenizer_downstream(published: Path,
                                                                         tmp_path: Path) -> None:
    clone = tmp_path / "stranger" / "tiny-lm"
    _run(["git", "clone", "-q", str(published), str(clone)], published.parent)
    _flip_one_byte(clone / CORPUS)
    tokenize(clone)
    r = run_repro(["verify", f"{OUT}/repro.lock", "--root", "."], cwd=clone)
    report = r.stdout + r.stderr
    assert r.code == 1, report
    lines = {name: next((ln for ln in report.splitlines() if f" {name} " in ln + " "), "")
             for name in (CORPUS, f"{DATA}/tokenizer.json", f"{DATA}/blocks.jsonl")}
    assert lines[CORPUS] and "downstream" not in lines[CORPUS], report
    for name in (f"{DATA}/tokenizer.json", f"{DATA}/blocks.jsonl"):
        assert f"downstream of {CORPUS}" in lines[name] and "tokenize" in lines[name], report


# 6. From source: a fresh clone holds the novels and the lock, and no data/ at all -------------

@pytest.mark.integration
@needs_verify
def test_verify_from_source_rebuilds_tokenizer_blocks_and_weights_in_a_fresh_clone(published: Path,
                                                                                    tmp_path: Path) -> None:
    clone = tmp_path / "stranger" / "tiny-lm"
    _run(["git", "clone", "-q", str(published), str(clone)], published.parent)
    assert not (clone / DATA).exists()
    r = run_repro(["verify", "--from-source", "--quiet", f"{OUT}/repro.lock"], cwd=clone)
    assert r.code == 0, r.stdout + r.stderr
    assert "stage      tokenize: rerun from source" in r.stdout and "identical to its record" in r.stdout
    assert not (clone / DATA).exists(), "the rebuild happens in a work folder, not in the clone"


@pytest.mark.integration
@needs_verify
def test_verify_from_source_names_the_corpus_file_the_stage_and_its_first_differing_output(
        published: Path, tmp_path: Path) -> None:
    clone = tmp_path / "stranger" / "tiny-lm"
    _run(["git", "clone", "-q", str(published), str(clone)], published.parent)
    _flip_one_byte(clone / CORPUS)
    r = run_repro(["verify", "--from-source", "--quiet", "--json", f"{OUT}/repro.lock"], cwd=clone)
    assert r.code == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)["result"]  # the --json envelope's result: verify's report
    assert report["stages"][0]["stage"] == "tokenize"
    assert report["stages"][0]["first_differing_output"] == f"{DATA}/tokenizer.json"
    names = [d["name"] for d in report["differences"]]
    assert f"tokenize: {CORPUS}" in names and f"tokenize: {DATA}/tokenizer.json" in names
    assert report["rebuild"]["performed"] is False
    text = run_repro(["verify", "--from-source", "--quiet", f"{OUT}/repro.lock"], cwd=clone).stdout
    assert f"first at {DATA}/tokenizer.json" in text and "stage tokenize is the first that differs" in text


# The dvc.yaml as written: both stages run under `dvc repro` and give the same bits ----------

@pytest.mark.integration
def test_dvc_repro_runs_tokenize_then_train_to_the_same_bits(built: tuple[Path, Result], tmp_path: Path) -> None:
    root, _ = built
    proj = copy_example(tmp_path / "dvc" / "tiny-lm")
    use_smoke_pipeline(proj)
    _git(["init", "-q", "-b", "main"], proj)
    _run([str(VENV_BIN / "dvc"), "init", "-q"], proj)
    _run([str(VENV_BIN / "dvc"), "config", "core.analytics", "false"], proj)
    _run([str(VENV_BIN / "dvc"), "repro"], proj)
    for name in ("model.safetensors", "repro.lock", "tokenizer.json"):
        assert sha256_file(proj / OUT / name) == sha256_file(root / OUT / name), name
    dvc_lock = (proj / "dvc.lock").read_text()
    assert f"{DATA}/tokenizer.json" in dvc_lock and "tokenize_corpus.py" in dvc_lock
    again = _run([str(VENV_BIN / "dvc"), "repro"], proj)
    assert "didn't change" in again.stdout or "up to date" in again.stdout, again.stdout
