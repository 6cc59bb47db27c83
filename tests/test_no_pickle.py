"""No pickle anywhere in the package: nothing repro writes or reads can run code when loaded."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

# Modules that unpickle (or are built on it).
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
# accelerate's save_state/load_state pickle RNG and sampler state; torch.save pickles.
FORBIDDEN_CALLS = {"save_state", "load_state"}
TEXT_PATTERN = re.compile(r"\b(?:c?pickle|dill|cloudpickle)\b\s*[.:]|torch\.load|save_state|load_state|allow_pickle")


def _kwarg_is_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def violations(package: Path) -> list[str]:
    """Every pickling import or call in the package's Python, and pickle hooks in its YAML/JSON."""
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        nodes = sorted(ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))),
                       key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                found += [f"{rel}:{node.lineno}: imports {n}" for n in names
                          if n and n.split(".")[0] in PICKLING_MODULES]
            elif isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name.rsplit(".", 1)[-1] in FORBIDDEN_CALLS:
                    found.append(f"{rel}:{node.lineno}: calls {name}")
                elif name.endswith("torch.load") and not _kwarg_is_true(node, "weights_only"):
                    found.append(f"{rel}:{node.lineno}: torch.load without weights_only=True")
                elif name.endswith("torch.save"):
                    found.append(f"{rel}:{node.lineno}: torch.save writes a pickle")
                elif _kwarg_is_true(node, "allow_pickle"):
                    found.append(f"{rel}:{node.lineno}: {name}(allow_pickle=True)")
    for path in sorted([*package.rglob("*.yaml"), *package.rglob("*.json")]):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if TEXT_PATTERN.search(line):
                found.append(f"{path.relative_to(package.parent)}:{i}: {line.strip()}")
    return found


def test_the_repro_package_never_pickles() -> None:
    assert violations(REPO / "repro") == []


def test_the_scan_finds_each_kind_of_pickling(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "configs").mkdir(parents=True)
    (pkg / "a.py").write_text(
        "import pickle\nfrom cloudpickle import dumps\nimport torch\n"
        "torch.load('x')\ntorch.load('x', weights_only=False)\ntorch.load('x', weights_only=True)\n"
        "torch.save({}, 'x')\naccelerator.save_state('d')\naccelerator.load_state('d')\n"
        "np.load('x', allow_pickle=True)\n# a comment about pickled files is fine\n")
    (pkg / "configs" / "evil.yaml").write_text("_target_: pickle.loads\nname: pickled-data\n")
    assert violations(pkg) == [
        "pkg/a.py:1: imports pickle",
        "pkg/a.py:2: imports cloudpickle",
        "pkg/a.py:4: torch.load without weights_only=True",
        "pkg/a.py:5: torch.load without weights_only=True",
        "pkg/a.py:7: torch.save writes a pickle",
        "pkg/a.py:8: calls accelerator.save_state",
        "pkg/a.py:9: calls accelerator.load_state",
        "pkg/a.py:10: np.load(allow_pickle=True)",
        "pkg/configs/evil.yaml:1: _target_: pickle.loads",
    ]
