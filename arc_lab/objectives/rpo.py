"""Reasoning/Regularised Preference Optimisation: DPO plus an NLL term on the chosen answer."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class RPOLoss(Objective):
    """RPO: DPO + α · per-token NLL of the chosen answer.

    Paper: Pang et al. 2024, "Iterative Reasoning Preference Optimization"
    (https://arxiv.org/abs/2404.19733).

    Formula: ``loss = -log σ(β·h) + α·(-logp(y_w) / |y_w|)``, ``h`` as in DPO, |y_w| in tokens.

    Intuition: DPO can lower the likelihood of *both* answers as long as the margin grows; the NLL term
    keeps the chosen (correct) answer's likelihood up, which matters when the metric is the chosen
    answer's own log-likelihood (acc / acc_norm).

    The NLL is averaged per sequence and then over the batch (the paper's per-example form); TRL's
    ``rpo_alpha`` weighs every chosen token of the batch equally instead.

    Usual ranges: α ∈ [0.1, 1] (paper: 1), β ∈ [0.01, 0.5]. Defaults: α = 1, β = 0.1 (DPO's).

    Args:
        beta: inverse temperature β of the DPO term.
        alpha: α, weight of the per-token NLL of the chosen answer.
        norm: length unit of the DPO log-ratios (``sum`` is the paper's); the NLL is always per token.
    """

    needs_reference = True
    input_kind = InputKind.PAIR

    def __init__(self, *, beta: float = 0.1, alpha: float = 1.0, norm: Norm = "sum") -> None:
        super().__init__()
        name = type(self).__name__
        Fn.check_positive(beta, "beta", name)
        Fn.check_non_negative(alpha, "alpha", name)
        Fn.check_norm(norm, name)
        self.beta = beta
        self.alpha = alpha
        self.norm = norm

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """RPO loss of pairs (column 0 chosen), shapes (B, 2); needs ``ref_logps``.

        Metrics add ``nll`` (the chosen answer's per-token NLL) and ``loss/pref``.
        """
        name = type(self).__name__
        Fn.check_k(batch, 2, name)
        rewards = self.beta * Fn.log_ratios(batch, self.norm, name)  # (B, 2)
        pref = Fn.sigmoid_loss(rewards[:, 0] - rewards[:, 1]).mean()
        nll = Fn.chosen_nll_per_token(batch).mean()
        metrics = Fn.pair_metrics(rewards[:, 0], rewards[:, 1])
        metrics.update({"nll": nll.detach(), "loss/pref": pref.detach()})
        return pref + self.alpha * nll, metrics

    def extra_repr(self) -> str:
        return f"beta={self.beta}, alpha={self.alpha}, norm={self.norm!r}"
