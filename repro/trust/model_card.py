"""The model card: README.md with Hugging Face front matter, a loss plot and rebuild commands. No torch.

Everything on the card is derived from the lock (plus metrics.jsonl for the plot,
run.json's git commit, and the audit's view of the folder), so two builds of one
lock at one commit get the same card bytes. The rebuild commands use `rebuild.yaml`, the lock's resolved config
written back as a Hydra config, so they work with plain `repro train`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from repro.canonical import StagedFiles
from repro.errors import UserInputError
from repro.filenames import CARD_NAME, CHECK_NAME, METRICS_NAME, PLOT_NAME, REBUILD_NAME, RUN_NAME
from repro.lock import lockfile
from repro.lock.release_folder import ReleaseFolder
from repro.lock.types import Inputs, Lock, StageRecord
from repro.records import GitState, JsonObject, JsonValue, dig, git_record
from repro.safeio import loads, read_bytes, read_json
from repro.trust import markdown as md
from repro.trust.licenses import hf_license
from repro.trust.release_audit import audit_path, licence_text
from repro.trust.verdicts import AuditReport

REBUILD_OUT = "rebuilt"


@dataclass(frozen=True)
class CardReport:
    card: Path
    plot: Path
    rebuild_config: Path
    audit: AuditReport

    def to_json(self) -> JsonObject:
        return {"card": str(self.card), "plot": str(self.plot), "rebuild_config": str(self.rebuild_config),
                "audit": self.audit.to_json()}


def write_card(release: ReleaseFolder) -> CardReport:
    """Write README.md, loss.png and rebuild.yaml into the release's folder: all three, or (on any error)
    none of them. Everything is made first; the files are renamed into place together."""
    out_dir = release.folder
    lock = lockfile.read(release.lock)
    steps, losses = loss_curve(out_dir, lock)
    plot = plot_png(steps, losses)
    rebuild = rebuild_yaml(lock)
    report = audit_path(release.lock, assume_card=True)
    text = render(lock, report, build_commit(out_dir), read_check(out_dir))
    with StagedFiles() as staged:
        staged.add(out_dir / PLOT_NAME, plot)
        staged.add(out_dir / REBUILD_NAME, rebuild)
        staged.add(out_dir / CARD_NAME, text.encode("utf-8"))
    return CardReport(out_dir / CARD_NAME, out_dir / PLOT_NAME, out_dir / REBUILD_NAME, report)


class CheckRow(TypedDict):
    """One variation of check.json's `axes`, as the card shows it: read from the folder, so any JSON."""

    axis: JsonValue
    variation: JsonValue
    result: JsonValue
    promised: JsonValue
    first_step: JsonValue
    detail: JsonValue


class CheckSummary(TypedDict):
    """check.json (repro.check.check_report), as far as the card reads it."""

    steps: NotRequired[JsonValue]
    profile: NotRequired[JsonValue]
    axes: list[CheckRow]


def read_check(out_dir: Path) -> CheckSummary | None:
    """The latest `repro check` report in the folder (check.json), if present and well formed."""
    try:
        report = json.loads((out_dir / CHECK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rows = report.get("axes") if isinstance(report, dict) else None
    keys = ("axis", "variation", "result", "promised", "first_step", "detail")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in keys) for r in rows):
        return None
    return cast(CheckSummary, dict(report))  # every row has every key the card reads: checked above


def check_section(report: CheckSummary) -> list[str]:
    """The card's table of the latest `repro check`: one row per variation."""
    lines = ["## Reproducibility check (`repro check`)", "",
             f"Latest run: {md.text(report.get('steps'))} steps per build, profile "
             f"{md.code(report.get('profile'))}; every variation is a fresh `repro train` compared with a baseline "
             "in a clean shell.", "",
             "| axis | variation | result | promised | first step | where |", "|---|---|---|---|---|---|"]
    for r in report["axes"]:
        step = "-" if r["first_step"] is None else md.text(r["first_step"])
        lines.append(f"| {md.text(r['axis'])} | {md.text(r['variation'])} | {md.text(r['result'])} "
                     f"| {'yes' if r['promised'] else 'no'} | {step} | {md.text(r['detail'])} |")
    return [*lines, ""]


def build_commit(out_dir: Path) -> GitState | None:
    """The commit the build ran at, from run.json (the lock cannot hold it)."""
    path = out_dir / RUN_NAME
    if not os.path.lexists(path):
        return None
    run, _ = read_json(path, RUN_NAME)  # a link, FIFO or device is refused, never read
    return git_record(run)


def loss_curve(out_dir: Path, lock: Lock) -> tuple[list[int], list[float]]:
    """(step, loss) pairs from metrics.jsonl, or from the lock's logged trajectory without it."""
    path = out_dir / METRICS_NAME
    if os.path.lexists(path):
        text = read_bytes(path, "metrics log").decode("utf-8", "replace")
        try:
            rows = [loads(line.encode(), str(path)) for line in text.splitlines() if line.strip()]
            pairs = [(int(r["step"]), float(r["loss"])) for r in rows if "loss" in r]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserInputError(f"{path}: expected JSON lines with 'step' and 'loss' ({exc})") from None
    else:
        traj = lock["outputs"]["loss_trajectory"]
        logged = lockfile.logged_steps(traj["steps"], traj["every"])
        pairs = list(zip(logged, traj["losses"], strict=True))
    if not pairs:
        raise UserInputError(f"{path}: no losses to plot")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_png(steps: list[int], losses: list[float]) -> bytes:
    """The loss curve as PNG bytes; no timestamp or software string, so the bytes are stable."""
    try:
        import matplotlib
    except ImportError:
        raise UserInputError("the loss plot needs matplotlib: pip install 'repro[trust]'") from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(steps, losses, marker="o" if len(steps) <= 50 else None, linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss (from metrics.jsonl)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def rebuild_yaml(lock: Lock) -> bytes:
    """The lock's resolved config as a Hydra primary config (no defaults list)."""
    config = {**lock["inputs"]["config"]["resolved"], "out_dir": REBUILD_OUT}
    header = (
        "# Written by `repro card` from repro.lock: the fully resolved training config.\n"
        "# Rebuild from the project root (see README.md):\n"
        f"#   repro train --config-dir RELEASE --config-name {REBUILD_NAME[:-5]} --root .\n"
    )
    return (header + _yaml(config)).encode()


def front_matter(lock: Lock, report: AuditReport) -> str:
    license_id, license_name = hf_license(report.release.weights_license)
    meta: dict[str, str | list[str]] = {"license": license_id,
                                        "tags": ["repro", "reproducible", "safetensors", "pytorch"]}
    if license_name:
        meta["license_name"] = license_name
    metrics = sorted(k for k in lock["outputs"]["metrics"] if k != "loss")
    if metrics:
        meta["metrics"] = metrics
    return "---\n" + _yaml(meta) + "---\n"


def render(lock: Lock, report: AuditReport, git: GitState | None = None,
           check: CheckSummary | None = None) -> str:
    """The card's Markdown; `git` is run.json's commit record, when the build ran in a checkout;
    `check` the latest `repro check` report from the folder. Every value from the lock or the folder
    goes through `repro.trust.markdown`, so it reads as text and nothing else."""
    out = [front_matter(lock, report), *_summary(lock, report), *_openness(report), *_data(lock, report),
           *_chain(lock["inputs"].get("stages", [])), *_environment(lock),
           "", "## Loss curve", "", f"![Training loss by step]({PLOT_NAME})", ""]
    out += check_section(check) if check else []
    out += _commands(lock, lock["outputs"]["weights"]["hashes"]["sha256"], report.lock_sha256, git)
    return "\n".join(out) + "\n"


def _summary(lock: Lock, report: AuditReport) -> list[str]:
    """The title and the table of headline facts."""
    outputs, rel = lock["outputs"], report.release
    metrics = ", ".join(f"{md.text(k)} {v:.4f}" for k, v in sorted(outputs["metrics"].items())) or "none"
    loss = outputs["final_loss"]
    licences = ", ".join(f"{what} {md.text(licence_text(value))}" for what, value in
                         (("weights", rel.weights_license), ("code", rel.code_license), ("data", rel.data_license)))
    return [f"# {md.text(title(lock['inputs']['config']['resolved'], lock['inputs'], rel.name))}", "",
            "Weights built by repro: anyone can rebuild them bit for bit from the data, "
            "code, config and pinned environment recorded in `repro.lock`.", "",
            "| | |", "|---|---|",
            f"| weights | `model.safetensors`, sha256 {md.code(outputs['weights']['hashes']['sha256'], cell=True)} |",
            f"| lock | `repro.lock`, sha256 {md.code(report.lock_sha256, cell=True)} |",
            f"| held-out metrics | {metrics} |",
            f"| final training loss | {'n/a' if loss is None else f'{loss:.6g}'} after "
            f"{md.text(outputs['loss_trajectory']['steps'])} steps |",
            f"| licence | {licences} |", ""]


def _openness(report: AuditReport) -> list[str]:
    out = ["## Openness (`repro audit`)", "", "| framework | verdict | why |", "|---|---|---|"]
    out += [f"| {md.text(v.framework)} | **{md.text(v.verdict)}** | {'; '.join(md.text(r) for r in v.reasons)} |"
            for v in report.verdicts()]
    return out + ["", "Criteria: `docs/openness.md` in the repro repository. The Reproducible mark "
                  "needs a verification record from `repro verify` for this exact lock.", ""]


def _data(lock: Lock, report: AuditReport) -> list[str]:
    """The data card: what the data is, where it is, and every file's digest."""
    inputs, rel = lock["inputs"], report.release
    order = inputs["data"]["sample_order"]
    batch = dig(inputs["config"]["resolved"], "trainer", "batch_size")
    steps = lock["outputs"]["loss_trajectory"]["steps"]
    # The count is of draws from the training split (steps x batch), not of the dataset's rows.
    draws = f"{order['count']} samples drawn" + (f" ({steps} steps of {batch})" if isinstance(batch, int) else "")
    out = ["## Training data", "",
           md.text(rel.data_description) if rel.data_description else
           "_No description given (release.data\\_description)._", "",
           f"- licence: {md.text(licence_text(rel.data_license))}",
           f"- location: {md.text(rel.data_location)}" + (f" ({md.text(rel.data_url)})" if rel.data_url else ""),
           f"- tree digest (in-toto dirHash): {md.code(inputs['data']['root_digest'])}",
           f"- sample order: sha256 {md.code(order['sha256'])} over {md.text(draws)}",
           "", "| file | bytes | sha256 |", "|---|---|---|"]
    return out + [f"| {md.code(f['path'], cell=True)} | {f['size']} | {md.code(f['hashes']['sha256'], cell=True)} |"
                  for f in inputs["data"]["files"]]


def _environment(lock: Lock) -> list[str]:
    """The resolved config, then the pins and the toolchain."""
    inputs, toolchain = lock["inputs"], lock["toolchain"]
    build: Mapping[str, object] = lock["build"]  # every pin, by name
    python = f"{toolchain['python']['implementation']} {toolchain['python']['version']}"
    out = ["", "## Training config", "", f"Resolved config, sha256 {md.code(inputs['config']['sha256'])} "
           f"(also in `{REBUILD_NAME}`):", "", *md.fenced("\n".join(md.yaml_lines(inputs["config"]["resolved"])),
                                                          "yaml"),
           "", "## Pins and environment", "", "| pin | value |", "|---|---|"]
    out += [f"| {md.text(k)} | {md.code(json.dumps(build[k]), cell=True)} |" for k in sorted(build)
            if k not in ("env", "flags")]
    out += [f"| env {md.text(k)} | {md.code(v, cell=True)} |" for k, v in sorted(lock["build"]["env"].items())]
    out += [f"| python | {md.code(python, cell=True)} |",
            f"| repro | {md.code(toolchain['repro']['version'], cell=True)} (compiler "
            f"{md.code(toolchain['repro']['root_digest'][:12] + '…', cell=True)}) |"]
    return out + [f"| package {md.text(k)} | {md.code(v, cell=True)} |"
                  for k, v in sorted(toolchain["distributions"].items())]


def _chain(records: Sequence[StageRecord]) -> list[str]:
    """The stages that made the training data, upstream first, from their records in the lock."""
    if not records:
        return []
    from repro.lock.stagerecord import chain_line

    out = ["", "## Build chain", "", f"{md.code(chain_line(records))}. Every intermediate above was made by a stage "
           "whose record (inputs, code, params, pins and toolchain, hashed before it ran) is in the lock; "
           "`repro verify --from-source repro.lock` rebuilds them from the primary sources alone.", "",
           "| stage | code | reads | writes |", "|---|---|---|---|"]
    for r in records:
        n = len(r["inputs"]["files"])
        reads = f"{n} file{'' if n == 1 else 's'}, root {md.code(r['inputs']['root_digest'][:16] + '…', True)}"
        writes = ", ".join(f"{md.code(f['path'], True)} ({md.code(f['hashes']['sha256'][:12] + '…', True)})"
                           for f in r["outputs"]["files"])
        code = ", ".join(md.code(f["path"], True) for f in r["code"]["files"]) or md.code(r["declared"]["target"],
                                                                                            True)
        out.append(f"| {md.text(r['stage'])} | {code} | {reads} | {writes} |")
    return out


def _commands(lock: Lock, weights_sha: str, lock_sha: str, git: GitState | None) -> list[str]:
    where = f"a checkout of commit {md.code(git['commit'])}" if git else "the project folder"
    # The shell block quotes only digests the schema held to hex; nothing else from the lock reaches it.
    return [
        "## Rebuild", "",
        f"Run from the project root ({where}, code tree {md.code(lock['inputs']['code']['root_digest'])}), with "
        "the data files above in place (`dvc pull` when they live on a DVC remote). `RELEASE` is the folder holding "
        "this card. The rebuilt weights and lock must match these digests byte for byte:", "",
        "```sh",
        f"repro train --quiet --config-dir \"$RELEASE\" --config-name {REBUILD_NAME[:-5]} --root .",
        f"echo \"{weights_sha}  {REBUILD_OUT}/model.safetensors\" | sha256sum --check",
        f"echo \"{lock_sha}  {REBUILD_OUT}/repro.lock\" | sha256sum --check",
        "```", "",
        "## Verify", "",
        "Check the publisher's signature over this folder, then let repro rebuild and compare every digest:", "",
        "```sh",
        "repro verify-signature \"$RELEASE\" --public-key PUBLISHER.pem",
        "repro verify \"$RELEASE/repro.lock\"",
        *(["repro verify --from-source \"$RELEASE/repro.lock\"   # every stage too, from the primary sources"]
          if lock["inputs"].get("stages") else []),
        "```",
    ]


def _yaml(obj: Any) -> str:
    """Block-style YAML with sorted keys, so the same dict always gives the same text."""
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

    text: str = yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, allow_unicode=True)
    return text


def title(resolved: JsonObject, inputs: Inputs, name: str | None = None) -> str:
    """`proj: TinyNet`: the project's name and the model's class.

    The project's name is `release.name` when set, else the top-level package of the
    model's `_target_` when it is the project's own code (the lock lists its files),
    else the folder of the first data file (unless that is just `data`).
    """
    target = str(dig(resolved, "model", "_target_") or "model")
    model = target.rsplit(".", 1)[-1]
    top = target.split(".", 1)[0]
    code = [f["path"] for f in inputs["code"]["files"]]
    project = name or (top if any(p.startswith(f"{top}/") or p == f"{top}.py" for p in code) else None)
    if project is None:
        files = inputs["data"]["files"]
        folder = Path(files[0]["path"]).parent.name if files else ""
        project = folder if folder not in ("", ".", "data") else None
    return f"{project}: {model}" if project else model
