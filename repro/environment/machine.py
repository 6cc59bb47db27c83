"""What this machine is: usable cores, CPU flags and model. Each source is read in one place. No torch.

`/proc/cpuinfo` is parsed here only, and the CPU affinity is read here only, so
the pins (`threads: auto`), the hash pool's size and run.json cannot disagree
about the machine they ran on.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_cores() -> int:
    """Cores this process may run on (affinity-aware), for `threads: auto` and worker pools."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpuinfo_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo (or of the given text); {} if unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of this machine (or of the given /proc/cpuinfo text)."""
    fields = cpuinfo_fields(cpuinfo)
    return set(fields.get("flags", fields.get("Features", "")).split())


def cpu_identity(cpuinfo: str | None = None) -> dict[str, str]:
    """Vendor, family and model of this CPU (or of the given /proc/cpuinfo text): what MKL dispatches on."""
    fields = cpuinfo_fields(cpuinfo)
    return {"vendor": fields.get("vendor_id", platform.machine()), "family": fields.get("cpu family", ""),
            "model": fields.get("model", "")}


def cpu_model() -> str:
    """The CPU's model name, for run.json (never for the lock)."""
    return cpuinfo_fields().get("model name") or platform.processor()
