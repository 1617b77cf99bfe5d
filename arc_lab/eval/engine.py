"""Prefix-shared log-likelihood scoring: each question's context runs once, its choices run on its KV cache.

lm-eval's HFLM runs one full forward pass over ``context + choice`` per choice (only single-token choices of
one doc share a pass), computes ``log_softmax`` over every position and the whole vocabulary, then keeps the
continuation rows. For 25-shot ARC that is ~4 passes over ~1,000 context tokens per question. Here:

1. **Context pass.** The contexts of up to ``batch_size`` questions run right-padded in one batch, with no
   attention mask (as lm-eval: causal attention makes right-padding invisible to real tokens). The LM head is
   applied only at each context's last position (``logits_to_keep``), which predicts the first choice token.
2. **Choice pass.** On that KV cache (not copied per choice), one row per question packs ``choice[:-1]`` of
   all its choices back to back. A 4-D additive mask lets each packed token see only its own question's
   context (the cache is right-padded to the batch's longest context) and the earlier tokens of its own
   choice. Position ids restart at the context length for every choice. So each choice is computed as if it
   alone followed the context. Single-token choices need no choice pass at all.
3. **Full-sequence fallback.** A choice whose ``context + choice`` exceeds ``max_length + 1`` tokens is left-
   truncated by lm-eval (``(ctx + cont)[-(max_length + 1):][:-1]``), which changes the context it sees, so it
   is scored exactly that way, batched like lm-eval (right-padded with 0, no mask). Models with a sliding
   window shorter than the shared sequence also take this path, and so does everything under a FlashAttention
   implementation (it takes no 4-D masks), with a warning: same results, lm-eval's speed.

Precision: ``log_softmax`` runs in the logits' dtype and the per-token values are summed in it, as lm-eval
does with its default ``softmax_dtype=None``. In fp32 (CPU tests) sums agree with lm-eval to ~1e-7 relative
(max 3e-5 absolute on sums of -10 to -100: summation order and kernel shapes). In
bf16/fp16 the different kernel shapes (cached attention, smaller batches) change last bits of the logits, so
sums can differ by a few fp16/bf16 ulps and near-tied choices can flip; parity there is statistical, not
bitwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from arc_lab.packing import as_model_mask, prefix_block_mask

log = logging.getLogger(__name__)
PAD_ID = 0  # lm-eval pads with token id 0; padded positions never influence real ones


@dataclass
class Question:
    """One question's token ids: a context and one continuation per choice (from ``encode_pair``)."""

    context: list[int]
    continuations: list[list[int]]


@dataclass
class Scored:
    """Per-choice results of one question, in choice order.

    Attributes:
        loglikelihoods: summed log-probability of each continuation given the context.
        num_tokens: continuation length in tokens.
        truncated: whether lm-eval's left truncation applied (scored on the full-sequence path).
    """

    loglikelihoods: list[float] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)


def resolve_max_length(model, tokenizer=None, default: int = 2048) -> int:
    """lm-eval's ``resolve_max_length``: ``text_config`` or config ``n_positions`` /
    ``max_position_embeddings`` / ``n_ctx``, else the tokenizer's ``model_max_length``, else 2048."""
    cfg = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    mml = getattr(tokenizer, "model_max_length", None)
    if mml is not None and mml != int(1e30):  # transformers' VERY_LARGE_INTEGER means "unset"
        return int(mml)
    return default


def score_questions(
    model, questions: list[Question], *, max_length: int, batch_size: int = 8, progress: bool = True
) -> list[Scored]:
    """Summed continuation log-likelihoods of every choice of every question.

    Args:
        model: a causal LM (``transformers`` 5.x, supports ``logits_to_keep`` and ``DynamicCache``).
        questions: token ids per question; contexts must be non-empty.
        max_length: lm-eval's ``max_length`` (the truncation window).
        batch_size: questions per context pass (full-sequence fallback: sequences per pass). Results do not
            depend on it beyond floating-point rounding.
        progress: show a tqdm bar (items/s).

    Returns:
        One :class:`Scored` per question, in input order.
    """
    if batch_size < 1:
        raise ValueError(f"eval.batch_size={batch_size}: must be >= 1")
    out = [
        Scored(
            [0.0] * len(q.continuations), [len(c) for c in q.continuations], [False] * len(q.continuations)
        )
        for q in questions
    ]
    window = getattr(model.config, "sliding_window", None)
    shared, full = _split_requests(questions, max_length, window)
    attn = str(getattr(model.config, "_attn_implementation", ""))
    if shared and attn.startswith("flash"):
        log.warning(
            "attn_implementation=%s takes no 4-D masks: scoring every choice as a full sequence "
            "(lm-eval's way, no prefix sharing); use sdpa or eager for the fast path",
            attn,
        )
        full += [(qi, j) for qi, js in shared.items() for j in js]
        shared = {}
    for qi, j in full:
        out[qi].truncated[j] = (
            len(questions[qi].context) + len(questions[qi].continuations[j]) > max_length + 1
        )
    bar = tqdm(total=len(questions), desc="eval: scoring", unit="item", disable=not progress, smoothing=0.1)
    with torch.inference_mode():
        order = sorted(shared, key=lambda qi: (-len(questions[qi].context), qi))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            _score_shared(model, questions, chunk, shared, out)
            bar.update(sum(1 for qi in chunk if len(shared[qi]) == len(questions[qi].continuations)))
        _score_full(model, questions, full, out, max_length, batch_size)
        bar.update(len({qi for qi, _ in full}))
    bar.close()
    return out


def _split_requests(questions: list[Question], max_length: int, window: int | None):
    """Which choices may share their question's context pass (``{qi: [j, ...]}``) and which need a full pass
    (``[(qi, j), ...]``)."""
    shared: dict[int, list[int]] = {}
    full: list[tuple[int, int]] = []
    for qi, q in enumerate(questions):
        if not q.context:
            raise ValueError(
                f"question {qi}: empty context (lm-eval would use a prefix token; not supported)"
            )
        for j, cont in enumerate(q.continuations):
            if not cont:
                raise ValueError(f"question {qi} choice {j}: empty continuation")
            if len(cont) > max_length:
                raise ValueError(
                    f"question {qi} choice {j}: continuation of {len(cont)} tokens exceeds "
                    f"max_length={max_length} (lm-eval asserts on this too)"
                )
            total = len(q.context) + len(cont)
            # a sliding window must never bite on the shared path: the choice pass's 4-D mask does not model
            # it, and a sliding cache layer drops keys older than the window (strict `<`: one token of margin)
            fits = total <= max_length + 1 and (window is None or total < window)
            if fits:
                shared.setdefault(qi, []).append(j)
            else:
                full.append((qi, j))
    return shared, full


def _score_shared(model, questions, chunk, shared, out) -> None:
    """Context pass for the questions in ``chunk``, then all their shareable choices on its KV cache."""
    ctx_lens = [len(questions[qi].context) for qi in chunk]
    feeds = [[questions[qi].continuations[j][:-1] for j in shared[qi]] for qi in chunk]
    longest = max(sum(len(f) for f in fs) for fs in feeds)
    device = model.device
    ids = _right_pad([questions[qi].context for qi in chunk], device)  # (B, P)
    last = torch.tensor(ctx_lens, device=device).sub(1).unsqueeze(1)  # (B, 1)
    res = model(input_ids=ids, use_cache=True, logits_to_keep=last)
    first_lp = F.log_softmax(res.logits[:, 0, :], dim=-1)  # (B, V), in the logits' dtype like lm-eval
    tails = _choice_pass(model, feeds, res.cache, ctx_lens, ids.shape[1]) if longest else None
    for b, qi in enumerate(chunk):
        offset = 0
        for j in shared[qi]:
            cont = questions[qi].continuations[j]
            vals = first_lp[b, cont[0]].reshape(1)
            if len(cont) > 1:
                assert tails is not None  # computed whenever some continuation is longer than one token
                target = torch.tensor(cont[1:], device=device).unsqueeze(-1)  # (m-1, 1)
                tail = tails[b, offset : offset + len(cont) - 1].gather(-1, target).squeeze(-1)
                vals = torch.cat([vals, tail])
                offset += len(cont) - 1
            out[qi].loglikelihoods[j] = float(vals.sum())


def _choice_pass(
    model, feeds: list[list[list[int]]], cache, ctx_lens: list[int], pad_len: int
) -> torch.Tensor:
    """Log-probs of every choice token after the first, all choices of a question packed in one row.

    Row b holds ``choice[:-1]`` of each of its question's choices back to back (S = longest packing). A 4-D
    additive mask lets each packed token see its own question's context (cached positions < ``ctx_lens[b]``;
    the cache is right-padded to P = ``pad_len``) and the earlier tokens of its own choice only, and position
    ids restart at ``ctx_lens[b]`` for every choice, so each choice is computed exactly as if it followed
    the context alone. The cache is not copied per choice.

    Args:
        feeds: per row, per shareable choice, the fed tokens ``choice[:-1]`` (possibly empty).
        cache: the context pass's ``DynamicCache``, batch B = ``len(feeds)``, length P.

    Returns:
        (B, S, V) log-probs; row b, packed slot s predicts the token after the one fed at s.
    """
    device, dtype = model.device, model.dtype
    flat = [[t for f in fs for t in f] for fs in feeds]
    ids = _right_pad([f or [PAD_ID] for f in flat], device)  # (B, S)
    s_len = ids.shape[1]
    allowed, pos = prefix_block_mask(
        ctx_lens, [[len(f) for f in fs] for fs in feeds], pad_len + s_len, seg_start=[pad_len] * len(feeds)
    )
    # queries are the packed tokens only; keys are the cached context (padded to P) and the packed tokens.
    # The additive form works for both eager (adds it) and SDPA (float masks are added too).
    mask = as_model_mask(allowed[:, pad_len:], "eager", dtype)
    pos = pos[:, pad_len:]
    logits = model(
        input_ids=ids,
        attention_mask=mask.to(device),
        position_ids=pos.to(device),
        cache=cache,
        use_cache=True,
    ).logits  # (B, S, V)
    return F.log_softmax(logits, dim=-1)


def _score_full(model, questions, full, out, max_length, batch_size) -> None:
    """lm-eval's own computation for the given (question, choice) pairs: ``(ctx + cont)[-(L+1):][:-1]``,
    longest first, right-padded with 0, no attention mask."""
    device = model.device
    reqs = []
    for qi, j in full:
        cont = questions[qi].continuations[j]
        reqs.append((qi, j, (questions[qi].context + cont)[-(max_length + 1) :][:-1], cont))
    reqs.sort(key=lambda r: (-len(r[2]), r[0], r[1]))
    for s in range(0, len(reqs), batch_size):
        chunk = reqs[s : s + batch_size]
        ids = _right_pad([r[2] for r in chunk], device)  # (B, T)
        m = max(len(r[3]) for r in chunk)
        # positions inplen-m .. inplen-1 per row (clamped at 0 for rows with shorter continuations)
        keep = torch.stack(
            [torch.arange(len(r[2]) - m, len(r[2]), device=device).clamp(min=0) for r in chunk]
        )
        lp = F.log_softmax(model(input_ids=ids, logits_to_keep=keep).logits, dim=-1)  # (B, m, V)
        for b, (qi, j, _, cont) in enumerate(chunk):
            target = torch.tensor(cont, device=device)
            vals = lp[b, m - len(cont) :].gather(-1, target.unsqueeze(-1)).squeeze(-1)
            out[qi].loglikelihoods[j] = float(vals.sum())


def _right_pad(seqs: list[list[int]], device) -> torch.Tensor:
    """(N, max_len) long tensor, right-padded with :data:`PAD_ID`."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD_ID, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids
