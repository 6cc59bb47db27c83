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
from typing import TYPE_CHECKING, Any

from repro.commands import Outcome, add_config_arguments
from repro.filenames import DVC_YAML_NAME

if TYPE_CHECKING:
    from repro.source.config import ConfigSource


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml disagrees (the default)")
    g.add_argument("--write", action="store_true", help="rewrite dvc.yaml's stages from the declarations")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, key=value")
    add_config_arguments(p, "project root (default: the config folder's parent, or .)")


def run(args: argparse.Namespace) -> Outcome:
    from repro.pipeline.dvcyaml import check, render
    from repro.safeio import read_bytes
    from repro.source.config import find_config
    from repro.source.config_guard import MAX_YAML_BYTES, load_yaml

    source = find_config(args.config_dir, args.config_name, args.root, Path.cwd())
    flags: list[str] = []
    if args.config_dir:
        flags += ["--config-dir", args.config_dir]
    if args.config_name != "train":
        flags += ["--config-name", args.config_name]
    if args.root:
        flags += ["--root", args.root]
    want = declared(source, tuple(flags), args.overrides)
    path = source.root / DVC_YAML_NAME
    exists = os.path.lexists(path)
    doc = (load_yaml(path, DVC_YAML_NAME) if exists else None) or {}  # bounded: size, aliases, a regular file
    text = read_bytes(path, DVC_YAML_NAME, MAX_YAML_BYTES).decode("utf-8") if exists else ""
    if args.write:
        from repro.canonical import atomic_write_bytes

        atomic_write_bytes(path, render(text, want).encode("utf-8"))
        return Outcome({"path": str(path), "written": True, "stages": list(want)},
                       f"wrote {path}: {', '.join(want)}\n")
    actual = doc.get("stages") if isinstance(doc, dict) else None
    problems = check(actual if isinstance(actual, dict) else {}, want)
    result = {"path": str(path), "written": False, "stages": list(want), "problems": problems}
    if not problems:
        return Outcome(result, f"{path}: agrees with the stage declarations ({', '.join(want)})\n")
    return Outcome(result, "".join(line + "\n" for line in problems), 1,
                   f"{path} disagrees with the stage declarations: {len(problems)} problems")


def declared(source: ConfigSource, flags: tuple[str, ...], overrides: list[str]) -> dict[str, dict[str, Any]]:
    """The stages dvc.yaml should hold for this config, the stage commands taking `flags`."""
    from repro.pipeline.dvcyaml import Invocation, expected
    from repro.source.compose import compose_with_raw
    from repro.source.composed import composed_files

    resolved, raw = compose_with_raw(source, overrides)
    return expected(resolved, Invocation(source, flags, raw, tuple(composed_files(source, overrides))))
