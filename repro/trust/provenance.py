"""SLSA Provenance v1 for a release, as an in-toto Statement v1. No torch.

Everything in `buildDefinition` comes from repro.lock, except the git commit the
build ran at (run.json's), so two builds of the same lock at the same commit give
the same bytes there; `runDetails` comes from run.json and says which machine ran
the build and when. docs/provenance.md describes the build type.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from repro import __version__
from repro.canonical import sha256_bytes
from repro.errors import MismatchError, UserInputError
from repro.filenames import LOCK_NAME, METRICS_NAME, RUN_NAME
from repro.lock import lockfile
from repro.lock.release_folder import ReleaseFolder
from repro.lock.types import Lock
from repro.safeio import read_bytes, read_json
from repro.source.hashing import sha256_checked
from repro.trust.release import ReleaseTerms

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# Stable identifiers for repro's build type and its local builder. `.invalid` is
# reserved (RFC 6761), so these can never point at someone else's page.
BUILD_TYPE = "https://repro.invalid/build-types/train/v1"
LOCAL_BUILDER_ID = "https://repro.invalid/builders/local/v1"
_EXTRA_FILES = (LOCK_NAME, METRICS_NAME, RUN_NAME)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # what the schema accepts as a URI


def statement(lock: Lock, run: dict[str, Any] | None, byproducts: list[dict[str, Any]],
              builder_id: str = LOCAL_BUILDER_ID) -> dict[str, Any]:
    """The provenance statement for `lock`; pure, so it can be tested on any lock dict."""
    inputs, build = lock["inputs"], lock["build"]
    weights = lock["outputs"]["weights"]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": weights["path"], "digest": {"sha256": weights["hashes"]["sha256"]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"config": inputs["config"]["resolved"]},
                "internalParameters": dict(build),
                "resolvedDependencies": _dependencies(lock, _git(run)),
            },
            "runDetails": {
                "builder": {"id": builder_id, "version": {"repro": __version__}},
                "metadata": _metadata(run),
                "byproducts": byproducts,
            },
        },
    }


def _dependencies(lock: Lock, git: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Data files, the data tree, code files, the code tree and commit, repro's compiler, the toolchain.

    Tree digests are repro root digests, which are exactly in-toto's `dirHash`
    (sha256 over sorted `sha256sum` lines) of the files listed.
    """
    inputs = lock["inputs"]
    release = ReleaseTerms.from_config(inputs["config"]["resolved"])
    data, code = inputs["data"], inputs["code"]
    deps: list[dict[str, Any]] = [
        {"name": f["path"], "digest": {"sha256": f["hashes"]["sha256"]}, "annotations": {"role": "data"}}
        for f in data["files"]
    ]
    data_tree: dict[str, Any] = {
        "name": "data", "digest": {"dirHash": data["root_digest"]},
        "annotations": {"role": "data-tree", "license": release.data_license, "location": release.data_location,
                        "sample_order_sha256": data["sample_order"]["sha256"]},
    }
    if release.data_location in ("url", "dvc") and release.data_url:
        data_tree["annotations"]["data_url"] = release.data_url
        if _URI.match(release.data_url):
            data_tree["downloadLocation"] = release.data_url
    deps.append(data_tree)
    deps += [{"name": f["path"], "digest": {"sha256": f["hashes"]["sha256"]}, "annotations": {"role": "code"}}
             for f in code["files"]]
    code_digest: dict[str, str] = {"dirHash": code["root_digest"]}
    code_notes: dict[str, Any] = {"role": "code-tree", "license": release.code_license}
    if git:  # the commit is run.json's (a lock cannot name the commit that holds it)
        code_digest["gitCommit"] = git["commit"]
        code_notes["dirty"] = git["dirty"]
    deps.append({"name": "code", "digest": code_digest, "annotations": code_notes})
    toolchain = lock["toolchain"]
    repro = toolchain["repro"]
    deps.append({"name": "repro", "uri": f"pkg:pypi/repro@{repro['version']}",
                 "digest": {"dirHash": repro["root_digest"]}, "annotations": {"role": "builder-source"}})
    packages = {"python": toolchain["python"]["version"], **toolchain["distributions"]}
    for name, version in sorted(packages.items()):
        kind = "generic" if name == "python" else "pypi"
        purl = f"pkg:{kind}/{name}@{quote(version, safe='.-_~')}"  # purl: '+' in 2.13.0+cpu is %2B
        deps.append({"name": name, "uri": purl, "annotations": {"role": "environment"}})
    return deps


def _git(run: dict[str, Any] | None) -> dict[str, Any] | None:
    git = (run or {}).get("git")  # run.json may predate the field, or the build ran outside git
    return git if isinstance(git, dict) and isinstance(git.get("commit"), str) else None


def _metadata(run: dict[str, Any] | None) -> dict[str, Any]:
    """startedOn/finishedOn (RFC 3339, UTC) from run.json's finish time and duration."""
    if not run or not isinstance(run.get("finished_unix"), int):
        return {}
    finished = datetime.fromtimestamp(run["finished_unix"], tz=timezone.utc)
    started = datetime.fromtimestamp(run["finished_unix"] - float(run.get("wall_seconds") or 0), tz=timezone.utc)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {"startedOn": started.strftime(fmt), "finishedOn": finished.strftime(fmt)}


def attest(release: ReleaseFolder, builder_id: str = LOCAL_BUILDER_ID) -> dict[str, Any]:
    """Build the statement for `release`, after checking the weights against its lock."""
    out_dir = release.folder
    lock = lockfile.read(release.lock)
    weights = lock["outputs"]["weights"]
    path = out_dir / weights["path"]
    if not path.is_file():
        raise UserInputError(f"{path}: missing; provenance is about these weights")
    actual = sha256_checked(path, "weights file")
    if actual != weights["hashes"]["sha256"]:
        raise MismatchError(f"{path.name}: sha256 is {actual}, {release.lock.name} has "
                            f"{weights['hashes']['sha256']}; these are not the weights the lock describes")
    run = _read_run(out_dir / RUN_NAME)
    byproducts = []
    for name in _EXTRA_FILES:
        if os.path.lexists(out_dir / name):
            raw = read_bytes(out_dir / name, name)
            entry: dict[str, Any] = {"name": name, "digest": {"sha256": sha256_bytes(raw)}}
            if name == RUN_NAME and run:
                entry["annotations"] = run
            byproducts.append(entry)
    return statement(lock, run, byproducts, builder_id)


def _read_run(path: Path) -> dict[str, Any] | None:
    if not os.path.lexists(path):
        return None
    run, _ = read_json(path, RUN_NAME)
    return run if isinstance(run, dict) else None
