"""Supervised fine-tuning loss on the gold answer's tokens."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Objective


class SFTLoss(Objective):
    """Negative log-likelihood of the gold answer given the question (prompt tokens masked).

    Paper: supervised fine-tuning / instruction tuning (e.g. Wei et al. 2022, "Finetuned Language Models
    Are Zero-Shot Learners"; Ouyang et al. 2022 for the SFT stage before preference learning).

    Formula: ``loss = -Σ_b logp(y_b | x_b) / Σ_b |y_b|`` (mean NLL per answer token over the batch).

    Intuition: raises the likelihood of the gold answer text exactly as the harness scores it
    (answer-only continuation); token-weighted over the batch, so long answers weigh more in total.

    No hyper-parameters. Input: K=1, column 0 is the gold answer.
    """

    needs_reference = False
    input_kind = InputKind.ANSWER

    def __init__(self) -> None:
        super().__init__()

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Token-weighted answer NLL.

        Args:
            batch: ``logps``/``tokens``/``mask`` of shape (B, 1).

        Returns:
            Scalar loss and ``{"nll", "tokens"}``.
        """
        Fn.check_k(batch, 1, type(self).__name__)
        loss = Fn.token_nll(batch)
        tokens = torch.where(batch.mask, batch.tokens, torch.zeros_like(batch.tokens)).sum()
        return loss, {"nll": loss.detach(), "tokens": tokens.detach()}
