"""Prefix-shared packing: one context and several continuations in one row, under a block mask.

Shared by the evaluator (:mod:`arc_lab.eval.engine`, continuations on the context's KV cache) and training
(:mod:`arc_lab.train.batching`, context and continuations in one packed row). A row holds a context of
``c`` tokens at positions ``[0, c)`` and, from ``seg_start`` on, continuations back to back. The mask lets

* a context token see the earlier context tokens (causal),
* a continuation token see the whole context and the earlier tokens of its own continuation only,
* every position see itself (padding rows are never fully masked, so no softmax over nothing),

and the position ids of every continuation restart at ``c``. So each continuation is computed exactly as
if it alone followed the context, while the context runs once.

Attention kernels: the mask goes to the model as a prepared 4-D mask (``transformers`` uses it as-is).
``eager`` and ``sdpa`` take it; FlashAttention and other kernels take no arbitrary 4-D mask, and callers
fall back to unshared rows with a warning naming the kernel (:func:`takes_block_mask`).

Public API: :func:`prefix_block_mask`, :func:`as_model_mask`, :func:`takes_block_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: attention implementations that honour an arbitrary prepared 4-D mask
BLOCK_MASK_KERNELS = ("eager", "sdpa")


def prefix_block_mask(
    ctx_lens: Sequence[int],
    seg_lens: Sequence[Sequence[int]],
    width: int,
    seg_start: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block mask and position ids of rows that pack one context and several continuations.

    Args:
        ctx_lens: per row, the context length ``c`` (context tokens at ``[0, c)``).
        seg_lens: per row, the lengths of the continuations packed back to back.
        width: row length W (keys and queries); must hold ``seg_start + sum(seg_lens)``.
        seg_start: per row, where the first continuation starts (default ``c``; the evaluator's cache is
            right-padded, so its continuations start at the padded context length).

    Returns:
        ``allowed`` (B, W, W) bool (query, key) and ``position_ids`` (B, W) long (0 on padding).
    """
    b_size = len(ctx_lens)
    allowed = torch.zeros(b_size, width, width, dtype=torch.bool)
    diag = torch.arange(width)
    allowed[:, diag, diag] = True
    pos = torch.zeros(b_size, width, dtype=torch.long)
    for b, c in enumerate(ctx_lens):
        allowed[b, :c, :c] = torch.ones(c, c, dtype=torch.bool).tril()
        pos[b, :c] = torch.arange(c)
        offset = c if seg_start is None else seg_start[b]
        for n in seg_lens[b]:
            seg = slice(offset, offset + n)
            allowed[b, seg, :c] = True
            allowed[b, seg, seg] = torch.ones(n, n, dtype=torch.bool).tril()
            pos[b, seg] = torch.arange(c, c + n)
            offset += n
        if offset > width:
            raise ValueError(f"row {b}: context and continuations need {offset} positions, width is {width}")
    return allowed, pos


def as_model_mask(allowed: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, Q, K) mask in the form the kernel wants: bool for ``sdpa``, additive ``dtype`` for ``eager``
    (which adds the mask to the scores)."""
    if attn_implementation == "sdpa":
        return allowed[:, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def attn_implementation(model) -> str:
    """The model's attention implementation (``config._attn_implementation``), ``""`` if unknown."""
    return str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "")


def takes_block_mask(model) -> bool:
    """Whether the model's attention kernel honours a prepared 4-D block mask (eager, sdpa)."""
    return attn_implementation(model) in BLOCK_MASK_KERNELS
