"""The `Hydra` object that `@hydra.main` builds, for a command that keeps its own argv. No torch.

repro parses its own arguments (argparse), so it cannot use `@hydra.main`. This
module builds the same object (one search path: Hydra's own configs, then the
project's config folder, then search-path plugins). `repro train --cfg/--info/--help`
(`repro.source.hydra_app`), the composed files (`repro.source.composed`) and the
sweep (`repro.builder.sweep`) all ask it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from repro.errors import ConfigError
from repro.source.config import ConfigSource, composition_error, guard

# Hydra's name for the task; `${hydra:job.name}` and the job log file use it.
TASK_NAME = "repro"
# Hydra 1.3's defaults (`repro.source.compose` uses them too): no chdir into a job's folder.
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
