"""Listwise, reference-free SimPO over all choices of a question."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class ListwiseSimPOLoss(Objective):
    """Listwise SimPO: softmax cross-entropy of length-normalised log-probs, gold must win by γ.

    Paper: extends Meng et al. 2024, "SimPO" (https://arxiv.org/abs/2405.14734) from one rejected
    answer to all distractors (a margin softmax, as in additive-margin softmax, Wang et al. 2018).

    Formula, per question with valid choices V (``batch.mask``), gold g (``batch.gold``),
    ``s_k = β · logp(y_k) / |y_k|_norm`` and ``γ = gamma_beta_ratio · β``::

        loss = -log( exp(s_g) / (exp(s_g) + Σ_{k∈V, k≠g} exp(s_k + γ)) )
             = logsumexp(s_g, {s_k + γ}_{k∈V, k≠g}) - s_g

    i.e. γ is added to every competitor's score (equivalently subtracted from the gold's, inside the
    competition only). With K=2 this is exactly SimPO: ``-log σ(s_w - s_l - γ)``.

    Intuition: the model is trained on the same quantity acc_norm ranks by (``norm="char"``, the
    default: log-prob per character of the answer without its leading space), against every
    distractor at once, and no reference model is needed.

    Usual ranges: as SimPO, β ∈ [2, 10], γ/β ∈ [0.1, 0.8]; defaults β = 2.0, γ/β = 0.5 (as
    :class:`SimPOLoss`). Per-character log-probs are ~3-5x smaller than per-token ones, so a β tuned
    for ``norm="token"`` may need scaling up by that factor.

    Args:
        beta: β, scale of the length-normalised score.
        gamma_beta_ratio: γ/β; the absolute margin is γ = gamma_beta_ratio · β (SimPO reference-code form).
        norm: length unit of the normalisation; ``char`` (default) matches acc_norm.
    """

    needs_reference = False
    input_kind = InputKind.LIST

    def __init__(self, *, beta: float = 2.0, gamma_beta_ratio: float = 0.5, norm: Norm = "char") -> None:
        super().__init__()
        name = type(self).__name__
        Fn.check_positive(beta, "beta", name)
        Fn.check_non_negative(gamma_beta_ratio, "gamma_beta_ratio", name)
        Fn.check_norm(norm, name)
        self.beta = beta
        self.gamma_beta_ratio = gamma_beta_ratio
        self.norm = norm

    @property
    def gamma(self) -> float:
        """The absolute margin γ = gamma_beta_ratio · β."""
        return self.gamma_beta_ratio * self.beta

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Listwise SimPO loss.

        Args:
            batch: (B, K) logps/lengths/mask with ``gold`` (B,); ``ref_logps`` is ignored.

        Returns:
            Scalar loss and the metrics of :func:`functional.list_metrics` on ``s`` (without γ).
        """
        competitors = Fn.check_list(batch, type(self).__name__)
        scores = self.beta * batch.normalized(batch.logps, self.norm)  # (B, K)
        shifted = scores + self.gamma * competitors.to(scores.dtype)  # γ on competitors only
        loss = Fn.list_cross_entropy(shifted, batch.gold, batch.mask.bool()).mean()
        return loss, Fn.list_metrics(scores, batch.gold, competitors)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma_beta_ratio={self.gamma_beta_ratio} (gamma={self.gamma}), norm={self.norm!r}"
