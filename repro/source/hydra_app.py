"""Hydra's own app features for `repro train`: --cfg, --resolve, --info, config groups in --help.

repro keeps its own argv (argparse), so it cannot use `@hydra.main`. These
functions ask the same `Hydra` object that `hydra.main` builds
(`repro.source.hydra_main`), so what is printed is what a Hydra app would print.
Functions return text; the command prints it.
"""

from __future__ import annotations

import contextlib
import io

from repro.source.composed import group_options
from repro.source.config import ConfigSource
from repro.source.hydra_main import hydra_app, hydra_errors

INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


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
    return "".join(f"{group}: {', '.join(options)}\n" for group, options in group_options(source, overrides).items())
