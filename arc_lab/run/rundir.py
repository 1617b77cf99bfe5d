"""A Hydra callback that refuses an unwritable run folder before Hydra tries to log into it.

Hydra creates the run folder and opens its log file before the task starts; when it cannot, the user gets
a traceback ending in ``Unable to configure handler 'file'``. :class:`RunDirCheck` (registered under
``hydra.callbacks`` in ``conf/config.yaml``) checks the folder first and exits with one line that names it
and the override to change.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def unwritable_reason(path: str | Path) -> str | None:
    """Why ``path`` (a folder, created if missing) cannot be written, or None when it can.

    Looks at ``path`` or, when it does not exist yet, its nearest existing ancestor (where it would be
    created): that must be a directory this process may write into.
    """
    p = Path(path).absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a directory"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


def exit_if_unwritable(path: str | Path, key: str) -> None:
    """Print one line naming ``path`` and the override ``key`` and exit 2 when ``path`` is not writable."""
    reason = unwritable_reason(path)
    if reason is not None:
        print(
            f"arc_lab: cannot write the run folder {path} ({key}): {reason}; choose a writable folder with "
            f"{key}=<dir> (or output_root=<dir>, which the default {key} is under)",
            file=sys.stderr,
        )
        sys.exit(2)


class RunDirCheck(Callback):
    """Check ``hydra.run.dir`` (single run) or ``hydra.sweep.dir`` (multirun) before Hydra uses it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_if_unwritable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_if_unwritable(config.hydra.sweep.dir, "hydra.sweep.dir")
