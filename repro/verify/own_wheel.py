"""repro's own wheel, for `verify --toolchain recreate`: found in the cache or built from this installation. No torch.

A recreated toolchain must hold the repro that built the lock. When that is the
repro installed here (same version), no index needs to have it: its wheel is
made from this installation, so `--find-links` is only for the user's own wheels.

- an editable install (a source checkout, `pip install -e .`): `pip wheel` of the
  source folder, offline (`--no-build-isolation`, the installed setuptools);
- an install from a wheel: the wheel packed again from the files its RECORD
  lists (the same files, with a fresh RECORD).

Wheels are cached beside the toolchains, by version and a digest of repro's own
files, so an edited checkout never reuses a stale one. `check_installed` still
compares the installed compiler with the lock's afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from repro import __version__
from repro.source.inputs import PACKAGE_DIR

_NOT_PACKED = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_build.json", "uv_cache.json")


def own_wheel_dir(version: str, cache: Path) -> Path | None:
    """A folder holding repro `version`'s wheel, made from this installation; None when another version
    is installed here (or none can be made: the caller then says which --find-links is needed)."""
    if version != __version__:
        return None
    folder = cache / f"repro-{version}-{_files_digest()[:16]}"
    if any(folder.glob("repro-*.whl")):
        return folder
    dist = _installed()
    if dist is None:
        return None
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".repro-wheel-", dir=folder.parent))
    try:
        source = _editable_source(dist)
        made = _pip_wheel(source, work) if source is not None else _repack(dist, work)
        if not made:
            return None
        os.replace(work, folder)  # the folder appears whole, or not at all
    finally:
        if work.exists():
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return folder


def _installed() -> metadata.Distribution | None:
    """The installed distribution of this repro: a `.dist-info` (an `.egg-info` is a source tree's build
    leftover that happens to be on the path, not an installation)."""
    for dist in metadata.distributions(name="repro"):
        if str(getattr(dist, "_path", "")).endswith(".dist-info") and dist.version == __version__:
            return dist
    return None


def _files_digest() -> str:
    """A digest of repro's installed files (paths and bytes): a new wheel for every edit."""
    h = hashlib.sha256()
    for file in sorted(p for p in PACKAGE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(file.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()


def _editable_source(dist: metadata.Distribution) -> Path | None:
    """The source folder of an editable install (PEP 610's direct_url.json), else None."""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        return None
    if not isinstance(direct, dict) or not (direct.get("dir_info") or {}).get("editable"):
        return None
    url = str(direct.get("url", ""))
    return Path(url.removeprefix("file://")) if url.startswith("file://") else None


def _pip_wheel(source: Path, dest: Path) -> bool:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-w", str(dest), str(source)],
                          stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return proc.returncode == 0 and any(dest.glob("repro-*.whl"))


def _repack(dist: metadata.Distribution, dest: Path) -> bool:
    """Pack the installed files RECORD lists (the package and its dist-info) into a wheel again."""
    files = [f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in f.parts
             and f.name not in _NOT_PACKED]
    info = f"repro-{__version__}.dist-info"
    wheel = dest / f"repro-{__version__}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            data = Path(str(f.locate())).read_bytes()
            zf.writestr(str(f), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{f},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return bool(files)
