"""Harness-exact tokenisation of (context, continuation), shared by training and evaluation.

lm-eval 0.4.x (``TemplateLM._encode_pair``) encodes ``context + continuation`` as one string and splits
the ids at ``len(encode(context))``. It uses the tokenizer's own special-token default (so Llama/Mistral
get one BOS at the start; SmolLM2's GGUF tokenizer adds none). Training uses the very same function, so
that the quantity an objective optimises is the quantity acc / acc_norm measure.
"""

from __future__ import annotations


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and ``continuation`` exactly as lm-eval's HFLM builds them.

    Trailing whitespace of the context moves to the front of the continuation; the whole string is
    encoded once; the continuation is what follows the context's own encoding length.

    Raises:
        ValueError: if the continuation encodes to no tokens (a token spans the join; lm-eval asserts).
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context)
    cont = whole[len(ctx) :]
    if not cont:
        raise ValueError(
            f"continuation {continuation!r} encodes to no tokens after context ending "
            f"{context[-40:]!r} (a token spans the join)"
        )
    return ctx, cont


def _encode(tokenizer, text: str) -> list[int]:
    """lm-eval's ``tok_encode`` with ``add_bos_token=None``: the tokenizer's default special tokens,
    turned off when the text already starts with the BOS string."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    return tokenizer.encode(text, add_special_tokens=add_special)
