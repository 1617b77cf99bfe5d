"""Shared test helpers: tiny random models from the ``conf/model/tiny_*.yaml`` presets, configs composed from
``conf/config.yaml``, packed CPT blocks.

Plain functions, as torchtune's ``tests/test_utils.py``; ``tests/conftest.py`` wraps the ones several files
use as fixtures (``hydra_ctx``, ``blocks``). Import them as ``from helpers import ...`` (pytest puts
``tests/`` on ``sys.path``, as for ``numerics``).

Model sizes come from the presets' ``tiny:`` dict, so a test and ``model=tiny_llama`` build the same network
through the same function (:func:`arc_lab.models.tiny_random_model`, which ``load_model(source="random")``
calls). A test that needs another size or architecture says so with keyword arguments
(``tiny_model("tiny_mistral", tok, arch="llama")``, ``load_tiny("tiny_llama", **ONE_LAYER)``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

    from arc_lab.config import ModelConfig, RunConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

#: One layer, width 32, a 512-token window: for tests that only need *a* model to score with (evaluation
#: plumbing), a fraction of the presets' cost. Pass it as keyword arguments: ``load_tiny("tiny_llama",
#: **ONE_LAYER)``.
ONE_LAYER: dict[str, int] = dict(
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    num_kv_heads=2,
    intermediate_size=64,
    max_position_embeddings=512,
)


# --------------------------------------------------------------------------------------------- models
@functools.cache
def model_preset(preset: str) -> ModelConfig:
    """``conf/model/<preset>.yaml`` as the validated :class:`~arc_lab.config.ModelConfig` the app builds
    (schema defaults filled in, ``model.tiny`` checked); read once per session."""
    from omegaconf import OmegaConf

    from arc_lab.config import ModelConfig

    path = CONF / "model" / f"{preset}.yaml"
    fields: dict[str, Any] = OmegaConf.to_container(OmegaConf.load(path))  # type: ignore[assignment]
    fields.pop("defaults", None)
    config = ModelConfig(**fields)
    if config.source != "random":
        raise ValueError(f"{path}: model.source={config.source!r}, not a tiny random model")
    return config


def tiny_sizes(preset: str, **changes: int) -> dict[str, int]:
    """The ``tiny:`` sizes of ``conf/model/<preset>.yaml`` (the keyword arguments of
    :func:`~arc_lab.models.tiny_random_model`), with ``changes``: a test's deliberate difference."""
    sizes = dict(model_preset(preset).tiny)
    unknown = sorted(set(changes) - set(sizes))
    if unknown:
        raise TypeError(f"{unknown}: not sizes of conf/model/{preset}.yaml (those are {sorted(sizes)})")
    return {**sizes, **changes}


def tiny_model(
    preset: str,
    tok,
    *,
    seed: int = 0,
    arch: str | None = None,
    attn_implementation: str | None = None,
    **changes: int,
) -> torch.nn.Module:
    """A random model of ``conf/model/<preset>.yaml`` for ``tok``'s vocabulary, without loading a tokenizer
    (the random branch of :func:`~arc_lab.models.load_model` with the tokenizer given).

    Args:
        preset: ``tiny_llama`` or ``tiny_mistral``.
        tok: the tokenizer whose vocabulary size the model gets (usually the ``smol_tokenizer`` fixture).
        seed: initialisation seed.
        arch: another architecture than the preset's, with the preset's sizes.
        attn_implementation: e.g. ``eager`` or ``sdpa``, set as ``load_model`` sets it.
        changes: sizes that differ from the preset's (see :func:`tiny_sizes`).
    """
    from arc_lab.models import tiny_random_model

    model = tiny_random_model(
        arch or model_preset(preset).arch, vocab_size=len(tok), seed=seed, **tiny_sizes(preset, **changes)
    )
    if attn_implementation:
        model.config._attn_implementation = attn_implementation
    return model


def load_tiny(preset: str, *, seed: int = 0, arch: str | None = None, **changes: int) -> tuple[Any, Any]:
    """``(model, tokenizer)`` as ``model=<preset>`` loads them: :func:`~arc_lab.models.load_model` with the
    preset's ``arch``, sizes and ``add_bos`` (a fresh SmolLM2 tokenizer each call).

    ``arch`` and ``changes`` are a test's deliberate differences from the preset, as in :func:`tiny_model`.
    """
    from arc_lab.models import load_model

    config = model_preset(preset)
    return load_model(
        source="random",
        arch=arch or config.arch,
        tiny=tiny_sizes(preset, **changes),
        add_bos=config.add_bos,
        seed=seed,
    )


# -------------------------------------------------------------------------------------------- configs
@contextmanager
def hydra_conf() -> Iterator[None]:
    """Hydra initialised on ``conf/`` as ``python -m arc_lab`` has it (``plan_chain`` composes the init
    stages of a chain in it), the schemas registered; the global state is cleared before and after."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from arc_lab.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()


def compose(overrides: Sequence[str] = (), *, hydra_config: bool = False) -> DictConfig:
    """``conf/config.yaml`` composed with ``overrides``, as the CLI composes it before any validation.

    Inside :func:`hydra_conf` (the ``hydra_ctx`` fixture) it composes in that context; elsewhere it opens
    one for the call (3 ms). ``hydra_config`` adds the ``hydra`` node (sweeper, launcher, run dirs).
    """
    from hydra import compose as hydra_compose
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        with hydra_conf():
            return compose(overrides, hydra_config=hydra_config)
    return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_config)


def run_config(overrides: Sequence[str] = ()) -> RunConfig:
    """:func:`compose` then :func:`~arc_lab.config.to_run_config`: the validated config of one run."""
    from arc_lab.config import to_run_config

    return to_run_config(compose(overrides))


# --------------------------------------------------------------------------------------------- data
def builtin_blocks(tok, *, texts: int = 4, seq_len: int = 32, n: int = 7) -> torch.Tensor:
    """``n`` CPT blocks of ``seq_len`` tokens packed from the first ``texts`` built-in prose texts:
    the ``(7, 32)`` training set of the tiny CPT loop tests."""
    from arc_lab.data.builders import pack_blocks
    from arc_lab.data.builtin import builtin_prose

    return pack_blocks(builtin_prose()[:texts], tok, seq_len=seq_len)[:n]
