"""`repro train` on data beyond the bundled CSV: images plus a preprocessing step, stale
caches, `--rehash`, and the sample-order digest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import DIGITS, EMBEDDED_CONFIGS, TINY, run_repro, sha256_file

from repro.source.hashcache import HashCache, cache_path
from repro.source.statkey import StatKey

pytestmark = pytest.mark.slow
CSV = "repro/examples/digits/digits.csv"

PREP = '''"""Turn 8x8 digit images into 64 pixel columns (0..16, as in the CSV)."""

import numpy as np


def pixels(ds, levels):
    def row(r):
        values = np.asarray(r["image"], dtype=np.float32).reshape(-1) * (16.0 / levels)
        return {f"p{i}": float(v) for i, v in enumerate(values)}

    return ds.map(row, remove_columns=["image"])
'''

IMAGES_YAML = """builder: imagefolder
data_files:
  - images
test_fraction: 0.2
split_seed: 1234
preprocess:
  _target_: prep.pixels
  levels: 240
"""


def _copy_project(root: Path) -> Path:
    shutil.copytree(EMBEDDED_CONFIGS, root / "configs", ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    (root / CSV).parent.mkdir(parents=True)
    shutil.copy2(DIGITS, root / CSV)
    return root


def _train(project: Path, out: str, *extra: str) -> dict[str, Any]:
    r = run_repro(["train", "--quiet", *TINY, f"out_dir={out}", *extra], cwd=project)
    assert r.code == 0, r.stderr
    lock: dict[str, Any] = json.loads((project / out / "repro.lock").read_text())
    return lock


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The digits project and one tiny run of it, shared by the tests that only read."""
    project = _copy_project(tmp_path_factory.mktemp("digits") / "project")
    return project, _train(project, "base")


def _images(project: Path, rows: int = 300) -> list[str]:
    import numpy as np
    from PIL import Image

    lines = (project / CSV).read_text().splitlines()
    header, body = lines[0].split(","), lines[1 : rows + 1]
    written = []
    for i, line in enumerate(body):
        values = dict(zip(header, line.split(","), strict=True))
        label = values.pop("label")
        pixels = np.array([int(float(values[f"p{k}"])) * 15 for k in range(64)], dtype=np.uint8).reshape(8, 8)
        rel = f"images/{label}/{i:04d}.png"
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(project / rel)
        written.append(rel)
    return sorted(written, key=lambda p: p.encode())


def test_imagefolder_with_a_preprocess_step(tmp_path: Path) -> None:
    project = _copy_project(tmp_path / "project")
    header = (project / CSV).read_text().splitlines()[0]
    assert header.split(",")[:2] == ["p0", "p1"] and header.endswith(",label"), header
    written = _images(project)
    (project / "prep.py").write_text(PREP)
    (project / "configs" / "data" / "images.yaml").write_text(IMAGES_YAML)
    a = _train(project, "a", "data=images")
    data = a["inputs"]["data"]
    assert [f["path"] for f in data["files"]] == written
    assert data["preprocess"] == {"target": "prep.pixels", "file": {
        "path": "prep.py", "size": len(PREP.encode()), "hashes": {"sha256": sha256_file(project / "prep.py")}}}
    assert a["inputs"]["config"]["resolved"]["data"]["preprocess"] == {"_target_": "prep.pixels", "levels": 240}
    assert a["outputs"]["metrics"]["accuracy"] > 0.2  # it learned from the pixels, not from noise

    # repro verify re-hashes the step's code too: honest first, then an edited prep.py is named.
    lock = project / "a" / "repro.lock"
    ok = run_repro(["verify", "--quiet", "--inputs-only", "--root", str(project), str(lock)], cwd=project)
    assert ok.code == 0, ok.stdout + ok.stderr
    (project / "prep.py").write_text(PREP + "# edited\n")
    bad = run_repro(["verify", "--quiet", "--inputs-only", "--json", "--root", str(project), str(lock)], cwd=project)
    assert bad.code == 1, bad.stdout + bad.stderr
    assert "preprocess.file.hashes.sha256" in bad.stdout and "preprocess.file.size" in bad.stdout


def test_same_size_edit_with_mtime_restored_and_rehash(tmp_path: Path) -> None:
    project = _copy_project(tmp_path / "project")
    csv = project / CSV
    a = _train(project, "a")
    st = csv.stat()
    header, *rows = csv.read_bytes().split(b"\n")
    assert all(r.startswith(b"0,") for r in rows if r)  # p0 is blank in every digit
    raw = b"\n".join([header, *(b"9" + r[1:] if r else r for r in rows)])  # same size, every row changed
    csv.write_bytes(raw)
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (csv.stat().st_size, csv.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    truth = hashlib.sha256(raw).hexdigest()

    # The stat cache sees the edit through ctime, and datasets' own cache is not served stale.
    b = _train(project, "b")
    old = a["inputs"]["data"]["files"][0]["hashes"]["sha256"]
    assert b["inputs"]["data"]["files"][0]["hashes"]["sha256"] == truth != old
    assert b["outputs"]["weights"]["hashes"] != a["outputs"]["weights"]["hashes"]

    # An edit no stat field shows (simulated: the cache files the old digest under today's stat;
    # test_hashcache shows the default run trusts it) is caught by --rehash, which reads every byte.
    full = f"{project.resolve()}/{CSV}"
    with HashCache(cache_path(project)) as cache:
        cache.store([(full, StatKey.of(os.stat(full)), {"sha256": old})], 2**62)
    d = _train(project, "d", "--rehash")
    assert d["inputs"]["data"]["files"][0]["hashes"]["sha256"] == truth
    assert d["outputs"]["weights"]["hashes"] == b["outputs"]["weights"]["hashes"]


def test_shuffle_changes_the_sample_order_digest(digits: tuple[Path, dict[str, Any]]) -> None:
    """(The seed's effect is tested in test_train.)"""
    project, base = digits
    assert base["inputs"]["config"]["resolved"]["trainer"]["shuffle"] is True
    fixed = _train(project, "no-shuffle", "trainer.shuffle=false")
    orders = [lk["inputs"]["data"]["sample_order"] for lk in (base, fixed)]
    assert orders[0]["sha256"] != orders[1]["sha256"]
    assert orders[0]["count"] == orders[1]["count"] == 20 * 64


def test_repro_hash_prints_the_locks_data_digests(digits: tuple[Path, dict[str, Any]]) -> None:
    project, base = digits
    r = run_repro(["hash", "--json", CSV], cwd=project)
    assert r.code == 0, r.stderr
    block = json.loads(r.stdout)["result"]
    assert block["files"] == base["inputs"]["data"]["files"]
    assert block["root_digest"] == base["inputs"]["data"]["root_digest"]
