"""Simple Preference Optimisation (reference-free, length-normalised, with a target margin)."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class SimPOLoss(Objective):
    """SimPO: logistic loss on the margin of length-normalised log-probs, minus a target margin γ.

    Paper: Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward"
    (https://arxiv.org/abs/2405.14734).

    Formula: ``loss = -log σ(β·logp(y_w)/|y_w| - β·logp(y_l)/|y_l| - γ)`` with ``γ = gamma_beta_ratio·β``.

    Parameterisation (a reproduction trap): γ is NOT passed as an absolute value. Like the reference
    SimPO code (``gamma_beta_ratio``), this class takes γ/β and computes γ = gamma_beta_ratio · β. TRL's
    CPO trainer and LLaMA-Factory take an absolute γ (``simpo_gamma``): convert with γ = ratio · β. There
    is no SFT term (TRL's ``cpo_alpha`` must be 0 to match).

    Intuition: the reward is the average per-token log-prob, the very quantity used to rank answers at
    generation/eval time, so no reference model is needed and length bias is removed; γ demands that
    the chosen answer win by a margin.

    Usual ranges: β ∈ [2, 10], γ/β ∈ [0.1, 0.8]. Paper: Mistral-7B-Base β=2.0, γ/β=0.8 (lr 3e-7);
    Mistral-7B-Instruct β=2.5, γ/β=0.1 (lr 5e-7). Very sensitive to the learning rate. Defaults: β = 2.0,
    γ/β = 0.5 (γ = 1.0; arc_lab's recipe, inside the paper's range; the SimPO reference code's own default
    is γ/β = 0.25).

    Args:
        beta: β, scale of the length-normalised reward.
        gamma_beta_ratio: γ/β; the absolute target margin is γ = gamma_beta_ratio · β.
        norm: length unit of the normalisation; ``token`` (default) is the paper's per-token average.
    """

    needs_reference = False
    input_kind = InputKind.PAIR

    def __init__(self, *, beta: float = 2.0, gamma_beta_ratio: float = 0.5, norm: Norm = "token") -> None:
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
        """The absolute target margin γ = gamma_beta_ratio · β."""
        return self.gamma_beta_ratio * self.beta

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """SimPO loss of pairs (column 0 chosen), shapes (B, 2); ``ref_logps`` is ignored.

        Rewards in the metrics are ``β·logp/|y|`` (without γ).
        """
        Fn.check_k(batch, 2, type(self).__name__)
        rewards = self.beta * batch.normalized(batch.logps, self.norm)  # (B, 2)
        loss = Fn.sigmoid_loss(rewards[:, 0] - rewards[:, 1] - self.gamma).mean()
        return loss, Fn.pair_metrics(rewards[:, 0], rewards[:, 1])

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma_beta_ratio={self.gamma_beta_ratio} (gamma={self.gamma}), norm={self.norm!r}"
