"""Run a rebuild (or a stage from a stranger's record) in a sandbox it cannot undo, where the machine allows it.

The strongest mechanism that works here, probed by running `true` in it:

1. **bubblewrap** (`bwrap`, the sandbox Flatpak uses): new user, mount, PID,
   network, IPC and UTS namespaces; a root file system holding only the system
   folders, the Python installation, repro, the portable kernels' cache, the project
   (read-only) and the work folder (the only writable place besides a private `/tmp`). The network
   namespace has only loopback, so nothing outside can be reached; no host UNIX
   socket exists in that file system (`/run`, `/tmp`, home folders are not
   there), and abstract ones belong to the host's network namespace. The child
   has no capabilities and may not create user namespaces (`--disable-userns`),
   so it cannot mount, remount or unmount anything.
2. **unshare** (util-linux), where bwrap is missing: an outer user namespace
   that owns a new network namespace (no interface up) and a mount namespace in
   which the project is bind-mounted read-only; then the child is moved into an
   inner user and mount namespace, where that mount is locked (the kernel
   refuses to make a locked mount writable or to unmount it) and the child has
   no capabilities. Host UNIX sockets stay reachable at this tier.
3. Nothing: the report says why.

docs/security.md says what each tier proves; tests/hostile/test_sandbox.py tries
to remount, connect to a host UNIX socket, reach the network and write.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# $0 is the folder to make read-only; "$@" the command to run inside. The inner `unshare -U -m` locks the mount.
_READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec unshare -U -m -- "$@"'
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
# Caches that would point outside the sandbox: a child gets its own under the private HOME (/tmp).
_CACHE_VARS = ("XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "TORCH_HOME", "TEMP", "TMP")
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class Sandbox:
    """A command prefix (empty when not sandboxed), the sentence the report shows, and the mechanism."""

    prefix: tuple[str, ...]
    description: str
    mechanism: str = "none"  # "bubblewrap", "unshare" or "none"

    @property
    def active(self) -> bool:
        return bool(self.prefix)


def sandbox_for(root: Path, work_dir: Path, world_size: int, wanted: bool = True,
                python: str | None = None) -> Sandbox:
    """The strongest sandbox this machine allows for one rebuild (probed by running `true` in it).

    `python`: another environment's interpreter (`--toolchain recreate`), made visible inside.
    """
    if not wanted:
        return Sandbox((), "not sandboxed (--no-sandbox)")
    root, work_dir = root.resolve(), work_dir.resolve()
    bwrap = shutil.which("bwrap")
    if bwrap is not None:
        prefix = bubblewrap_prefix(bwrap, root, work_dir, python)
        if _works(prefix):
            return Sandbox(prefix, "bubblewrap: network off (loopback only), project read-only, writes only to the "
                                   "work folder, no host UNIX sockets, no new namespaces", "bubblewrap")
    if world_size != 1:
        return Sandbox((), "not sandboxed: several ranks need the loopback network, and bubblewrap (bwrap), which "
                           "keeps it, is not installed or not allowed here")
    unshare = shutil.which("unshare")
    if unshare is None:
        return Sandbox((), "not sandboxed: neither bubblewrap (bwrap) nor unshare (util-linux) is installed")
    candidates: list[tuple[tuple[str, ...], str]] = []
    if not work_dir.is_relative_to(root):
        candidates.append(((unshare, "-rnm", "--", "sh", "-c", _READ_ONLY, str(root)),
                           "unshare: network off, project read-only (a locked mount); host UNIX sockets reachable "
                           "(install bubblewrap to hide them)"))
    candidates.append(((unshare, "-rn", "--"), "unshare: network off; project writable (--work-dir is inside it, or "
                                               "it could not be made read-only); host UNIX sockets reachable"))
    for prefix, description in candidates:
        if _works(prefix):
            return Sandbox(prefix, description, "unshare")
    return Sandbox((), "not sandboxed: this kernel refuses unprivileged user namespaces")


def bubblewrap_prefix(bwrap: str, root: Path, work_dir: Path, python: str | None = None) -> tuple[str, ...]:
    """bwrap's command line: see the module doc. Folders are bound shallowest first, so a deeper bind
    (the work folder inside the project, or the project inside the work folder) lands on top."""
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL",
            "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
            # the datasets cache a verify child is given (repro.builder.child, own_cache), for every child
            "--setenv", "HF_DATASETS_CACHE", str(work_dir / "hf-datasets-cache")]
    for name in _CACHE_VARS:
        args += ["--unsetenv", name]
    for path in _SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    binds = [(p, "--ro-bind") for p in _python_folders(python) if not any(_inside(s, p) for s in _SYSTEM)]
    binds += [(str(_kernel_cache()), "--ro-bind"), (str(root), "--ro-bind"), (str(work_dir), "--bind")]
    seen: set[str] = set()
    for path, how in sorted(binds, key=lambda b: (b[0].count(os.sep), b[1] == "--bind")):
        if path in seen and how == "--ro-bind":
            continue
        seen.add(path)
        args += [how, path, path]
    return (*args, "--chdir", str(work_dir), "--")


def _kernel_cache() -> Path:
    """Where the launching process builds repro's portable kernels (docs/portable.md): the child loads its
    library from there, read-only. Made if missing, so the folder can be bound before the build fills it."""
    from repro.environment.kernels import cache_root

    folder = cache_root()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def _python_folders(python: str | None) -> list[str]:
    """Where this interpreter, its libraries and repro live (and another environment's, for `python`)."""
    places = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
              str(_PACKAGE_PARENT)}
    places |= {p for p in sys.path if p and os.path.isdir(p)}
    if python is not None:  # a recreated toolchain: its virtual environment and the interpreter it was made from
        places |= {str(Path(python).parent.parent), str(Path(os.path.realpath(python)).parent.parent)}
    folders = {p for p in places if os.path.isdir(p)}
    return _outermost(folders | {os.path.realpath(p) for p in folders})


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths that are not inside another one of them."""
    ordered = sorted(set(paths), key=lambda p: (p.count(os.sep), p))
    out: list[str] = []
    for p in ordered:
        if not any(_inside(o, p) for o in out):
            out.append(p)
    return out


def _inside(folder: str, path: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _works(prefix: tuple[str, ...]) -> bool:
    try:
        return subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
