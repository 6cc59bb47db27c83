"""A sweep under DVC: `dvc exp run -S 'trainer.lr=0.01,0.05' --queue`, then `dvc queue start`,
gives one experiment per value, and each experiment's repro.lock verifies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import make_project, run_repro
from test_dvc import _env, _git_identity, dvc, git

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# The train stage trains the params.yaml that DVC composes from configs/ (docs/dvc.md).
DVC_YAML = """\
stages:
  train:
    cmd: python -m repro train --quiet --config-dir . --config-name params --root .
    deps:
      - repro/examples/digits/digits.csv
    params: [seed, data, model, task, trainer, build, code, release]
    outs:
      - out/model.safetensors
      - out/repro.lock:
          cache: false
"""


def _project(tmp_path: Path, env: dict[str, str]) -> Path:
    repo = make_project(tmp_path / "project")
    train = repo / "configs" / "train.yaml"
    train.write_text(train.read_text().replace("out_dir: out/digits", "out_dir: out"))
    trainer = repo / "configs" / "trainer" / "default.yaml"
    trainer.write_text(trainer.read_text().replace("max_steps: 300", "max_steps: 20"))
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / ".gitignore").write_text(".repro\n")
    git(["init", "-q"], repo, env)
    _git_identity(repo, env)
    dvc(["init", "-q"], repo, env)
    for key, value in [("core.analytics", "false"), ("core.check_update", "false"), ("hydra.enabled", "true"),
                       ("hydra.config_dir", "configs"), ("hydra.config_name", "train")]:
        dvc(["config", key, value], repo, env)
    git(["add", "-A"], repo, env)
    git(["commit", "-qm", "digits, swept with DVC"], repo, env)
    return repo


def _wait_for_queue(repo: Path, env: dict[str, str], limit: float = 1200) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = dvc(["queue", "status"], repo, env).stdout
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(5)
    raise AssertionError(f"the DVC queue did not finish:\n{status}")


def test_dvc_queue_sweep_gives_one_verifying_experiment_per_value(tmp_path: Path) -> None:
    env = _env(tmp_path)
    repo = _project(tmp_path, env)
    dvc(["exp", "run", "-S", "trainer.lr=0.01,0.05", "--queue"], repo, env)
    dvc(["queue", "start"], repo, env)
    try:
        status = _wait_for_queue(repo, env)
    finally:
        dvc(["queue", "stop"], repo, env, ok=False)
    assert status.count("Success") == 2, status
    names = sorted(dvc(["exp", "ls", "--names-only"], repo, env).stdout.split())
    assert len(names) == 2, names
    rates = set()
    for name in names:
        dvc(["exp", "apply", name], repo, env)
        lock = json.loads((repo / "out" / "repro.lock").read_text())
        rates.add(lock["inputs"]["config"]["resolved"]["trainer"]["lr"])
        res = run_repro(["verify", "--quiet", "out/repro.lock"], cwd=repo, env=env)
        assert res.code == 0, res.stdout + res.stderr
    assert rates == {0.01, 0.05}
