"""Contrastive Preference Optimisation (reference-free DPO plus an NLL term)."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class CPOLoss(Objective):
    """CPO: reference-free DPO-style logistic loss + α · NLL of the chosen answer.

    Paper: Xu et al. 2024, "Contrastive Preference Optimization: Pushing the Boundaries of LLM
    Performance in Machine Translation" (https://arxiv.org/abs/2401.08417).

    Formula: ``loss = -log σ(β·(logp(y_w) - logp(y_l))) + α·(-logp(y_w)/|y_w|)``, |y_w| in tokens.

    Intuition: DPO with a uniform reference (which drops out of the ratio, so no reference forward);
    the NLL term keeps the policy close to the preferred data in place of the KL anchor.

    The NLL is averaged per sequence then over the batch; TRL weighs every chosen token equally.
    With ``norm="token"``, ``alpha=0`` and a margin this would be SimPO: use ``simpo`` for that.

    Usual ranges: β ∈ [0.05, 0.5] (paper/TRL 0.1), α ∈ [0, 1] (TRL ``cpo_alpha`` 1).

    Args:
        beta: inverse temperature β of the reference-free reward.
        alpha: α, weight of the per-token NLL of the chosen answer.
        norm: length unit of the preference-term log-probs (``sum`` is the paper's).
    """

    needs_reference = False
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
        """CPO loss of pairs (column 0 chosen), shapes (B, 2); ``ref_logps`` is ignored.

        Metrics add ``nll`` (chosen per-token NLL) and ``loss/pref``.
        """
        Fn.check_k(batch, 2, type(self).__name__)
        rewards = self.beta * batch.normalized(batch.logps, self.norm)  # (B, 2)
        pref = Fn.sigmoid_loss(rewards[:, 0] - rewards[:, 1]).mean()
        nll = Fn.chosen_nll_per_token(batch).mean()
        metrics = Fn.pair_metrics(rewards[:, 0], rewards[:, 1])
        metrics.update({"nll": nll.detach(), "loss/pref": pref.detach()})
        return pref + self.alpha * nll, metrics

    def extra_repr(self) -> str:
        return f"beta={self.beta}, alpha={self.alpha}, norm={self.norm!r}"
