"""Direct Preference Optimization (sigmoid loss)."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class DPOLoss(Objective):
    """DPO: logistic loss on the difference of policy/reference log-ratios.

    Paper: Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
    Reward Model" (https://arxiv.org/abs/2305.18290).

    Formula: ``loss = -log σ(β·h)``, ``h = [logp(y_w) - ref(y_w)] - [logp(y_l) - ref(y_l)]``.

    Intuition: ``β·(logp - ref)`` is an implicit reward; the loss is a Bradley-Terry likelihood that the
    chosen answer out-scores the rejected one, with the reference anchoring the policy (β is the
    inverse strength of the KL constraint).

    Usual ranges: β ∈ [0.01, 0.5]; 0.1 is the arc_lab seed recipe (Zephyr used 0.01).

    Args:
        beta: inverse temperature β of the implicit reward.
        norm: length unit the log-ratios are divided by; ``sum`` (default) is the paper's DPO.
    """

    needs_reference = True
    input_kind = InputKind.PAIR

    def __init__(self, *, beta: float = 0.1, norm: Norm = "sum") -> None:
        super().__init__()
        Fn.check_positive(beta, "beta", type(self).__name__)
        Fn.check_norm(norm, type(self).__name__)
        self.beta = beta
        self.norm = norm

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """DPO loss of pairs (column 0 chosen, column 1 rejected), shapes (B, 2); needs ``ref_logps``."""
        name = type(self).__name__
        Fn.check_k(batch, 2, name)
        rewards = self.beta * Fn.log_ratios(batch, self.norm, name)  # (B, 2)
        loss = Fn.sigmoid_loss(rewards[:, 0] - rewards[:, 1]).mean()
        return loss, Fn.pair_metrics(rewards[:, 0], rewards[:, 1])

    def extra_repr(self) -> str:
        return f"beta={self.beta}, norm={self.norm!r}"
