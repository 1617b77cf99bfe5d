"""``python -m arc_lab [group=option ...] [key=value ...]``: one Hydra run (or ``-m`` for a grid).

Composes the ``model``, ``data``, ``stage``, ``objective``, ``eval`` and ``logger`` groups (plus
``experiment`` presets), validates the result before any work, and runs the stage pipeline.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from arc_lab.config import ConfigError, register_configs, to_run_config

log = logging.getLogger("arc_lab")
register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Validate, then run. Returns the final dev acc_norm (the value Hydra sweepers optimise)."""
    from arc_lab.pipeline import plan_chain, run_pipeline

    try:
        run = to_run_config(cfg)
        plan = plan_chain(cfg)
    except ConfigError as e:
        print(f"arc_lab: invalid configuration: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        return run_pipeline(run, plan, run_dir=HydraConfig.get().runtime.output_dir)
    except ConfigError as e:
        _fail(e, f"invalid configuration: {e}", 2)
    except run_errors() as e:
        _fail(e, str(e), 1)


def run_errors() -> tuple[type[Exception], ...]:
    """Faults found while running that are the input's or the machine's, not arc_lab's: bad data, a training
    run that diverged or collapsed, a broken model's scores, a full disk. Reported as one line."""
    from arc_lab.data.builders import ContaminationError
    from arc_lab.data.loaders import DataError, DataSourceError
    from arc_lab.eval.metrics import NonFiniteLogLikelihood
    from arc_lab.models import ModelLoadError
    from arc_lab.runinfo import DiskFull
    from arc_lab.train.health import TrainingDiverged

    return (
        DataError,
        DataSourceError,
        ContaminationError,
        ModelLoadError,
        TrainingDiverged,
        NonFiniteLogLikelihood,
        DiskFull,
    )


def _fail(error: Exception, message: str, code: int) -> None:
    """Print ``message`` as one ``arc_lab:`` line and exit with ``code`` (``HYDRA_FULL_ERROR=1``: re-raise)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"arc_lab: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
