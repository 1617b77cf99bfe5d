"""Plan a run's chain of stages: stage presets, cache keys, labels.

A run's ``stage.init`` names where its weights start: ``base`` (the configured model), a stage preset of
``conf/stage`` (``cpt``, ``dpo_cpu``, ...: that stage's output under the *same* model and data config, from
the stage cache or trained first) or a checkpoint directory. :func:`plan_chain` composes every earlier stage
from its own preset (``stage=<init>`` + ``stage.init_overrides``) and validates all of them before any
work. A stage's cache key (:func:`stage_hash`) covers every config field that changes its weights (model,
the ``data`` fields its kind reads, stage, objective with its defaults filled in, seed), the identity of
the model it starts from and the *content* of the data it reads; labels (``cpt→dpo[simpo]``) name the chain
in tables.

Reads: :mod:`arc_lab.stage_kinds` (each kind's natural objective and data fields). Executed by
:mod:`arc_lab.run.pipeline`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from arc_lab.config import ConfigError, RunConfig, check_known_keys, to_run_config
from arc_lab.run import manifest
from arc_lab.run.build import base_model_key
from arc_lab.run.runinfo import config_hash
from arc_lab.stage_kinds import STAGE_KINDS

#: Stage/optim fields that do not change the trained weights (kept out of the stage hash).
NOT_HASHED = {"init_overrides", "log_every", "save_every", "save_every_minutes", "deepspeed", "merge"}
#: Longest chain of init stages followed before calling it cyclic.
MAX_CHAIN = 8


@dataclass
class ModelRef:
    """Where a model comes from: the configured base model, or a checkpoint directory."""

    #: identity for caches: ``base:<hash of model cfg>[:<weights digest>]``, ``stage:<hash>:<weights digest>``
    #: or ``path:<digest of the directory's files>``
    key: str
    #: for tables: ``base``, ``cpt``, ``cpt→dpo``, ...
    label: str
    #: checkpoint directory; None = load from the model config
    path: Path | None = None


# ---------------------------------------------------------------------------------------------- chain
def plan_chain(cfg: DictConfig) -> list[RunConfig]:
    """Every stage from the root (init ``base`` or a path) to ``cfg``, each validated, before any work.

    The last entry is ``cfg`` itself. Init stages are composed by Hydra from their presets
    (:func:`_init_config`).
    """
    configs = [cfg]
    plan = [to_run_config(cfg)]
    while not _is_root(plan[0].stage.init):
        if len(plan) > MAX_CHAIN:
            raise ConfigError(f"stage.init chain is longer than 8 or cyclic: {[r.stage.init for r in plan]}")
        init = plan[0].stage.init
        parent = _init_config(configs[0])
        kind = STAGE_KINDS.get(parent.stage.name)  # an unknown name fails in to_run_config below
        if kind is not None and not kind.trains:
            raise ConfigError(f"stage.init={init!r} is an {parent.stage.name} stage; it produces no weights")
        try:
            run = to_run_config(parent)
        except ConfigError as e:
            raise ConfigError(f"stage.init={init!r} (the stage this one starts from): {e}") from e
        configs.insert(0, parent)
        plan.insert(0, run)
    return plan


def _init_config(cfg: DictConfig) -> DictConfig:
    """The full config of the stage preset ``cfg.stage.init`` names (``conf/stage/<init>.yaml`` +
    ``stage.init_overrides``), with ``cfg``'s model, data, eval, logger, seed and output root.

    Its objective is the stage kind's natural one (cpt: clm, sft: sft, dpo: dpo) unless
    ``init_overrides`` picks another (``objective=simpo``).
    """
    from hydra import compose

    init, extra = cfg.stage.init, list(cfg.stage.init_overrides)
    try:
        composed = compose(config_name="config", overrides=[f"stage={init}", *extra])
        if not any(o.startswith("objective=") for o in extra):
            kind = STAGE_KINDS.get(composed.stage.name)
            natural = (kind and kind.default_objective) or composed.objective.name
            composed = compose(
                config_name="config", overrides=[f"stage={init}", f"objective={natural}", *extra]
            )
        check_known_keys(composed)  # a `+key` typo in init_overrides
    except Exception as e:  # MissingConfigException and override errors name the option
        msg = " ".join(str(e).split("\n"))
        raise ConfigError(f"stage.init={init!r} with stage.init_overrides={extra}: {msg}") from e
    out = OmegaConf.to_container(cfg, resolve=True)
    composed_c = OmegaConf.to_container(composed, resolve=True)
    out["stage"], out["objective"] = composed_c["stage"], composed_c["objective"]
    return OmegaConf.merge(OmegaConf.structured(RunConfig), out)


def _is_root(init: str) -> bool:
    return init == "base" or "/" in init or Path(init).is_dir()


def _presets() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "stage").glob("*.yaml"))


def root_ref(run: RunConfig) -> ModelRef:
    """The model the first stage of a chain starts from."""
    init = run.stage.init
    if init == "base":
        return ModelRef(key=base_model_key(run), label="base")
    path = Path(init)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"stage.init={init!r}: expected base, a stage preset ({_presets()}) or a checkpoint "
            f"directory containing config.json"
        )
    return ModelRef(key=f"path:{manifest.tree_digest(path)[:16]}", label=path.name, path=path)


# ------------------------------------------------------------------------------------------ cache keys
def stage_config_key(run: RunConfig, init_key: str) -> dict[str, Any]:
    """The config fields that determine a stage's weights, with the init model's identity."""
    stage = {k: v for k, v in dataclasses.asdict(run.stage).items() if k not in NOT_HASHED}
    stage["optim"] = {k: v for k, v in stage["optim"].items() if k not in NOT_HASHED}
    stage["init"] = init_key
    data = {k: getattr(run.data, k) for k in STAGE_KINDS[run.stage.name].data_fields}
    return {
        "model": dataclasses.asdict(run.model),
        "data": data,
        "stage": stage,
        "objective": dict(run.objective),
        "seed": run.seed,
    }


def stage_hash(run: RunConfig, init_key: str, inputs: dict[str, str]) -> str:
    """Content hash of everything that determines a stage's output weights: the config fields that matter,
    the init model's identity and the content of the data read (``inputs``, from
    :func:`arc_lab.run.build.stage_inputs`)."""
    return config_hash({**stage_config_key(run, init_key), "data_inputs": inputs})


def stage_label(run: RunConfig, parent: ModelRef) -> str:
    """``cpt``, ``cpt→dpo``, ``cpt→dpo[simpo]``: the chain a model came from."""
    name = run.stage.name
    label = name if parent.label == "base" else f"{parent.label}→{name}"
    if run.objective["name"] != STAGE_KINDS[name].default_objective:
        label += f"[{run.objective['name']}]"
    return label
