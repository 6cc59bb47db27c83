"""The toolchain record: what ran, apart from the source; the compiler and its version."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from repro import __version__
from repro.environment import toolchain
from repro.source.discover import imported_project_files

REPO = Path(__file__).resolve().parent.parent


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compiler_fingerprint", REPO / "scripts" / "compiler_fingerprint.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compiler_changes_need_a_version_bump() -> None:
    """A compiler module that changed under the same repro version would let two compilers share a name."""
    script = _load_script()
    committed = json.loads(script.FINGERPRINT.read_text(encoding="utf-8"))
    now = script.current()
    changed = script.changes(committed, now)
    if committed["version"] == __version__:
        assert not changed, (f"compiler modules changed but repro is still {__version__}: {changed[:5]}; bump "
                             "repro.__version__, then run `python scripts/compiler_fingerprint.py --write`")
    else:
        raise AssertionError(f"repro is {__version__} but the fingerprint is {committed['version']}: run "
                             "`python scripts/compiler_fingerprint.py --write`")


def test_card_audit_signing_and_cli_are_not_the_compiler() -> None:
    sources = toolchain.compiler_sources()
    assert "repro/builder/build.py" in sources and "repro/train/loop.py" in sources
    assert not any(p.startswith(("repro/trust/", "repro/commands/")) for p in sources)
    assert "repro/cli.py" not in sources and "repro/progress.py" not in sources
    assert not toolchain.is_compiler_module("repro.trust.model_card")
    assert toolchain.is_compiler_module("repro.models")


def test_the_fingerprint_holds_only_modules_a_lock_can_record() -> None:
    """An entry point runs as `__main__`, which `compiler_files` never records, so it is no compiler source."""
    sources = toolchain.compiler_sources()
    assert not [p for p in sources if p.endswith("/__main__.py")]
    entry_points = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "repro").rglob("__main__.py"))
    assert entry_points == ["repro/__main__.py", "repro/builder/__main__.py"]
    running_as_main = {"__main__": ModuleType("__main__")}
    running_as_main["__main__"].__file__ = str(REPO / "repro" / "build" / "__main__.py")
    assert toolchain.compiler_files(running_as_main) == []


def test_compiler_files_are_the_loaded_compiler_modules() -> None:
    import repro.cli  # noqa: F401  (loaded, not compiler)
    import repro.source.hashing  # noqa: F401

    files = toolchain.compiler_files()
    assert "repro/source/hashing.py" in files and "repro/cli.py" not in files
    assert files == sorted(files, key=lambda s: s.encode("utf-8"))


def test_distributions_are_what_was_imported(tmp_path: Path) -> None:
    import numpy  # noqa: F401

    dists = toolchain.imported_distributions({"numpy": sys.modules["numpy"], "repro": sys.modules["repro"],
                                              "_distutils_hack": None})
    assert dists == {"numpy": numpy.__version__}


def test_torch_facts_come_from_the_loaded_torch() -> None:
    import torch

    facts = toolchain.torch_facts({"torch": torch})
    assert facts is not None and facts["version"] == torch.__version__
    assert facts["build"] == (torch.__version__.partition("+")[2] or None)
    assert facts["cuda"] == torch.version.cuda
    assert toolchain.torch_facts({}) is None


def test_discovery_finds_project_modules_only(tmp_path: Path) -> None:
    (tmp_path / "mylib").mkdir()
    (tmp_path / "mylib" / "net.py").write_text("X = 1\n")
    (tmp_path / ".venv" / "lib" / "site-packages").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "site-packages" / "dep.py").write_text("")
    net, dep, outside = ModuleType("mylib.net"), ModuleType("dep"), ModuleType("os2")
    net.__file__ = str(tmp_path / "mylib" / "net.py")
    dep.__file__ = str(tmp_path / ".venv" / "lib" / "site-packages" / "dep.py")
    outside.__file__ = "/usr/lib/python3/os2.py"
    found = imported_project_files(tmp_path, {"mylib.net": net, "dep": dep, "os2": outside, "builtin": None})
    assert found == ["mylib/net.py"]


def test_discovery_follows_links_as_resolve_does(tmp_path: Path) -> None:
    """A module reached through a link counts where its file really lies: a linked file into the project
    is project code, a file in a linked folder that leads outside is not (folders are resolved once)."""
    root, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    (root / "mylib").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "mylib" / "real.py").write_text("X = 1\n")
    (elsewhere / "mod.py").write_text("Y = 2\n")
    (tmp_path / "link.py").symlink_to(root / "mylib" / "real.py")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    into, out = ModuleType("into"), ModuleType("out")
    into.__file__ = str(tmp_path / "link.py")
    out.__file__ = str(root / "linked" / "mod.py")
    assert imported_project_files(root, {"into": into, "out": out}) == ["mylib/real.py"]
