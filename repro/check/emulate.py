"""Another CPU model on this machine: an interpreter that runs under qemu-user, children included.

qemu-user emulates the process it starts, not the programs that process execs
(without binfmt_misc, those run natively). `repro train` builds in a child
process started from `sys.executable` (`repro.builder.child`), so a qemu prefix on
the command line emulates only the parent, and the child, which trains, runs on
the host CPU. The supported way is an interpreter that is emulated itself: a
`bin/python` script that execs qemu with argv[0] set to the script, so that the
emulated Python reports the script as `sys.executable`, starts its children
through it, and finds the venv's packages through the folder's `pyvenv.cfg`.
`repro check`'s `cpu` axis, `repro verify --localize` and the tests use it.
"""

from __future__ import annotations

import os
import platform
import shutil
import sysconfig
from pathlib import Path

QEMU = "qemu-x86_64"
# Intel and AMD models with AVX2, old and new (qemu 7.2 emulates no AVX-512: the host's own CPU
# covers that). `repro check --axes cpu:MODEL` runs any other model qemu knows.
QEMU_CPUS = ("Haswell", "Skylake-Server", "EPYC", "EPYC-Rome")


def qemu_missing() -> str | None:
    """Why this machine cannot emulate another x86-64 CPU model; None when it can."""
    if platform.machine() != "x86_64":
        return f"{QEMU} emulates x86-64 CPUs and this machine is {platform.machine()}"
    if shutil.which(QEMU) is None:
        return f"qemu-user ({QEMU}) is not installed"
    return None


def qemu_python(work: Path, cpu: str, python: str) -> Path:
    """`<work>/qemu-<cpu>/bin/python`: `python` run under `qemu-x86_64 -cpu CPU`, children included.

    The folder holds `pyvenv.cfg` (home: the real interpreter's folder) and a link
    to the running environment's site-packages, so the emulated interpreter
    imports what this one does. Made once per folder; `python` may be a venv's link.
    """
    env = work / f"qemu-{cpu}"
    script = env / "bin" / "python"
    if script.is_file():
        return script
    real = os.path.realpath(python)
    site = Path(sysconfig.get_paths()["purelib"])
    (env / "bin").mkdir(parents=True)
    (env / "lib" / site.parent.name).mkdir(parents=True)
    (env / "lib" / site.parent.name / "site-packages").symlink_to(site)
    (env / "pyvenv.cfg").write_text(f"home = {Path(real).parent}\ninclude-system-site-packages = false\n",
                                    encoding="utf-8")
    script.write_text(f'#!/bin/sh\nexec {QEMU} -cpu {cpu} -0 "$0" {real} "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return script
