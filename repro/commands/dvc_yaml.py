"""Check that dvc.yaml runs the declared stages, tracking exactly their deps, params and outs.

    repro dvc-yaml --check                                   # exit 1 naming each disagreement
    repro dvc-yaml --write                                   # regenerate the stages in dvc.yaml
    repro dvc-yaml --check --config-dir . --config-name params --root .   # a DVC/Hydra params.yaml project

Each stage under `stages:` in the config becomes `repro run NAME`, and training
`repro train --quiet`, with the config flags given here. `--write` keeps the
comment block at the top of dvc.yaml, stages repro does not declare, and any
other outs of the train stage beside the weights (a task's exported files).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from repro.commands import Outcome


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml disagrees (the default)")
    g.add_argument("--write", action="store_true", help="rewrite dvc.yaml's stages from the declarations")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, key=value")
    p.add_argument("--config-dir", help="folder holding the project's Hydra configs (default: ./configs)")
    p.add_argument("--config-name", default="train", help="config file name without .yaml (default: train)")
    p.add_argument("--root", help="project root (default: the config folder's parent, or .)")


def run(args: argparse.Namespace) -> Outcome:
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type stubs

    from repro.lock.dvcyaml import DVC_YAML, Invocation, check, expected, merged
    from repro.safeio import read_bytes
    from repro.source.config import compose, find_config
    from repro.source.config_guard import MAX_YAML_BYTES, load_yaml

    source = find_config(args.config_dir, args.config_name, args.root, Path.cwd())
    flags: list[str] = []
    if args.config_dir:
        flags += ["--config-dir", args.config_dir]
    if args.config_name != "train":
        flags += ["--config-name", args.config_name]
    if args.root:
        flags += ["--root", args.root]
    want = expected(compose(source, args.overrides), Invocation(source, tuple(flags)))
    path = source.root / DVC_YAML
    exists = os.path.lexists(path)
    doc = (load_yaml(path, DVC_YAML) if exists else None) or {}  # bounded: size, aliases, a regular file
    text = read_bytes(path, DVC_YAML, MAX_YAML_BYTES).decode("utf-8") if exists else ""
    actual = doc.get("stages") if isinstance(doc, dict) else None
    actual = actual if isinstance(actual, dict) else {}
    if args.write:
        from repro.canonical import atomic_write_bytes

        header = "".join(ln for ln in _leading_comments(text))
        body = yaml.safe_dump({"stages": merged(actual, want)}, sort_keys=False, default_flow_style=False, width=110)
        atomic_write_bytes(path, (header + body).encode("utf-8"))
        return Outcome({"path": str(path), "written": True, "stages": list(want)},
                       f"wrote {path}: {', '.join(want)}\n")
    problems = check(actual, want)
    result = {"path": str(path), "written": False, "stages": list(want), "problems": problems}
    if not problems:
        return Outcome(result, f"{path}: agrees with the stage declarations ({', '.join(want)})\n")
    return Outcome(result, "".join(line + "\n" for line in problems), 1,
                   f"{path} disagrees with the stage declarations: {len(problems)} problems")


def _leading_comments(text: str) -> list[str]:
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines
