"""`repro hash`: the lock's digests on the command line, checkable with coreutils."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from repro import progress
from repro.cli import main
from repro.source import hashcache
from repro.source.data import DataSpec, data_file_list
from repro.source.hashcache import HashCache
from repro.source.inputs import data_block
from repro.source.statkey import StatKey

CONFIG = {"data": {"builder": "csv", "data_files": ["data"], "test_fraction": 0.0, "split_seed": 0}}


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    (root / "data" / "sub dir").mkdir(parents=True)
    (root / "data" / "a.csv").write_bytes(b"x,y\n1,2\n")
    (root / "data" / "sub dir" / "ü b.csv").write_bytes(b"x,y\n3,4\n")
    (root / "data" / "empty.csv").write_bytes(b"")
    monkeypatch.chdir(root)
    return root


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["hash", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_text_output_is_sha256sum_output_plus_the_root(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--quiet", "data")
    assert code == 0
    *lines, last = out.splitlines()
    check = subprocess.run(["sha256sum", "--strict", "-c"], input="\n".join(lines) + "\n", text=True,
                           capture_output=True, cwd=proj)
    assert check.returncode == 0 and check.stdout.count(": OK") == 3, check.stdout + check.stderr
    spec = DataSpec.from_config(CONFIG)
    assert last == f"root_digest {data_block(proj, spec, data_file_list(proj, spec))['root_digest']}"
    assert last.split()[1] == hashlib.sha256("".join(sorted(ln + "\n" for ln in lines)).encode()).hexdigest()


def test_json_is_the_locks_data_block(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--quiet", "--json", "data")
    spec = DataSpec.from_config(CONFIG)
    block = json.loads(out)["result"]
    assert code == 0 and block == data_block(proj, spec, data_file_list(proj, spec))
    assert [f["path"] for f in block["files"]] == ["data/a.csv", "data/empty.csv", "data/sub dir/ü b.csv"]


def test_paths_are_relative_to_the_root_wherever_you_stand(proj: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, from_root, _ = _run(capsys, "--quiet", "data/a.csv", "data/sub dir")
    monkeypatch.chdir(proj / "data")
    _, from_data, _ = _run(capsys, "--quiet", "--root", "..", "a.csv", str(proj / "data" / "sub dir"))
    assert from_root == from_data and "  data/a.csv\n" in from_root
    _, quoted_glob, _ = _run(capsys, "--quiet", "--root", "..", "a.*", "sub dir/*")
    assert quoted_glob == from_root


def test_extra_algorithms_in_json(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(capsys, "--quiet", "--json", "--hash", "blake2b", "--hash", "md5", "data/a.csv")
    (entry,) = json.loads(out)["result"]["files"]
    raw = (proj / "data" / "a.csv").read_bytes()
    assert entry["hashes"] == {"sha256": hashlib.sha256(raw).hexdigest(), "blake2b": hashlib.blake2b(raw).hexdigest(),
                               "md5": hashlib.md5(raw).hexdigest()}


def test_rehash_ignores_a_lying_cache(proj: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashcache, "RACY_NS", 0)
    target = str(proj / "data" / "a.csv")
    lie = "0" * 64
    with HashCache(hashcache.cache_path(proj)) as cache:
        cache.store([(target, StatKey.of(os.stat(target)), {"sha256": lie})], 2**62)
    _, cached, err = _run(capsys, "data/a.csv")
    assert cached.startswith(lie) and "1 unchanged" in err
    _, fresh, err = _run(capsys, "--rehash", "data/a.csv")
    assert fresh.startswith(hashlib.sha256(b"x,y\n1,2\n").hexdigest()) and "0 unchanged" in err


@pytest.mark.parametrize(("args", "needle"), [
    (["nothere"], "nothere: no such file"),
    (["/etc/hostname"], "outside the root"),
    (["../x"], "outside the root"),
    (["--hash", "crc32", "data"], "invalid choice"),
])
def test_bad_paths_exit_2_with_one_line(proj: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                        needle: str) -> None:
    try:
        code, out, err = _run(capsys, *args)
    except SystemExit as exc:  # argparse's own usage errors
        code, err = int(exc.code or 0), capsys.readouterr().err
    assert code == 2 and needle in err
    assert "Traceback" not in err


def test_no_bar_off_a_tty(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with progress.byte_bar(quiet=False) as bar:
        assert bar is None  # pytest's stderr is not a TTY
    _, _, err = _run(capsys, "data")
    assert "files/s" not in err


def test_the_bar_shows_bytes_and_files_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake = Tty()
    monkeypatch.setattr("sys.stderr", fake)
    monkeypatch.setattr(progress, "BAR_DELAY_S", 0.0)
    with progress.byte_bar(quiet=False) as bar:
        assert bar is not None
        bar.start(3 << 20, 3)
        for _ in range(3):
            bar.advance(1 << 20, 1)
    shown = fake.getvalue()
    assert "3.00M/3.00M" in shown and "iB/s" in shown and "3/3 files" in shown and "files/s" in shown


def test_repro_hash_never_imports_torch_or_datasets(proj: Path) -> None:
    code = ("import sys; from repro.cli import main; rc = main(['hash', '--quiet', 'data']); "
            "sys.exit(rc or ('torch' in sys.modules) * 10 or ('datasets' in sys.modules) * 20)")
    r = subprocess.run([sys.executable, "-c", code], cwd=proj, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, (r.returncode, r.stderr)


def test_a_quick_command_imports_no_other_command_module(proj: Path) -> None:
    """Start-up is most of a re-check: the CLI loads the named command's module only (not train's, verify's...)."""
    code = ("import sys; from repro.cli import main; rc = main(['hash', '--quiet', 'data']); "
            "print(sorted(m for m in sys.modules if m.startswith('repro.commands.'))); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=proj, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (r.returncode, r.stdout.strip().splitlines()[-1]) == (0, "['repro.commands.hash']"), r.stderr


@pytest.mark.parametrize("extra", [(), ("blake2b", "md5")])
def test_streamed_json_is_byte_for_byte_canonical(proj: Path, extra: tuple[str, ...]) -> None:
    """`repro hash --json` streams the block; it must be canonical_json's bytes, not just equal JSON."""
    from repro.canonical import canonical_json
    from repro.source.algorithms import check_algorithms
    from repro.source.hashtree import hash_tree
    from repro.source.inputs import files_block
    from repro.source.walk import expand_patterns

    (proj / "data" / 'q"uote\t.csv').write_bytes(b"odd name")
    files = expand_patterns(proj, ["data"])
    algorithms = check_algorithms(extra)
    tree = hash_tree(proj, files, algorithms=algorithms)
    assert b"".join(tree.block_json()) == canonical_json(files_block(proj, files, algorithms=algorithms))
    empty = hash_tree(proj, [], algorithms=algorithms)
    assert b"".join(empty.block_json()) == canonical_json(files_block(proj, [], algorithms=algorithms))
