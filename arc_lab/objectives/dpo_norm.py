"""Length-normalised DPO."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class DPONormLoss(Objective):
    """DPO on per-token averaged log-ratios (length-normalised DPO, "LN-DPO").

    Paper: Lambert et al. 2024, "Tulu 3: Pushing Frontiers in Open Language Model Post-Training"
    (https://arxiv.org/abs/2411.15124), whose final DPO recipe is this "dpo_norm" with β = 5; the
    length-normalised reward is motivated by SimPO (Meng et al. 2024, https://arxiv.org/abs/2405.14734).

    Formula: ``loss = -log σ(β·h̄)``,
    ``h̄ = [logp(y_w)-ref(y_w)]/|y_w| - [logp(y_l)-ref(y_l)]/|y_l|``.

    Intuition: summed log-ratios grow with answer length, so plain DPO can favour length; averaging per
    token removes that bias. Averaged ratios are ~|y| times smaller, hence the much larger β.

    Usual ranges: β ∈ [1, 10]; β ≈ 5 (Tulu 3 used 5).

    Args:
        beta: inverse temperature β of the averaged implicit reward.
        norm: length unit of the averaging; ``token`` (default) is the paper's.
    """

    needs_reference = True
    input_kind = InputKind.PAIR

    def __init__(self, *, beta: float = 5.0, norm: Norm = "token") -> None:
        super().__init__()
        Fn.check_positive(beta, "beta", type(self).__name__)
        Fn.check_norm(norm, type(self).__name__)
        self.beta = beta
        self.norm = norm

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Length-normalised DPO loss of pairs (column 0 chosen), shapes (B, 2); needs ``ref_logps``."""
        name = type(self).__name__
        Fn.check_k(batch, 2, name)
        rewards = self.beta * Fn.log_ratios(batch, self.norm, name)  # (B, 2)
        loss = Fn.sigmoid_loss(rewards[:, 0] - rewards[:, 1]).mean()
        return loss, Fn.pair_metrics(rewards[:, 0], rewards[:, 1])

    def extra_repr(self) -> str:
        return f"beta={self.beta}, norm={self.norm!r}"
