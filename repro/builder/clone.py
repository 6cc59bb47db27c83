"""What a stranger's clone of a project holds: its git-tracked files, plus what DVC tracks. No torch.

`repro check`'s `path` axis rebuilds the project from a copy at another path, to
show that nothing in the build depends on where it lies. A copy of the folder as
it is would carry what no stranger gets (an untracked `.venv` of 57,000 files, a
stale output) and hide what they lack (a data file nobody added). So the copy is
what a clone plus `dvc pull` gives:

- the files git tracks under the project root (`git ls-files`: the index, so a
  file just `git add`ed counts);
- the outputs of `dvc.yaml`'s stages and the paths of `*.dvc` pointer files
  (data, stage records), where they are present here.

A project outside git has no such copy, and the axis refuses, saying so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from repro.errors import UserInputError
from repro.pipeline.dvc_lineage import read_stages
from repro.safeio import read_bytes
from repro.source.filetree import SKIP_DIRS
from repro.source.walk import expand_patterns

DVC_POINTER = ".dvc"


def clone_files(root: Path) -> list[str]:
    """Relative paths of the files a clone of the project at `root` holds (see the module docstring), sorted."""
    tracked = git_tracked(root)
    found = set(tracked)
    dvc_paths = [o for st in read_stages(root) for o in st.outs]
    dvc_paths += [p for rel in tracked if rel.endswith(DVC_POINTER) for p in _pointer_outs(root, rel)]
    for rel in dvc_paths:
        if (root / rel).is_dir():
            found.update(expand_patterns(root, [rel]))
        elif (root / rel).is_file():
            found.add(rel)
    return sorted((p for p in found if not set(Path(p).parts[:-1]) & SKIP_DIRS),
                  key=lambda s: s.encode("utf-8"))


def git_tracked(root: Path) -> list[str]:
    """`git ls-files` under root, relative to it: the regular files present; UserInputError outside git.

    Hooks and filters a repository's config names are never run: `ls-files` reads
    the index, with the file-system monitor off.
    """
    try:
        proc = subprocess.run(["git", "-C", str(root), "-c", "core.fsmonitor=false", "ls-files", "-z",
                               "--cached", "--", "."], capture_output=True, check=False)
    except OSError as exc:
        raise UserInputError(f"{root}: cannot run git ({exc.strerror}); the path axis copies what a clone of the "
                             "project holds") from None
    if proc.returncode != 0:
        raise UserInputError(f"{root}: not in a git repository; the path axis copies what a stranger's clone holds "
                             "(the files git tracks, plus DVC-tracked data), so there is nothing to copy: "
                             "`git init && git add` the project, or leave the axis out (--axes)")
    names = [os.fsdecode(n) for n in proc.stdout.split(b"\0") if n]
    return [n for n in names if (root / n).is_file() and not (root / n).is_symlink()]


def _pointer_outs(root: Path, rel: str) -> list[str]:
    """The `outs` paths of a `.dvc` pointer file, relative to the root."""
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type stubs

    try:
        doc: Any = yaml.safe_load(read_bytes(root / rel, DVC_POINTER, 1 << 20))
    except (UserInputError, yaml.YAMLError, RecursionError):
        return []
    outs = doc.get("outs") if isinstance(doc, dict) else None
    folder = Path(rel).parent
    found = []
    for out in outs if isinstance(outs, list) else []:
        path = out.get("path") if isinstance(out, dict) else None
        if isinstance(path, str) and path and ".." not in Path(path).parts and not Path(path).is_absolute():
            found.append((folder / path).as_posix())
    return found
