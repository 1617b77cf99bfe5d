"""``python -m arc_lab [group=option ...] [key=value ...]``: one Hydra run (or ``-m`` for a grid).

Composes the ``model``, ``data``, ``stage``, ``objective``, ``eval`` and ``logger`` groups (plus
``experiment`` presets), validates the result before any work, and runs the stage pipeline.

A failure that is the user's to fix (a bad override, a missing or malformed data file, a model that cannot
be found, training that diverged or collapsed under the configured hyper-parameters, a model whose scores
are not finite, a full disk) exits with status 2 and the
message, which names the file or the override key, without a Python traceback; ``HYDRA_FULL_ERROR=1``
re-raises it for the full stack trace.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from arc_lab.config import ConfigError, register_configs

log = logging.getLogger("arc_lab")
register_configs()


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions whose message says what input to fix (and that never mean a bug in arc_lab)."""
    from arc_lab.data.builders import ContaminationError
    from arc_lab.data.loaders import DataError, DataSourceError
    from arc_lab.eval.metrics import NonFiniteLogLikelihood
    from arc_lab.models import ModelLoadError
    from arc_lab.runinfo import DiskFull
    from arc_lab.train.deepspeed_engine import DeepSpeedConfigError
    from arc_lab.train.health import TrainingDiverged  # names stage.optim.lr and the last good checkpoint

    return (
        ConfigError,
        DataError,
        DataSourceError,
        ContaminationError,
        ModelLoadError,
        DeepSpeedConfigError,
        TrainingDiverged,  # diverged or collapsed weights: the hyper-parameters are the input to fix
        NonFiniteLogLikelihood,  # a broken model's scores are refused, not reported
        DiskFull,  # names the path and what was kept
    )


def exit_with_user_error(e: Exception) -> None:
    """Print ``arc_lab: <what>: <message>`` on stderr and exit 2; re-raise under ``HYDRA_FULL_ERROR=1``."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise e
    what = "invalid configuration" if isinstance(e, ConfigError) else type(e).__name__
    print(f"arc_lab: {what}: {e}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Validate, then run. Returns the final dev acc_norm (the value Hydra sweepers optimise)."""
    from arc_lab.pipeline import run_pipeline
    from arc_lab.plan import plan_chain

    try:
        plan = plan_chain(cfg)  # validated RunConfigs, the run's own last: nothing below reads cfg
        return run_pipeline(plan, run_dir=HydraConfig.get().runtime.output_dir)
    except user_errors() as e:
        exit_with_user_error(e)


if __name__ == "__main__":
    main()
