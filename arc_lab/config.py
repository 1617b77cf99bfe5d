"""Typed schemas of every config group, registered in Hydra's ConfigStore.

YAML files under ``conf/`` are presets that only set values; these dataclasses say which fields exist,
their types and defaults, and check cross-field rules in ``__post_init__`` (which Hydra 1.3 runs only
through ``OmegaConf.to_object``: :func:`to_run_config` is the one place that converts). The objective
group's schema is generated from each loss class's constructor signature, so a new objective needs no
edit here.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STAGES = ("cpt", "sft", "dpo", "eval")
#: Which objective input kinds each stage trains on (see arc_lab.objectives.base.InputKind).
STAGE_INPUTS = {"cpt": ("packed",), "sft": ("answer",), "dpo": ("pair", "list"), "eval": ()}


class ConfigError(ValueError):
    """A composed config is invalid; the message names the override to fix."""


def _check_choice(key: str, value: Any, allowed: tuple | list) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: expected one of {list(allowed)}")


@dataclass
class ModelConfig:
    """Which network and tokenizer to load (see arc_lab.models.load_model)."""

    name: str = MISSING
    #: gguf (shipped GGUF, cached as safetensors) | pretrained (local dir or Hub id) | random (tiny, tests)
    source: str = "gguf"
    #: local directory or Hub id, for source=pretrained
    path: str = ""
    gguf_package: str = ""
    gguf_file: str = ""
    #: llama | mistral, for source=random
    arch: str = "llama"
    #: size of a random model: hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size,
    #: max_position_embeddings
    tiny: dict[str, int] = field(default_factory=dict)
    #: tokenizer location; empty = the model's own
    tokenizer: str = ""
    #: force BOS on/off; null keeps the tokenizer default (what lm-eval 0.4.13 does)
    add_bos: bool | None = None
    #: weight dtype when loading: float32 | bfloat16 | float16
    dtype: str = "float32"
    #: sdpa | eager | flash_attention_2; null = transformers default
    attn_implementation: str | None = None
    #: initialisation seed for source=random
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("model.source", self.source, ("gguf", "pretrained", "random"))
        _check_choice("model.dtype", self.dtype, ("float32", "bfloat16", "float16"))
        if self.source == "pretrained" and not self.path:
            raise ConfigError(
                "model.path is empty: model.source=pretrained needs a local directory or Hub id"
            )
        if self.source == "gguf" and not (self.gguf_package and self.gguf_file):
            raise ConfigError("model.source=gguf needs model.gguf_package and model.gguf_file")


@dataclass
class DataConfig:
    """Where questions and prose come from, and what training data a stage builds from them."""

    name: str = MISSING
    #: local directory laid out like ../shared/data; null = $ARC_LAB_DATA_DIR
    data_dir: str | None = None
    #: read the Hugging Face Hub when no local directory is set
    hub: bool = False
    #: prose for CPT: builtin_prose | sciq_support | camel_biology | camel_chemistry | camel_physics
    cpt_sources: list[str] = field(default_factory=lambda: ["builtin_prose"])
    #: multiple-choice datasets whose *train* split builds SFT examples, pairs and lists
    train_sources: list[str] = field(default_factory=lambda: ["builtin"])
    #: cap on training questions per source (null = all), applied after a seeded shuffle
    max_items_per_source: int | None = None
    #: cap on CPT documents (null = all)
    max_cpt_texts: int | None = None
    #: training questions equal to an ARC-Challenge test question (after normalisation): drop (remove them,
    #: count logged, ids in the run folder's data.json) | refuse (fail) | off (no check; never for reported
    #: numbers)
    decontaminate: str = "drop"
    #: replaced by ``decontaminate``; setting it is an error that names the new key
    allow_contamination: Any = None

    def __post_init__(self) -> None:
        if self.allow_contamination is not None:
            raise ConfigError(
                f"data.allow_contamination={self.allow_contamination} was replaced by data.decontaminate: "
                "use data.decontaminate=off (for allow_contamination=true), refuse (the old default) or "
                "drop (the new default: train without the offending questions)"
            )
        _check_choice("data.decontaminate", self.decontaminate, ("drop", "refuse", "off"))
        cpt_ok = ("builtin_prose", "sciq_support", "camel_biology", "camel_chemistry", "camel_physics")
        for s in self.cpt_sources:
            _check_choice("data.cpt_sources[]", s, cpt_ok)
        for s in self.train_sources:
            _check_choice(
                "data.train_sources[]", s, ("builtin", "arc_challenge", "arc_easy", "openbookqa", "sciq")
            )


@dataclass
class LoraConfig:
    """A fresh LoRA adapter on a frozen init checkpoint (peft)."""

    enabled: bool = True
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(PROJECTIONS))


@dataclass
class OptimConfig:
    """Optimisation of the shared loop (AdamW, warm-up + linear/cosine decay)."""

    lr: float = 5e-6
    epochs: float = 1.0
    #: stop after this many optimizer steps (null = run the epochs)
    max_steps: int | None = None
    #: examples per micro-batch (pairs for DPO, blocks for CPT)
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    scheduler: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    #: fp32 | bf16 (bf16 autocast on GPU and CPU alike; weights and optimizer state stay fp32)
    precision: str = "fp32"
    seed: int = 0
    log_every: int = 10
    #: checkpoint every N optimizer steps (0 = only at the end)
    save_every: int = 0

    def __post_init__(self) -> None:
        _check_choice("stage.optim.scheduler", self.scheduler, ("linear", "cosine", "constant"))
        _check_choice("stage.optim.precision", self.precision, ("fp32", "bf16"))
        if self.lr <= 0:
            raise ConfigError(f"stage.optim.lr={self.lr}: expected > 0")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("stage.optim.batch_size and stage.optim.grad_accum must be >= 1")


@dataclass
class StageConfig:
    """One training (or evaluation) stage of a recipe."""

    name: str = MISSING
    #: base (the model as configured) | a stage preset of conf/stage (cpt, dpo_cpu, ...: that stage's
    #: output under the same model and data config, from the stage cache or trained first) | a checkpoint dir
    init: str = "base"
    #: extra overrides for composing the init stage, e.g. ["stage.optim.max_steps=20"]
    init_overrides: list[str] = field(default_factory=list)
    #: max tokens per training sequence (CPT block length; prompt+answer for SFT/DPO)
    seq_len: int = 512
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    #: merge a LoRA stage's adapter into a standalone checkpoint
    merge: bool = True
    #: dtype of the merged checkpoint: float16 (the recipe) | bfloat16 | float32
    merge_dtype: str = "float32"
    #: precompute reference log-probs in one no-grad pass, cached on disk by fingerprint
    precompute_reference: bool = True
    #: append EOS to answers (TRL does; the harness never scores it)
    append_eos: bool = False
    #: DeepSpeed JSON config (path) or null; set by launcher=deepspeed
    deepspeed: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_choice("stage", self.name, STAGES)
        _check_choice("stage.merge_dtype", self.merge_dtype, ("float32", "bfloat16", "float16"))


@dataclass
class EvalConfig:
    """lm-eval-parity evaluation (arc_lab.eval)."""

    tasks: list[str] = field(default_factory=lambda: ["builtin"])
    num_fewshot: int = 0
    #: first N docs (int) or a fraction (< 1) of each task's test split; null = all
    limit: float | None = None
    #: score a seeded random subset of this many docs (after ``limit``; contexts and doc ids as in the
    #: full run, so every model scores the same items); null = all. Backend ``ours`` only.
    sample: int | None = None
    sample_seed: int = 0
    batch_size: int = 16
    #: ours | lm_eval | both
    backend: str = "ours"
    #: split scored: test (as lm-eval; reported numbers) | validation (model selection, e.g. hparams_search)
    split: str = "test"
    #: model max length for left truncation; null = as lm-eval derives it from the model config
    max_length: int | None = None
    #: evaluate the init model before training
    before: bool = True
    #: evaluate the trained model after training
    after: bool = True
    #: also evaluate every N optimizer steps (0 = never)
    every: int = 0

    def __post_init__(self) -> None:
        _check_choice("eval.backend", self.backend, ("ours", "lm_eval", "both"))
        _check_choice("eval.split", self.split, ("test", "validation"))
        if self.sample is not None and (self.sample < 1 or self.backend != "ours"):
            raise ConfigError(f"eval.sample={self.sample}: expected >= 1 with eval.backend=ours")
        for t in self.tasks:
            _check_choice("eval.tasks[]", t, ("arc_challenge", "arc_easy", "openbookqa", "sciq", "builtin"))


@dataclass
class LoggerConfig:
    """Where metrics go besides the run folder's metrics log."""

    #: online | offline | disabled
    wandb: str = "disabled"
    project: str = "arc_lab"
    entity: str | None = None
    #: W&B group; null = derived from the sweep (multirun) or the experiment name
    group: str | None = None

    def __post_init__(self) -> None:
        _check_choice("logger.wandb", self.wandb, ("online", "offline", "disabled"))


@dataclass
class RunConfig:
    """The composed config of one ``python -m arc_lab`` run."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    stage: StageConfig = MISSING
    objective: dict[str, Any] = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    #: experiment name (set by experiment presets)
    name: str = "default"
    seed: int = 0
    #: root of run folders and the stage cache
    output_root: str = "outputs"


def objective_schema(name: str, cls: type) -> type:
    """A dataclass with ``name`` plus the loss class's keyword parameters, typed as annotated."""
    sig = inspect.signature(cls.__init__)
    fields: list[tuple[str, Any, Any]] = [("name", str, field(default=name))]
    hints = inspect.get_annotations(cls.__init__, eval_str=True)
    for p in sig.parameters.values():
        if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        typ = hints.get(p.name, Any)
        if getattr(typ, "__origin__", None) is not None and str(typ).startswith("typing.Literal"):
            typ = str
        default = MISSING if p.default is p.empty else p.default
        fields.append((p.name, typ, field(default=default)))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields)


def register_configs() -> None:
    """Put every group's schema in Hydra's ConfigStore (under ``schema/<group>``).

    The objective group has no static schema: its fields are each loss class's constructor
    parameters, checked by :func:`check_objective` against :func:`objective_schema`.
    """
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="schema", name="model", node=ModelConfig)
    cs.store(group="schema", name="data", node=DataConfig)
    cs.store(group="schema", name="stage", node=StageConfig)
    cs.store(group="schema", name="eval", node=EvalConfig)
    cs.store(group="schema", name="logger", node=LoggerConfig)


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Validate a composed config: run every ``__post_init__`` and the cross-group checks."""
    from arc_lab.objectives import OBJECTIVES

    try:
        run: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except ConfigError:
        raise
    except Exception as e:  # omegaconf validation errors carry the full key
        raise ConfigError(str(e)) from e
    run.objective = check_objective(run.stage.name, dict(run.objective), OBJECTIVES)
    return run


def check_objective(stage: str, objective: dict[str, Any], registry: dict[str, type]) -> dict[str, Any]:
    """The objective exists, its parameters have the loss's names and types, and it consumes what
    the stage trains on. Returns the parameters with the loss's defaults filled in."""
    name = objective.get("name")
    if name not in registry:
        raise ConfigError(f"objective={name!r} is not registered; registered objectives: {sorted(registry)}")
    schema = OmegaConf.structured(objective_schema(name, registry[name]))
    try:
        params = OmegaConf.to_container(OmegaConf.merge(schema, objective), throw_on_missing=True)
    except Exception as e:  # unknown key or wrong type: omegaconf names the key
        accepted = [k for k in schema if k != "name"]
        raise ConfigError(
            f"objective={name}: {e}\n    (the key is objective.<full_key>); accepted parameters: {accepted}"
        ) from e
    if stage == "eval":
        return params
    kind = registry[name].input_kind.value
    wanted = STAGE_INPUTS[stage]
    if kind not in wanted:
        fits = sorted(n for n, c in registry.items() if c.input_kind.value in wanted)
        raise ConfigError(
            f"objective={name} trains on '{kind}' inputs, but stage={stage} builds {list(wanted)} inputs. "
            f"Objectives that fit stage={stage}: {fits}"
        )
    return params
