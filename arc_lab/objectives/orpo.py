"""Odds-Ratio Preference Optimisation (reference-free, SFT + odds-ratio term)."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective

#: Upper clamp on the mean log-prob before ``log(1 - p)``: p = 1 exactly would give log-odds = +inf.
_MAX_MEAN_LOGP = -1e-6


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` for ``p = exp(mean_logp)``, computed as ``m - log(-expm1(m))``."""
    m = mean_logp.clamp(max=_MAX_MEAN_LOGP)
    return m - torch.log(-torch.expm1(m))


class ORPOLoss(Objective):
    """ORPO: NLL of the chosen answer minus λ · log-sigmoid of the log odds ratio.

    Paper: Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model"
    (https://arxiv.org/abs/2403.07691).

    Formula: ``loss = -logp(y_w)/|y_w| - λ·log σ(log odds(y_w) - log odds(y_l))``,
    ``odds(y) = p/(1-p)``, ``p = exp(logp(y)/|y|)`` (mean token log-prob).

    Intuition: one stage instead of SFT-then-DPO: the NLL term does SFT while the odds-ratio term
    mildly penalises the rejected answer; the odds (not the probability) ratio keeps the penalty
    from collapsing the rejected answer's likelihood.

    Numerics: the mean log-prob is clamped to ≤ -1e-6 before ``log(1-p)`` (p = 1 would make the odds
    infinite); this only matters for answers the model already predicts with probability ~1.

    Usual ranges: λ ∈ [0.05, 1] (paper and TRL default: 0.1).

    Args:
        lam: λ, weight of the odds-ratio term (``lambda`` is reserved in Python).
        norm: length unit of the log-prob inside the odds; ``token`` (default) is the paper's. The NLL
            term is always per token.
    """

    needs_reference = False
    input_kind = InputKind.PAIR

    def __init__(self, *, lam: float = 0.1, norm: Norm = "token") -> None:
        super().__init__()
        Fn.check_non_negative(lam, "lam", type(self).__name__)
        Fn.check_norm(norm, type(self).__name__)
        self.lam = lam
        self.norm = norm

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ORPO loss of pairs (column 0 chosen), shapes (B, 2); ``ref_logps`` is ignored.

        Rewards in the metrics are ``λ·logp/|y|`` (TRL's convention); also ``log_odds_ratio``,
        ``nll`` and ``loss/pref``.
        """
        Fn.check_k(batch, 2, type(self).__name__)
        mean_logps = batch.normalized(batch.logps, self.norm)  # (B, 2)
        odds = log_odds(mean_logps)
        ratio = odds[:, 0] - odds[:, 1]
        pref = Fn.sigmoid_loss(ratio).mean()
        nll = Fn.chosen_nll_per_token(batch).mean()
        metrics = Fn.pair_metrics(self.lam * mean_logps[:, 0], self.lam * mean_logps[:, 1])
        metrics.update(
            {"log_odds_ratio": ratio.detach().mean(), "nll": nll.detach(), "loss/pref": pref.detach()}
        )
        return nll + self.lam * pref, metrics

    def extra_repr(self) -> str:
        return f"lam={self.lam}, norm={self.norm!r}"
