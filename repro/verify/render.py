"""verify's report for people: what was checked, then differences grouped by section, notes, hints.

`repro verify` prints these lines (`--json` prints `VerifyReport.to_json` instead);
the verdict line of a mismatch is also the envelope's `error`.
"""

from __future__ import annotations

from repro.verify.report import Rebuild, VerifyReport


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def mismatch_line(report: VerifyReport) -> str:
    """The verdict line of a mismatch: the report's, and --json's `error`."""
    if report.toolchain_caused:
        bits, drift = _n(len(report.differences), "difference"), _n(len(report.toolchain_drift), "note")
        return (f"TOOLCHAIN MISMATCH: the source matches, the bits do not ({bits}), and the toolchain "
                f"differs ({drift} above): the likely cause")
    return f"MISMATCH: {_n(len(report.differences), 'difference')} from the lock"


def render(report: VerifyReport) -> list[str]:
    """The human report: what was checked, then differences grouped by section, notes, hints."""
    from repro.lock.lockdiff import render as render_diffs

    lines = [f"lockfile   {report.lockfile}", f"root       {report.root or '-'}  ({report.root_source})",
             *_checked(report)]
    if report.rebuild:
        lines += _rebuild(report.rebuild)
    if report.notes:
        lines.append("notes (not a mismatch):")
        lines += ["  " + d.line() for d in report.notes]
    if report.identical:
        what = {"inputs-only": "inputs match the lock", "from-source": "rebuilt from source, every stage and "
                "the weights bit-identical to the lock",
                "weights-only": "the weights are the ones the lock names (size and sha256); the "
                "source was not checked: run this in the project, or pass --root DIR"}.get(
                    report.mode, "bit-identical to the lock")
        lines.append(f"OK: {what}")
        return lines + _record(report)
    lines.append(mismatch_line(report))
    lines += render_diffs(report.differences)
    lines += [f"hint: {h}" for h in report.hints]
    return lines + _record(report)


def _record(report: VerifyReport) -> list[str]:
    """The last line, when a rebuild left its record: where it went, and who reads it."""
    rec = report.record
    if not rec:
        return []
    if not rec["written"]:
        return [f"record     not written: {rec['path']}: {rec['error']}"]
    signed = "signed " if rec.get("signed") else ""
    return [f"record     wrote the {signed}verification record {rec['path']} beside the lock, for `repro audit` "
            "(--no-record skips it)"]


def _checked(report: VerifyReport) -> list[str]:
    """What was checked before any rebuild: the primary sources, the inputs, each stage, a weights file."""
    c, lines = report.checked, []
    if "primary_sources" in c:
        lines.append(f"sources    {_n(c['primary_sources'], 'primary source file')} copied (no stage made them)")
    if "data_files" in c:
        lines.append(f"inputs     {_n(c['data_files'], 'data file')} ({c['data_bytes']} bytes), "
                     f"{_n(c['code_files'], 'code file')}, {_n(c['compiler_files'], 'compiler module')}, "
                     f"config sha256 {c['config_sha256'][:12]}…")
    for st in report.stages:
        state = "identical to its record" if st["identical"] else (
            f"DIFFERS from its record (first at {st['first_differing_output']})" if st["first_differing_output"]
            else "DIFFERS from its record")
        lines.append(f"stage      {st['stage']}: rerun from source in {st['seconds']:.1f} s, {state}")
    if c.get("weights_file"):
        bad = any(d.kind == "weights" and d.name == c["weights_file"] for d in report.differences)
        lines.append(f"weights    {c['weights_file']}: {'DIFFERS from' if bad else 'identical to'} the lock")
    return lines


def _rebuild(rb: Rebuild) -> list[str]:
    """The rebuild: how long, where, its weights, the localized op, the recreated toolchain, the sandbox."""
    if not rb["performed"]:
        return [f"rebuild    {rb['reason']}"]
    where = f", kept in {rb['work_dir']}" if rb["work_dir"] else ""
    lines = [f"rebuild    {rb['seconds']:.1f} s in a fresh process under the lock's pins{where}; "
             f"weights sha256 {rb['weights_sha256'][:12]}…"]
    loc = rb.get("localized")
    if loc:
        lines.append(f"localized  {loc['environment']}: {loc.get('line') or loc.get('error')}"
                     if loc.get("environment") else f"localized  {loc.get('error')}")
    env = rb.get("toolchain") or {}
    if env.get("mode") == "recreate":
        how = "reused from the cache" if env["cached"] else f"installed with {env['installer']}"
        lines.append(f"toolchain  recreated at {env['path']} ({how}, {env['seconds']:.1f} s)")
    if rb.get("sandbox"):
        lines.append(f"sandbox    {rb['sandbox']['description']}")
    return lines
