"""Causal-LM loss on packed text (continual pre-training)."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Objective


class CLMLoss(Objective):
    """Next-token negative log-likelihood of every token of packed text blocks.

    Paper: standard language modelling (e.g. Radford et al. 2018, "Improving Language Understanding by
    Generative Pre-Training"); used here for continual pre-training on science prose.

    Formula: ``loss = -Σ_b logp_b / Σ_b tokens_b`` (mean NLL per token over the batch).

    Intuition: token-weighted, not a mean of per-sequence means, so a short trailing block counts for
    its tokens only; exp(loss) is the perplexity of the batch.

    No hyper-parameters. Input: K=1, ``logps`` are the summed log-probs of each block's predicted tokens.
    """

    needs_reference = False
    input_kind = InputKind.PACKED

    def __init__(self) -> None:
        super().__init__()

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Token-weighted NLL.

        Args:
            batch: ``logps``/``tokens``/``mask`` of shape (B, 1).

        Returns:
            Scalar loss and ``{"nll", "tokens"}``.
        """
        Fn.check_k(batch, 1, type(self).__name__)
        loss = Fn.token_nll(batch)
        tokens = torch.where(batch.mask, batch.tokens, torch.zeros_like(batch.tokens)).sum()
        return loss, {"nll": loss.detach(), "tokens": tokens.detach()}
