"""Compose the Hydra config once: resolve every interpolation, then check every key. No torch.

Hydra/OmegaConf stops here: the rest of repro sees a plain, fully resolved dict
(what the lock records) and the typed views `repro.source.config` builds from it.
The keys are checked against repro's schema (`repro.source.schema`), and an
unknown one is named by the config file that sets it (`repro.source.composed`).
"""

from __future__ import annotations

from typing import Any

from repro.errors import ConfigError
from repro.source import schema
from repro.source.composed import composed_files
from repro.source.config import ConfigSource, composition_error, guard
from repro.source.hydra_main import TASK_NAME, VERSION_BASE


def compose(source: ConfigSource, overrides: list[str]) -> dict[str, Any]:
    """Compose with Hydra, resolve every interpolation and check the keys (repro.source.schema);
    return a plain dict."""
    return compose_with_raw(source, overrides)[0]


def compose_with_raw(source: ConfigSource, overrides: list[str]) -> tuple[dict[str, Any], Any]:
    """`compose`, plus the same config unresolved (what its interpolations read)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    guard(source)
    try:
        with initialize_config_dir(config_dir=str(source.config_dir), version_base=VERSION_BASE, job_name=TASK_NAME):
            cfg = hydra_compose(config_name=source.config_name, overrides=list(overrides))
        raw = OmegaConf.to_container(cfg, resolve=False)
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as exc:  # Hydra raises many types; all mean "bad config"
        raise ConfigError("config: " + composition_error(exc)) from None
    if not isinstance(resolved, dict):
        raise ConfigError(f"{source.config_name}.yaml: expected a mapping at the top level")
    out = {str(k): v for k, v in resolved.items()}
    schema.check(out, raw, lambda: composed_files(source, list(overrides)), source.root)
    return out, raw
