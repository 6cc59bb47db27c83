"""The pieces of issue 29's defences, one at a time: the beneath-the-root opener, the project finder,
the source reader behind the trust gate, the YAML bounds, and the schema fast path. Torch-free, fast."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from repro.builder.definitions import definition, reader
from repro.errors import ConfigError, UserInputError
from repro.lock.fastschema import first_error
from repro.safeio import copy_beneath, open_beneath
from repro.source import project_import
from repro.source.config_guard import MAX_YAML_NODES, guard_config_dir, load_yaml
from repro.source.hashfile import digest_fd


# ---- safeio.open_beneath ---------------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "f.txt").write_text("inside\n")
    (outside / "secret").write_text("outside\n")
    os.symlink(outside, root / "out-link")  # a folder link leading out
    os.symlink("a", root / "in-link")  # a folder link that stays inside
    os.symlink(outside / "secret", root / "a" / "file-link")
    os.mkfifo(root / "fifo")
    return root


@pytest.mark.parametrize(("rel", "links", "why"), [
    ("out-link/secret", "refuse", "symbolic link"), ("out-link/secret", "inside", "outside the project root"),
    ("in-link/f.txt", "refuse", "symbolic link"), ("a/file-link", "inside", "outside the project root"),
    ("fifo", "refuse", "not a regular file"), ("a", "refuse", "a directory"), ("../outside/secret", "refuse", ".."),
    ("/etc/passwd", "refuse", "not a relative path"), ("a/missing", "refuse", "no such"),
])
def test_open_beneath_refuses_everything_but_a_regular_file_inside(tree: Path, rel: str, links: str,
                                                                   why: str) -> None:
    with pytest.raises(UserInputError, match=why):
        open_beneath(tree, rel, "thing", links=links)  # type: ignore[arg-type]


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "O_NOFOLLOW-per-component"])
def test_open_beneath_reads_through_its_descriptor(tree: Path, openat2: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import repro.safeio as safeio

    if not openat2:
        monkeypatch.setattr(safeio, "_OPENAT2_MISSING", [True])
    for rel, links in (("a/f.txt", "refuse"), ("in-link/f.txt", "inside")):
        fd, st = open_beneath(tree, rel, "thing", links=links)  # type: ignore[arg-type]
        try:
            hashed = digest_fd(fd)
            assert st.st_size == hashed.size == 7
            assert hashed.digests == {"sha256": hashlib.sha256(b"inside\n").hexdigest()}
        finally:
            os.close(fd)
    with pytest.raises(UserInputError, match="symbolic link"):
        open_beneath(tree, "out-link/secret", "thing")


def test_copy_beneath_checks_the_size_before_reading_and_leaves_nothing_partial(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copy" / "f.txt"
    assert copy_beneath(tree, "a/f.txt", dest, 7, "thing") == hashlib.sha256(b"inside\n").hexdigest()
    assert dest.read_text() == "inside\n"
    with open(tree / "a" / "big", "wb") as fh:
        fh.truncate(1 << 30)  # sparse: refused by its size, never read
    with pytest.raises(UserInputError, match="1073741824 bytes, the lock records 7"):
        copy_beneath(tree, "a/big", tmp_path / "copy" / "big", 7, "thing")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["f.txt"]


# ---- the project finder ----------------------------------------------------------------------
@pytest.fixture
def isolated_imports() -> Iterator[None]:
    """Put sys.meta_path, sys.path and sys.modules back after a test installs a finder."""
    meta, path, modules = list(sys.meta_path), list(sys.path), dict(sys.modules)
    yield
    sys.meta_path[:] = meta
    sys.path[:] = path
    for name in set(sys.modules) - set(modules):
        del sys.modules[name]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_rebuild_imports_exactly_the_hashed_files_as_hashed(tmp_path: Path, isolated_imports: None) -> None:
    root = tmp_path / "proj"
    (root / "pkgx" / "__pycache__").mkdir(parents=True)
    (root / "pkgx" / "__init__.py").write_text("")
    (root / "pkgx" / "net.py").write_text("VALUE = 'hashed'\n")
    (root / "pkgx" / "extra.py").write_text("VALUE = 'not hashed'\n")
    # A poisoned bytecode file beside the hashed source: a plain import would run it.
    (root / "pkgx" / "__pycache__" / f"net.{sys.implementation.cache_tag}.pyc").write_bytes(b"garbage")
    served = {rel: _digest(root / rel) for rel in ("pkgx/__init__.py", "pkgx/net.py")}
    project_import.install(root, served)
    assert str(root) not in sys.path
    assert importlib.import_module("pkgx.net").VALUE == "hashed"
    with pytest.raises(project_import.ProjectCodeError, match="not a project file hashed in the lock"):
        importlib.import_module("pkgx.extra")


def test_a_file_changed_since_the_lock_is_refused(tmp_path: Path, isolated_imports: None) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "modx.py").write_text("VALUE = 1\n")
    served = {"modx.py": _digest(root / "modx.py")}
    (root / "modx.py").write_text("VALUE = 2\n")
    project_import.install(root, served)
    with pytest.raises(project_import.ProjectCodeError, match="the lock hashed"):
        importlib.import_module("modx")


def test_the_users_own_build_imports_any_project_file_without_the_root_on_the_path(
        tmp_path: Path, isolated_imports: None) -> None:
    root = tmp_path / "proj"
    (root / "nsx").mkdir(parents=True)  # a namespace package (no __init__.py)
    (root / "nsx" / "mod.py").write_text("VALUE = 'ns'\n")
    sys.path.insert(0, str(root))
    project_import.install(root)
    assert str(root) not in sys.path
    assert importlib.import_module("nsx.mod").VALUE == "ns"
    assert importlib.import_module("nsx.mod").__file__ == str(root / "nsx" / "mod.py")


def test_root_level_modules_shadowing_the_stdlib_or_an_installed_package(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "yaml").mkdir(parents=True)
    (root / "yaml" / "__init__.py").write_text("")
    (root / "json.py").write_text("")
    (root / "mine.py").write_text("")
    (root / "email").mkdir()  # a folder without __init__.py never shadows: a regular module wins
    assert project_import.shadowing(root) == ["json.py", "yaml/__init__.py"]
    with pytest.raises(UserInputError, match="json.py: a module at the project root named like the standard"):
        project_import.refuse_shadowing(root)


# ---- the source reader behind the gate --------------------------------------------------------
def _defined(tmp_path: Path, files: dict[str, str], target: str) -> tuple[str | None, str]:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    hashed = {rel: _digest(tmp_path / rel) for rel in files}
    return definition(target, hashed, reader(tmp_path, hashed))


@pytest.mark.parametrize(("files", "target", "where"), [
    ({"p/net.py": "class Net:\n    pass\n"}, "p.net.Net", "p/net.py"),
    ({"p/net.py": "class Outer:\n    class Inner:\n        pass\n"}, "p.net.Outer.Inner", "p/net.py"),
    ({"p/__init__.py": "from .net import Net\n", "p/net.py": "class Net:\n    pass\n"}, "p.Net", "p/net.py"),
    ({"p/__init__.py": "from p.net import Net as Net\n", "p/net.py": "def Net():\n    pass\n"}, "p.Net", "p/net.py"),
])
def test_a_class_or_function_written_in_a_hashed_file_is_found(tmp_path: Path, files: dict[str, str], target: str,
                                                              where: str) -> None:
    assert _defined(tmp_path, files, target)[0] == where


@pytest.mark.parametrize(("files", "target", "why"), [
    ({"p/net.py": "import torch\n"}, "p.net.torch.save", "not a class or function written"),
    ({"p/net.py": "from torch import save\n"}, "p.net.save", "not a hashed file"),
    ({"p/net.py": "def save():\n    pass\nsave = print\n"}, "p.net.save", "bound more than once"),
    ({"p/net.py": "def save():\n    pass\ndef other():\n    global save\n"}, "p.net.save", "bound more than once"),
    ({"p/net.py": "import os\nif os.environ:\n    def save():\n        pass\n"}, "p.net.save",
     "not a class or function"),
    ({"p/net.py": "class Net:\n    pass\n"}, "p.net.Net.__init__", "dunder"),
    ({"p/net.py": "class Net:\n    pass\n"}, "q.net.Net", "no prefix of it"),
    ({"p/net.py": "class Net:\n    Inner = print\n"}, "p.net.Net.Inner", "not a class or function"),
])
def test_a_name_merely_reachable_from_a_hashed_file_is_not(tmp_path: Path, files: dict[str, str], target: str,
                                                           why: str) -> None:
    where, reason = _defined(tmp_path, files, target)
    assert where is None and why in reason, reason


def test_a_hashed_file_that_changed_since_is_not_judged(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("class A:\n    pass\n")
    hashed = {"m.py": _digest(tmp_path / "m.py")}
    (tmp_path / "m.py").write_text("import torch\nA = torch.save\n")
    where, why = definition("m.A", hashed, reader(tmp_path, hashed))
    assert where is None and "differs from the lock" in why


# ---- YAML bounds -------------------------------------------------------------------------------
def test_an_alias_bomb_is_refused_in_linear_time(tmp_path: Path) -> None:
    bomb = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}, "
        f"*l{i - 1}, *l{i - 1}]\n" for i in range(1, 30))  # 10**30 nodes once expanded
    (tmp_path / "bomb.yaml").write_text(bomb)
    with pytest.raises(UserInputError, match=f"expands to over {MAX_YAML_NODES}"):
        load_yaml(tmp_path / "bomb.yaml", "config")
    (tmp_path / "ok.yaml").write_text("a: &a [1, 2]\nb: *a\n")
    assert load_yaml(tmp_path / "ok.yaml", "config") == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize(("entry", "ok"), [
    ("pkg://repro.configs", True), ("file://configs/extra", True), ("pkg://evilmod", False),
    ("file:///etc", False), ("file://../elsewhere", False), ("/plain/path", False), ("pkg://${oc.env:X}", False),
])
def test_a_search_path_may_reach_only_repro_and_the_project(tmp_path: Path, entry: str, ok: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train.yaml").write_text(json.dumps({"hydra": {"searchpath": [entry]}}))
    monkeypatch.chdir(tmp_path)
    if ok:
        guard_config_dir(tmp_path / "configs", tmp_path)
    else:
        with pytest.raises(ConfigError, match="hydra.searchpath entry"):
            guard_config_dir(tmp_path / "configs", tmp_path)


# ---- the schema fast path ----------------------------------------------------------------------
def test_the_fast_path_gives_jsonschemas_own_answer() -> None:
    """On lists long enough to be thinned, the first error (message and path) is jsonschema's."""
    from repro.lock.lockfile import schema

    files_schema = {"$defs": schema()["$defs"], "type": "object",
                    "properties": {"files": {"$ref": "#/$defs/files"}}}
    good = {"path": "d/x.csv", "size": 3, "hashes": {"sha256": "ab" * 32}}
    bads = [{**good, "size": -1}, {**good, "path": "../x"}, {**good, "extra": 1}, {**good, "hashes": {}},
            {**good, "size": True}, {**good, "path": 5}, "not an object"]
    for bad in bads:
        for at in (0, 40, 99):
            doc = {"files": [dict(good, path=f"d/{i}.csv") for i in range(100)]}
            doc["files"][at] = bad
            expected = sorted(jsonschema.Draft202012Validator(files_schema).iter_errors(doc),
                              key=lambda e: list(e.absolute_path))[0]
            got = first_error(doc, files_schema)
            assert got is not None and (list(got.absolute_path), got.message) == \
                (list(expected.absolute_path), expected.message), (bad, at)
    assert first_error({"files": [good] * 100}, files_schema) is None
