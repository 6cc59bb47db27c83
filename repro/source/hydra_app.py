"""Hydra's own app features for `repro train`: --cfg, --resolve, --info, config groups in --help.

repro keeps its own argv (argparse), so it cannot use `@hydra.main`. This module
builds the same `Hydra` object that `hydra.main` builds (one search path: Hydra's
own configs, then the project's config folder, then search-path plugins) and asks
it, so what is printed is what a Hydra app would print. The sweep
(`repro.builder.sweep`) runs on the same object. Functions return text; the
command prints it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

from repro.errors import ConfigError
from repro.source.config import ConfigSource, composition_error, guard

INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
# Hydra's name for the task; `${hydra:job.name}` and the job log file use it.
TASK_NAME = "repro"
# Hydra 1.3's defaults (as `repro.source.config.compose` uses): no chdir into a job's folder.
VERSION_BASE = "1.3"


@contextlib.contextmanager
def hydra_app(source: ConfigSource) -> Iterator[Any]:
    """The `Hydra` object `hydra.main` would make for this config folder; cleared on exit."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    guard(source)  # bounded YAML, no search path outside repro and the project (repro.source.config_guard)
    version.setbase(VERSION_BASE)  # what `hydra.main(version_base=...)` does: jobs keep the cwd, ...
    GlobalHydra.instance().clear()
    try:
        yield Hydra.create_main_hydra2(task_name=TASK_NAME,
                                       config_search_path=create_config_search_path(str(source.config_dir)))
    finally:
        GlobalHydra.instance().clear()


def show_cfg(source: ConfigSource, overrides: list[str], cfg_type: str, package: str | None,
             resolve: bool) -> str:
    """What `app.py --cfg job|hydra|all [--package P] [--resolve]` prints, as text."""
    out = io.StringIO()
    with hydra_app(source) as hydra, hydra_errors(f"--package {package}: no such node in the composed config"), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        hydra.show_cfg(config_name=source.config_name, overrides=list(overrides), cfg_type=cfg_type,
                       package=package, resolve=resolve)
    return out.getvalue()


def show_info(source: ConfigSource, overrides: list[str], what: str) -> str:
    """What `app.py --info [what]` prints, followed by the config groups and their options."""
    import logging

    out = io.StringIO()
    with hydra_app(source) as hydra, hydra_errors(), contextlib.redirect_stdout(out):
        hydra.show_info(info=what, config_name=source.config_name, overrides=list(overrides))
        logging.getLogger().handlers.clear()  # Hydra's handler writes to `out`: detach it
    groups = _groups_text(source, overrides)
    # Hydra indents with tabs, which the CLI would print escaped (`\t`): plain spaces read the same.
    text = out.getvalue().expandtabs(4)
    return text + ("" if what not in ("all", "config") else "\nConfig groups (group=option):\n" + groups)


def help_text(source: ConfigSource, overrides: list[str]) -> str:
    """The part of a Hydra app's --help after the flags: config groups and options, then the config."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    groups = _groups_text(source, overrides)
    with hydra_app(source) as hydra, hydra_errors():
        cfg = hydra.compose_config(config_name=source.config_name, overrides=list(overrides), run_mode=RunMode.RUN)
        config = OmegaConf.to_yaml(hydra.get_sanitized_cfg(cfg, "job"))
    return ("== Configuration groups ==\nCompose your configuration from those groups (group=option)\n\n"
            f"{groups}\n== Config ==\nOverride anything in the config (foo.bar=value)\n\n{config}")


def _groups_text(source: ConfigSource, overrides: list[str]) -> str:
    """`group: option, option` for every group on the whole search path: the project's and repro's."""
    from repro.source.composed import group_options

    return "".join(f"{group}: {', '.join(options)}\n" for group, options in group_options(source, overrides).items())


@contextlib.contextmanager
def hydra_errors(on_exit: str = "Hydra stopped") -> Iterator[None]:
    """Hydra's errors become one ConfigError line; `on_exit` says why Hydra called sys.exit."""
    try:
        yield
    except SystemExit:
        raise ConfigError(f"config: {on_exit}") from None
    except ConfigError:
        raise
    except Exception as exc:  # Hydra raises many types; all mean "bad config or override"
        raise ConfigError("config: " + composition_error(exc)) from None
