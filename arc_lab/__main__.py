"""``python -m arc_lab [group=option ...] [key=value ...]``: one Hydra run (or ``-m`` for a grid).

Composes the ``model``, ``data``, ``stage``, ``objective``, ``eval`` and ``logger`` groups (plus
``experiment`` presets), validates the result before any work, and runs the stage pipeline.
"""

from __future__ import annotations

import logging
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
    return run_pipeline(run, plan, run_dir=HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
