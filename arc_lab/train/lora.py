"""A fresh peft LoRA adapter on a frozen model, and the reference policy as "adapter off".

The reference of a preference objective is the init model. With LoRA on a frozen base that is the
same network with the adapter disabled, so no second copy of the weights is ever loaded
(:func:`reference_mode`). Full fine-tuning (``LoraConfig.enabled`` false, the CPT default) trains
every weight instead (:func:`prepare_trainable`); its reference must then be precomputed before the
first step (:mod:`arc_lab.train.reference`).

Public API: :func:`add_lora`, :func:`prepare_trainable`, :func:`is_lora`, :func:`reference_mode`,
:func:`count_parameters`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from arc_lab.train.args import LoraConfig

log = logging.getLogger(__name__)


def is_lora(model: nn.Module) -> bool:
    """True for a peft model (anything with ``disable_adapter``)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def add_lora(model: nn.Module, *, r: int, alpha: int, dropout: float, target_modules: list[str]) -> nn.Module:
    """Wrap ``model`` in a fresh LoRA adapter; every base weight is frozen.

    The adapter's A matrices are drawn from the global torch RNG (seed before calling); B starts at 0,
    so the wrapped model computes exactly the base function at step 0.

    Args:
        model: a causal LM (not already a peft model).
        r, alpha, dropout: LoRA rank, scale numerator (scale = alpha / r) and dropout on the adapter input.
        target_modules: module-name suffixes to adapt (recipe: all 7 attention/MLP projections).

    Raises:
        ValueError: the model already has an adapter, or no module matches ``target_modules``.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    if is_lora(model):
        raise ValueError(
            "add_lora: the model already carries a peft adapter; merge it first (arc_lab.train.merge)"
        )
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in target_modules if t not in names]
    if missing:
        raise ValueError(f"lora.target_modules {missing} match no module of {type(model).__name__}")
    config = PeftLoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    trainable, total = count_parameters(peft_model)
    log.info(
        "LoRA r=%d alpha=%d dropout=%g on %s: %d trainable of %d parameters (%.2f%%)",
        r,
        alpha,
        dropout,
        target_modules,
        trainable,
        total,
        100 * trainable / total,
    )
    return peft_model


def prepare_trainable(model: nn.Module, lora: LoraConfig | None) -> nn.Module:
    """The model to train: LoRA-wrapped when ``lora`` is enabled, otherwise all weights trainable."""
    if lora is not None and lora.enabled:
        return add_lora(
            model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules
        )
    if is_lora(model):
        raise ValueError(
            "full fine-tuning (lora.enabled=false) of a model that carries a LoRA adapter: merge it first"
        )
    model.requires_grad_(True)
    return model


@contextmanager
def reference_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Context in which ``model`` computes the reference (init) policy: adapter disabled, eval mode.

    Only valid for a LoRA model (for full fine-tuning the init weights are gone after the first step;
    precompute the reference instead). Train/eval mode is restored on exit.

    Raises:
        ValueError: ``model`` has no adapter.
    """
    if not is_lora(model):
        raise ValueError(
            "reference_mode needs a LoRA model; a full fine-tune's reference must be precomputed"
        )
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            yield model
    finally:
        model.train(was_training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
