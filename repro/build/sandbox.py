"""Run a rebuild with the network off and the project read-only, where the machine allows it.

`unshare -rnm` (util-linux) gives the child a user namespace, an empty network
namespace (no interface is up: nothing can be reached, not even loopback) and a
mount namespace in which the project root is bind-mounted read-only. Only one
process is sandboxed so: several ranks talk over loopback. Where `unshare` is
missing or the kernel refuses user namespaces, the rebuild runs unsandboxed and
the report says so. See docs/security.md.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# $0 is the folder to make read-only; "$@" the command to run inside.
_READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


@dataclass(frozen=True)
class Sandbox:
    """A command prefix (empty when not sandboxed) and the sentence the report shows."""

    prefix: tuple[str, ...]
    description: str

    @property
    def active(self) -> bool:
        return bool(self.prefix)


def sandbox_for(root: Path, work_dir: Path, world_size: int, wanted: bool = True) -> Sandbox:
    """The strongest sandbox this machine allows for one rebuild (probed by running `true` in it)."""
    if not wanted:
        return Sandbox((), "not sandboxed (--no-sandbox)")
    if world_size != 1:
        return Sandbox((), "not sandboxed: several ranks need the loopback network")
    unshare = shutil.which("unshare")
    if unshare is None:
        return Sandbox((), "not sandboxed: `unshare` (util-linux) is not installed")
    root, work_dir = root.resolve(), work_dir.resolve()
    candidates: list[tuple[tuple[str, ...], str]]
    if work_dir.is_relative_to(root):  # the rebuild writes there: only the network can be cut
        candidates = [((unshare, "-rn", "--"), "network off (unshare); project writable: --work-dir is inside it")]
    else:
        candidates = [((unshare, "-rnm", "--", "sh", "-c", _READ_ONLY, str(root)),
                       "network off, project read-only (unshare)"),
                      ((unshare, "-rn", "--"), "network off (unshare); the project could not be made read-only")]
    for prefix, description in candidates:
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return Sandbox(prefix, description)
    return Sandbox((), "not sandboxed: this kernel refuses unprivileged user namespaces")
