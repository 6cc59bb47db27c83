"""Paths real work uses: DataLoader worker processes, bf16 autocast on the CPU, fp16 with
a grad scaler (GPU only), each giving the same bits twice and recorded in the lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, make_project, run_repro, sha256_file

pytestmark = pytest.mark.slow


def _train(project: Path, out: str, *overrides: str) -> str:
    r = run_repro(["train", "--quiet", *TINY, f"out_dir={out}", *overrides], cwd=project)
    assert r.code == 0, r.stderr
    return sha256_file(project / out / "model.safetensors")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One build of the tiny default config (no worker processes, fp32), shared by the module:
    (its project, the weights' sha256). Tests add their own out_dirs beside it and change no file."""
    project = make_project(tmp_path_factory.mktemp("precision") / "project")
    return project, _train(project, "plain")


def test_worker_processes_do_not_change_the_bits(plain: tuple[Path, str]) -> None:
    """Workers only gather the rows of batches the sampler already chose (repro.train.sampling),
    each seeded from the run's generator, so 0, 1 and 2 workers train the same model."""
    project, no_workers = plain
    lock = json.loads((project / "plain" / "repro.lock").read_text())
    assert lock["inputs"]["config"]["resolved"]["trainer"]["num_workers"] == 0  # the default: 0 workers
    digests = {0: no_workers, **{n: _train(project, f"w{n}", f"trainer.num_workers={n}") for n in (1, 2)}}
    assert len(set(digests.values())) == 1, digests
    lock = json.loads((project / "w2" / "repro.lock").read_text())
    assert lock["inputs"]["config"]["resolved"]["trainer"]["num_workers"] == 2


def test_bf16_autocast_on_the_cpu_is_bit_identical_twice_and_recorded(plain: tuple[Path, str]) -> None:
    project, f32 = plain
    first, again = _train(project, "b1", "build.precision=bf16"), _train(project, "b2", "build.precision=bf16")
    assert first == again
    assert json.loads((project / "plain" / "repro.lock").read_text())["build"]["precision"] == "fp32"
    assert first != f32  # autocast really ran: bf16 products round differently
    lock = json.loads((project / "b1" / "repro.lock").read_text())
    assert lock["build"]["precision"] == "bf16"


def test_fp16_on_the_cpu_is_refused_before_anything_is_written(project: Path) -> None:
    r = run_repro(["train", "--quiet", *TINY, "out_dir=h", "build.precision=fp16"], cwd=project)
    assert r.code == 3 and "build.precision=fp16" in r.stderr and "Traceback" not in r.stderr
    assert not (project / "h" / "repro.lock").exists()


torch = pytest.importorskip("torch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_grad_scaler_state_survives_a_resume(project: Path) -> None:
    """The scaler's scale and growth tracker are checkpointed (repro.train.state): a run
    stopped at step 10 and resumed ends in the bytes of one that never stopped."""
    import signal

    from test_resume import STEP, _start, _wait_paused
    from test_resume import _train as train_resumable

    fp16 = ["build.device=cuda", "build.precision=fp16"]
    straight = train_resumable(project, "s", "trainer.checkpoint_every=0", *fp16) / "model.safetensors"
    proc = _start(project, "r", (STEP, 15), *fp16)
    _wait_paused(proc, project / "r", (STEP, 15))
    proc.send_signal(signal.SIGKILL)  # killed after a checkpoint, before the end
    proc.communicate()
    resumed = train_resumable(project, "r", *fp16) / "model.safetensors"
    assert sha256_file(resumed) == sha256_file(straight)


def test_a_grad_scaler_state_round_trips_through_the_checkpoint_encoding() -> None:
    """The CPU half of the fp16 resume guarantee (the GPU test above is the end-to-end one):
    a real GradScaler whose scale was halved by an overflow and whose growth tracker counts
    good steps goes through repro.train.state's JSON + safetensors encoding, and a loop
    resumed from it ends in the same parameter bytes as one that never stopped."""
    import hashlib

    from safetensors.torch import load, save

    from repro.train.state import decode, encode

    def setup() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 4)
        return model, torch.optim.SGD(model.parameters(), lr=0.1), torch.amp.GradScaler(
            "cpu", init_scale=2.0**16, growth_interval=4)

    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))

    def step(model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, i: int) -> None:
        opt.zero_grad()
        loss = model(x).square().mean() * (float("inf") if i == 1 else 1.0)  # step 1 overflows
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def digest(model: torch.nn.Module) -> str:
        return hashlib.sha256(save({k: v.contiguous() for k, v in model.state_dict().items()})).hexdigest()

    model, opt, scaler = setup()
    for i in range(8):
        step(model, opt, scaler, i)
    straight = digest(model)

    model, opt, scaler = setup()
    for i in range(5):
        step(model, opt, scaler, i)
    assert scaler.get_scale() == 2.0**15 and scaler.state_dict()["_growth_tracker"] == 3  # moved by steps 1-4
    tensors: dict[str, torch.Tensor] = {}
    state = json.loads(json.dumps({k: encode(o.state_dict(), k, tensors) for k, o in
                                   (("model", model), ("optimizer", opt), ("grad_scaler", scaler))}))
    tensors = load(save({k: v.contiguous() for k, v in tensors.items()}))

    model, opt, scaler = setup()  # a fresh process's objects, then the checkpoint
    model.load_state_dict(decode(state["model"], tensors))
    opt.load_state_dict(decode(state["optimizer"], tensors))
    scaler.load_state_dict(decode(state["grad_scaler"], tensors))
    assert scaler.get_scale() == 2.0**15 and scaler.state_dict()["_growth_tracker"] == 3
    for i in range(5, 8):
        step(model, opt, scaler, i)
    assert digest(model) == straight
