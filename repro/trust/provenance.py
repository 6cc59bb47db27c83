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
from typing import NotRequired, TypedDict
from urllib.parse import quote

from repro import __version__
from repro.canonical import sha256_bytes
from repro.errors import MismatchError, UserInputError
from repro.filenames import LOCK_NAME, METRICS_NAME, RUN_NAME
from repro.lock import lockfile
from repro.lock.release_folder import ReleaseFolder
from repro.lock.types import Build, JsonObject, Lock
from repro.records import GitState, git_record
from repro.safeio import read_bytes, read_json
from repro.source.hashfile import sha256_checked
from repro.trust.release import ReleaseTerms

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# Stable identifiers for repro's build type and its local builder. `.invalid` is
# reserved (RFC 6761), so these can never point at someone else's page.
BUILD_TYPE = "https://repro.invalid/build-types/train/v1"
LOCAL_BUILDER_ID = "https://repro.invalid/builders/local/v1"
_EXTRA_FILES = (LOCK_NAME, METRICS_NAME, RUN_NAME)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # what the schema accepts as a URI


# The statement as types (docs/provenance.schema.json): in-toto's ResourceDescriptor and SLSA's predicate.
class Resource(TypedDict):
    name: str
    digest: NotRequired[dict[str, str]]
    uri: NotRequired[str]
    downloadLocation: NotRequired[str]
    annotations: NotRequired[JsonObject]  # in-toto leaves them open: a role, a licence, run.json itself


class Builder(TypedDict):
    id: str
    version: dict[str, str]


class RunDetails(TypedDict):
    builder: Builder
    metadata: dict[str, str]  # startedOn, finishedOn
    byproducts: list[Resource]


class BuildDefinition(TypedDict):
    buildType: str
    externalParameters: JsonObject  # {"config": the resolved config}
    internalParameters: Build
    resolvedDependencies: list[Resource]


class Predicate(TypedDict):
    buildDefinition: BuildDefinition
    runDetails: RunDetails


class Statement(TypedDict):
    _type: str
    subject: list[Resource]
    predicateType: str
    predicate: Predicate


def statement(lock: Lock, run: JsonObject | None, byproducts: list[Resource],
              builder_id: str = LOCAL_BUILDER_ID) -> Statement:
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
                "internalParameters": build.copy(),
                "resolvedDependencies": _dependencies(lock, git_record(run)),
            },
            "runDetails": {
                "builder": {"id": builder_id, "version": {"repro": __version__}},
                "metadata": _metadata(run),
                "byproducts": byproducts,
            },
        },
    }


def _dependencies(lock: Lock, git: GitState | None) -> list[Resource]:
    """Data files, the data tree, code files, the code tree and commit, repro's compiler, the toolchain.

    Tree digests are repro root digests, which are exactly in-toto's `dirHash`
    (sha256 over sorted `sha256sum` lines) of the files listed.
    """
    inputs = lock["inputs"]
    release = ReleaseTerms.from_config(inputs["config"]["resolved"])
    data, code = inputs["data"], inputs["code"]
    deps: list[Resource] = [
        {"name": f["path"], "digest": {"sha256": f["hashes"]["sha256"]}, "annotations": {"role": "data"}}
        for f in data["files"]
    ]
    data_notes: JsonObject = {"role": "data-tree", "license": release.data_license,
                              "location": release.data_location, "sample_order_sha256": data["sample_order"]["sha256"]}
    data_tree: Resource = {"name": "data", "digest": {"dirHash": data["root_digest"]}, "annotations": data_notes}
    if release.data_location in ("url", "dvc") and release.data_url:
        data_notes["data_url"] = release.data_url
        if _URI.match(release.data_url):
            data_tree["downloadLocation"] = release.data_url
    deps.append(data_tree)
    deps += [{"name": f["path"], "digest": {"sha256": f["hashes"]["sha256"]}, "annotations": {"role": "code"}}
             for f in code["files"]]
    code_digest: dict[str, str] = {"dirHash": code["root_digest"]}
    code_notes: JsonObject = {"role": "code-tree", "license": release.code_license}
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


def _metadata(run: JsonObject | None) -> dict[str, str]:
    """startedOn/finishedOn (RFC 3339, UTC) from run.json's finish time and duration."""
    finished_unix = None if not run else run.get("finished_unix")
    if not run or not isinstance(finished_unix, int):
        return {}
    wall = run.get("wall_seconds") or 0
    seconds = float(wall) if isinstance(wall, (int, float, str)) else 0.0
    finished = datetime.fromtimestamp(finished_unix, tz=timezone.utc)
    started = datetime.fromtimestamp(finished_unix - seconds, tz=timezone.utc)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {"startedOn": started.strftime(fmt), "finishedOn": finished.strftime(fmt)}


def attest(release: ReleaseFolder, builder_id: str = LOCAL_BUILDER_ID) -> Statement:
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
    byproducts: list[Resource] = []
    for name in _EXTRA_FILES:
        if os.path.lexists(out_dir / name):
            raw = read_bytes(out_dir / name, name)
            entry: Resource = {"name": name, "digest": {"sha256": sha256_bytes(raw)}}
            if name == RUN_NAME and run:
                entry["annotations"] = run
            byproducts.append(entry)
    return statement(lock, run, byproducts, builder_id)


def _read_run(path: Path) -> JsonObject | None:
    if not os.path.lexists(path):
        return None
    run, _ = read_json(path, RUN_NAME)
    return run if isinstance(run, dict) else None
