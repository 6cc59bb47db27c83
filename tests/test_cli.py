"""One CLI shape: every command's --json envelope, on success and on failure, and one PATH rule.

`repro CMD --json` prints exactly one JSON object on stdout:
{"version", "command", "result", "exit_code"} plus "error" whenever exit_code != 0.
One digits release is trained once (a real `repro train --json` process); the
other commands run in-process through `repro.cli.main`, on a copy of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, make_project, run_repro
from signing_keys import make_keypair

from repro.canonical import canonical_json
from repro.cli import COMMANDS, main

ENVELOPE_KEYS = {"version", "command", "result", "exit_code"}


def envelope(text: str, command: str | None, code: int) -> dict[str, Any]:
    """Parse stdout as ONE JSON object and check the envelope's fixed shape."""
    env: dict[str, Any] = json.loads(text)
    assert set(env) == (ENVELOPE_KEYS if code == 0 else ENVELOPE_KEYS | {"error"}), env
    assert env["version"] == 1 and env["command"] == command and env["exit_code"] == code, env
    if code != 0:
        assert isinstance(env["error"], str) and env["error"] and "\n" not in env["error"], env
    return env


def env_failed(env: dict[str, Any]) -> bool:
    """The command raised before it had a result (as opposed to reporting a mismatch)."""
    return env["exit_code"] != 0 and env["result"] is None


def repro(capsys: pytest.CaptureFixture[str], *args: str, code: int) -> dict[str, Any]:
    """`repro ARGS --json` in-process; the exit code must be `code`, stdout one envelope."""
    capsys.readouterr()
    assert main([*args, "--json"]) == code, capsys.readouterr()
    out = capsys.readouterr()
    result = envelope(out.out, args[0] if args[0] in COMMANDS else None, code)
    if env_failed(result) and code != 70:  # a raised error: people still get its one line on stderr
        lines = [line for line in out.err.splitlines() if not line.startswith("usage: ")]  # argparse's usage
        assert len(lines) == 1 and "Traceback" not in out.err, out.err
    return result



@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A digits project with one tiny release in out/rel, and `repro train --json`'s envelope."""
    project = make_project(tmp_path_factory.mktemp("cli") / "project")
    r = run_repro(["train", "--quiet", "--json", *TINY, "out_dir=out/rel"], cwd=project)
    assert r.code == 0, r.stderr
    return project, envelope(r.stdout, "train", 0)


@pytest.fixture
def project(trained: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the trained project, as the current directory."""
    copy = tmp_path / "project"
    shutil.copytree(trained[0], copy)
    monkeypatch.chdir(copy)
    return copy


@pytest.mark.slow
def test_train(trained: tuple[Path, dict[str, Any]], project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = trained[1]["result"]
    lock = json.loads((project / "out" / "rel" / "repro.lock").read_text())
    assert result["weights_sha256"] == lock["outputs"]["weights"]["hashes"]["sha256"]
    assert result["out_dir"] == str(trained[0] / "out" / "rel")
    bad = repro(capsys, "train", "trainer.no_such_key=1", code=2)
    assert bad["result"] is None and "no_such_key" in bad["error"]


@pytest.mark.slow
def test_verify(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = repro(capsys, "verify", "--inputs-only", "out/rel", code=0)
    assert ok["result"]["result"] == "identical" and ok["result"]["mode"] == "inputs-only"
    bad = repro(capsys, "verify", "--inputs-only", "--weights", "out/rel/metrics.jsonl", "out/rel/repro.lock", code=1)
    assert bad["result"]["differences"] and bad["error"].startswith("MISMATCH: ")
    missing = repro(capsys, "verify", "nowhere/repro.lock", code=2)
    assert missing["result"] is None and "nowhere/repro.lock: no such lockfile" in missing["error"]


@pytest.mark.slow
def test_diff(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = project / "out" / "rel" / "repro.lock"
    same = repro(capsys, "diff", str(lock), str(lock), code=0)
    assert same["result"]["result"] == "identical" and same["result"]["differences"] == []
    edited = json.loads(lock.read_text())
    edited["build"]["threads"] = 1
    (project / "b.lock").write_text(json.dumps(edited))
    differ = repro(capsys, "diff", str(lock), "b.lock", code=1)
    assert [d["name"] for d in differ["result"]["differences"]] == ["threads"]
    assert differ["error"] == "the locks differ: 1 difference"
    (project / "c.lock").write_text("{")
    assert "not valid JSON" in repro(capsys, "diff", str(lock), "c.lock", code=2)["error"]


@pytest.mark.slow
def test_hash(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = repro(capsys, "hash", "--quiet", "repro/examples", code=0)
    lock = json.loads((project / "out" / "rel" / "repro.lock").read_text())
    assert ok["result"]["root_digest"] == lock["inputs"]["data"]["root_digest"]
    assert main(["hash", "--quiet", "--json", "repro/examples"]) == 0  # streamed, yet canonical JSON
    assert capsys.readouterr().out.encode() == canonical_json(ok)
    assert "outside the root" in repro(capsys, "hash", "--quiet", "..", code=2)["error"]


@pytest.mark.slow
def test_audit(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = repro(capsys, "audit", "out/rel", code=0)
    assert ok["result"]["lock"]["path"] == "out/rel/repro.lock"
    assert "no repro.lock in this folder" in repro(capsys, "audit", "out", code=2)["error"]


@pytest.mark.slow
def test_card(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = repro(capsys, "card", "out/rel", code=0)
    assert ok["result"]["card"] == "out/rel/README.md" and (project / "out" / "rel" / "loss.png").is_file()
    (project / "out" / "rel" / "metrics.jsonl").write_text("not json\n")
    assert "metrics.jsonl" in repro(capsys, "card", "out/rel", code=2)["error"]


@pytest.mark.slow
def test_attest(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = repro(capsys, "attest", "out/rel", code=0)
    assert ok["result"]["provenance"] == "out/rel/provenance.intoto.json"
    assert ok["result"]["subject"]["name"] == "model.safetensors"
    shutil.copy2(project / "out" / "rel" / "metrics.jsonl", project / "out" / "rel" / "model.safetensors")
    bad = repro(capsys, "attest", "out/rel", code=1)
    assert bad["result"] is None and "model.safetensors: sha256 is" in bad["error"]


@pytest.mark.slow
def test_sign_and_verify_signature(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, pub = make_keypair(project, "publisher")
    _, stranger = make_keypair(project, "stranger")
    signed = repro(capsys, "sign", "out/rel", "--key", str(key), code=0)
    assert set(signed["result"]["files"]) == {"model.safetensors", "repro.lock"}
    assert "exclude each other" in repro(capsys, "sign", "out/rel", "--key", str(key), "--keyless", code=2)["error"]
    good = repro(capsys, "verify-signature", "out/rel", "--public-key", str(pub), code=0)
    assert good["result"]["files"] == signed["result"]["files"]
    bad = repro(capsys, "verify-signature", "out/rel", "--public-key", str(stranger), code=1)
    assert bad["result"] is None


@pytest.mark.slow
def test_the_six_release_commands_take_a_folder_or_its_lock(project: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    key, pub = make_keypair(project, "k")
    for path in ("out/rel", "out/rel/repro.lock"):
        for args in (["verify", "--inputs-only"], ["audit"], ["attest"], ["card"], ["sign", "--key", str(key)],
                     ["verify-signature", "--public-key", str(pub)]):
            repro(capsys, args[0], path, *args[1:], code=0)
    assert (project / "out" / "rel" / "provenance.intoto.json").is_file()
    assert not (project / "out" / "provenance.intoto.json").exists()


def test_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = repro(capsys, "init", str(tmp_path / "my-model"), code=0)
    assert ok["result"]["package"] == "my_model" and "configs/train.yaml" in ok["result"]["created"]
    again = repro(capsys, "init", str(tmp_path / "my-model"), code=2)
    assert again["result"] is None and "my-model" in again["error"]


def test_a_bad_command_line_is_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    bad = repro(capsys, "verify", "--no-such-option", "x", code=2)
    assert "unrecognized arguments: --no-such-option" in bad["error"]
    assert repro(capsys, "no-such-command", code=2)["command"] is None


def test_a_bug_is_exit_70_and_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import repro.commands.hash as hash_cmd

    def broken(args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(hash_cmd, "run", broken)
    bad = repro(capsys, "hash", "x", code=70)
    assert bad["error"].startswith("internal error: RuntimeError: boom")


@pytest.mark.slow
def test_without_json_the_text_is_unchanged(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "out/rel/repro.lock", "out/rel/repro.lock"]) == 0
    out = capsys.readouterr()
    assert out.out == "identical: out/rel/repro.lock and out/rel/repro.lock describe the same build\n"
    assert main(["verify", "--inputs-only", "--quiet", "missing"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == "repro verify: error: missing: no such lockfile or release folder\n"
