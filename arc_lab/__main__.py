"""``python -m arc_lab [group=option ...] [key=value ...]``: one Hydra run (or ``-m`` for a grid).

Composes the ``model``, ``data``, ``stage``, ``objective``, ``eval`` and ``logger`` groups (plus
``experiment`` presets), validates the result before any work, and runs the stage pipeline.

A failure that is the user's to fix (a bad override, a missing or malformed data file, a model that cannot
be found, training that diverged or collapsed under the configured hyper-parameters, a model whose scores
are not finite, a full disk) exits with status 2 and the
message, which names the file or the override key, without a Python traceback; ``HYDRA_FULL_ERROR=1``
re-raises it for the full stack trace. A run stopped by a scheduler's signal (SIGTERM, SIGUSR2) after
saving its checkpoint exits with status 3 and one line (:mod:`arc_lab.train.preempt`).
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from arc_lab.config import ConfigError, register_configs

log = logging.getLogger("arc_lab")
#: Exit status of a run stopped by a scheduler's signal after its checkpoint (2 is for user faults).
PREEMPTED_EXIT = 3
register_configs()


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions whose message says what input to fix (and that never mean a bug in arc_lab)."""
    from arc_lab.data.builders import ContaminationError
    from arc_lab.data.loaders import DataError, DataSourceError
    from arc_lab.eval.metrics import NonFiniteLogLikelihood
    from arc_lab.models import ModelLoadError
    from arc_lab.run.runinfo import DiskFull
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


def composition_message(e: BaseException) -> str | None:
    """One line for an error of Hydra's own composition (an unknown group option, a value of the wrong type,
    an override that does not parse), naming the group or key and, where Hydra knows them, the valid
    options; None for any other exception."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(e, MissingConfigException):
        msg = str(e).split("\n")[0]
        options = list(getattr(e, "options", None) or [])
        return msg + (f"; available options: {', '.join(options)}" if options else "")
    if isinstance(e, (ConfigCompositionException, OverrideParseException, OmegaConfBaseException)):
        msg = " ".join(str(e).split("\n")[0].split())
        override = getattr(e, "override", None)
        if isinstance(e, OverrideParseException) and override:
            msg = f"override {override!r} does not parse ({msg})"
        cause = e.__cause__
        if isinstance(cause, OmegaConfBaseException):
            msg += f": {str(cause).splitlines()[0]}"
            key = getattr(cause, "full_key", None)
            msg += f" (key {key})" if key else ""
        return msg
    return None


def _reraise(e: BaseException) -> None:
    raise e


def _one_line_composition_errors() -> None:
    """Make Hydra's composition errors exit 2 in one line, as every other user fault does.

    Hydra prints them over several lines and exits 1 from ``hydra._internal.utils.run_and_report`` (which
    wraps composition and the run). That function is replaced by one that prints :func:`composition_message`
    and exits 2, and hands every other exception (and everything under ``HYDRA_FULL_ERROR=1``) to Hydra's
    own handler unchanged. ``tests/test_user_errors.py`` checks it, so a Hydra release that renames the
    function fails a test instead of silently restoring the old output.
    """
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report

    def run_and_report(func):
        try:
            return func()
        except Exception as e:
            msg = composition_message(e)
            if msg is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                return original(functools.partial(_reraise, e))
            print(f"arc_lab: invalid configuration: {msg}", file=sys.stderr)
            sys.exit(2)

    hydra_utils.run_and_report = run_and_report


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Validate, then run. Returns the final dev acc_norm (the value Hydra sweepers optimise)."""
    from arc_lab import dist
    from arc_lab.run.pipeline import run_pipeline
    from arc_lab.run.plan import plan_chain
    from arc_lab.train.preempt import Preempted

    ranks = dist.scheduler_env()
    if ranks:  # a task of a multi-task SLURM/submitit job: one rank of a data-parallel world
        os.environ.update(ranks)
        log.info(
            "scheduler job: rank %s of %s, rendezvous %s:%s",
            ranks["RANK"],
            ranks["WORLD_SIZE"],
            ranks["MASTER_ADDR"],
            ranks["MASTER_PORT"],
        )
    try:
        plan = plan_chain(cfg)  # validated RunConfigs, the run's own last: nothing below reads cfg
        return run_pipeline(plan, run_dir=HydraConfig.get().runtime.output_dir)
    except user_errors() as e:
        exit_with_user_error(e)
    except Preempted as e:  # not a fault: the checkpoint is saved, a rerun resumes from it
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"arc_lab: preempted: {e}", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT)
    return None  # not reached: exit_with_user_error exits


if __name__ == "__main__":
    _one_line_composition_errors()
    main()
