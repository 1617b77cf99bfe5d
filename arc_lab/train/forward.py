"""One forward per batch, LM head applied at answer positions only -> :class:`AnswerLogps`.

ARC answers are a few tokens after a long prompt, so the (tokens x vocab) logits are almost all waste.
:func:`answer_logps` runs the decoder (``model.model``) over the padded rows, gathers the hidden states
of the positions that predict answer tokens, applies the LM head to those only, and takes the
log-softmax in fp32. Summed per answer, shaped ``(B, K)``, it is the quantity lm-eval's loglikelihood
sums (the same encode_pair ids), so the loss optimises exactly what acc / acc_norm measure.

Works for plain ``*ForCausalLM`` models and peft models (LoRA layers are injected in place, so the
decoder of ``get_base_model()`` runs them; under ``disable_adapter()`` it is the frozen base).
Models that post-process logits (e.g. Gemma's soft-capping) are not supported: the check
:func:`split_lm` refuses configs that declare it.

Prefix-shared batches (:func:`arc_lab.train.batching.collate` with ``shared=True``) run each prompt once
with its distinct answers packed after it under a block mask; the per-answer sums are then gathered into
the (B, K) slots, so a gold answer shared by three pairs is computed once and its gradient is the sum
over the pairs, as it is with one row per pair. :func:`use_prefix_sharing` decides whether a model may
use that layout (eager / sdpa attention) and logs the decision.

Public API: :func:`answer_logps`, :func:`split_lm`, :func:`use_prefix_sharing`.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
from torch import nn

from arc_lab.objectives.base import AnswerLogps
from arc_lab.packing import BLOCK_MASK_KERNELS, as_model_mask, attn_implementation
from arc_lab.train.batching import Batch

log = logging.getLogger(__name__)


def split_lm(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder, lm_head) of a causal LM or a peft model wrapping one.

    Raises:
        ValueError: the model has no decoder/output embeddings, or its config soft-caps logits.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or head is None:
        raise ValueError(
            f"{type(base).__name__}: need a decoder (get_decoder/.model) and an LM head "
            "(get_output_embeddings) to apply the head at answer positions only"
        )
    if getattr(getattr(base, "config", None), "final_logit_softcapping", None):
        raise ValueError(f"{type(base).__name__} soft-caps its logits; answer_logps applies the bare LM head")
    return decoder, head


def autocast_ctx(device: torch.device, precision: str):
    """bf16 autocast for ``precision='bf16'`` (CUDA and CPU), nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision={precision!r}: expected fp32 | bf16")


def answer_logps(model: nn.Module, batch: Batch, *, precision: str = "fp32") -> AnswerLogps:
    """Summed answer log-probs of every (example, choice) of ``batch`` in one forward.

    Args:
        model: causal LM (or peft model); its device is where the batch goes.
        batch: a :class:`Batch` of R rows (already on the model's device).
        precision: ``fp32`` | ``bf16`` (autocast around decoder and head; log_softmax always fp32).

    Returns:
        AnswerLogps with ``logps`` (B, K) (0 at masked slots), lengths (B, K), ``mask``, ``gold``;
        ``ref_logps`` None (the caller fills it).
    """
    decoder, head = split_lm(model)
    b, k = batch.mask.shape
    mask = batch.attention_mask
    if batch.shared:
        attn = attn_implementation(model)
        if attn not in BLOCK_MASK_KERNELS:
            raise ValueError(
                f"attn_implementation={attn!r} takes no 4-D block mask: collate with shared=False "
                "(see arc_lab.train.forward.use_prefix_sharing)"
            )
        mask = as_model_mask(batch.block_mask, attn, decoder.get_input_embeddings().weight.dtype)
    with autocast_ctx(batch.input_ids.device, precision):
        hidden = decoder(
            input_ids=batch.input_ids,
            attention_mask=mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).last_hidden_state  # (R, T, H)
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.pred_pos)  # (A, H)
        logits = head(h)  # (A, V)
    logp = logits.float().log_softmax(-1).gather(1, batch.targets[:, None]).squeeze(1)  # (A,)
    per_answer = torch.zeros(batch.n_answers + 1, dtype=torch.float32, device=logp.device)
    per_answer = per_answer.index_add(0, batch.token_answer, logp)  # slot U stays 0 (masked choices)
    return AnswerLogps(
        logps=per_answer[batch.answer_slot].view(b, k),
        tokens=batch.tokens,
        chars=batch.chars,
        bytes=batch.bytes,
        mask=batch.mask,
        gold=batch.gold,
    )


def use_prefix_sharing(model: nn.Module, wanted: bool = True, *, seq_len: int | None = None) -> bool:
    """Whether training batches of ``model`` may use the prefix-shared layout; says so loudly when not.

    Args:
        model: the (peft or plain) causal LM.
        wanted: the configuration asks for sharing (``stage.optim.prefix_sharing``).
        seq_len: max prompt + answer tokens; a sliding window shorter than it would bite on unshared
            rows but not on the block mask, so such models keep unshared rows.
    """
    if not wanted:
        log.info("prefix sharing: off (stage.optim.prefix_sharing=false): one row per answer")
        return False
    attn = attn_implementation(model)
    if attn not in BLOCK_MASK_KERNELS:
        log.warning(
            "prefix sharing: attention kernel %r takes no 4-D block mask; falling back to one row per "
            "answer (prompt recomputed per answer). Use attn_implementation=sdpa or eager for sharing",
            attn or "unknown",
        )
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    window = getattr(base.config, "sliding_window", None)
    if window is not None and seq_len is not None and seq_len >= window:
        log.warning(
            "prefix sharing: sliding_window=%d <= seq_len=%d; falling back to one row per answer",
            window,
            seq_len,
        )
        return False
    log.info("prefix sharing: on (%s kernel): each prompt and each distinct answer encoded once", attn)
    return True
