"""Hinge preference loss (SLiC-HF / RSO)."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class HingeLoss(Objective):
    """Hinge loss on the DPO log-ratio margin.

    Papers: Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback"
    (https://arxiv.org/abs/2305.10425); Liu et al. 2023, "Statistical Rejection Sampling Improves
    Preference Optimization" (RSO, https://arxiv.org/abs/2309.06657), which adds the reference.

    Formula: ``loss = max(0, 1 - β·h)``, ``h`` as in DPO.

    Intuition: a margin loss: pairs whose scaled margin already exceeds 1 (h ≥ 1/β) contribute
    neither loss nor gradient, unlike DPO which always pushes.

    Usual ranges: β ∈ [0.01, 0.5] (TRL default 0.1, i.e. a margin of 10 nats on the summed log-ratio).

    Args:
        beta: scale β of the margin; the hinge is met once h ≥ 1/β.
        norm: length unit the log-ratios are divided by (``sum`` is the papers').
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
        """Hinge loss of pairs (column 0 chosen), shapes (B, 2); needs ``ref_logps``."""
        name = type(self).__name__
        Fn.check_k(batch, 2, name)
        rewards = self.beta * Fn.log_ratios(batch, self.norm, name)  # (B, 2)
        loss = torch.relu(1 - (rewards[:, 0] - rewards[:, 1])).mean()
        return loss, Fn.pair_metrics(rewards[:, 0], rewards[:, 1])

    def extra_repr(self) -> str:
        return f"beta={self.beta}, norm={self.norm!r}"
