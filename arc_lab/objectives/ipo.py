"""Identity Preference Optimisation."""

from __future__ import annotations

import torch

from arc_lab.objectives import functional as Fn
from arc_lab.objectives.base import AnswerLogps, InputKind, Norm, Objective


class IPOLoss(Objective):
    """IPO: squared regression of the log-ratio margin onto 1/(2τ); per-token averaged by default (TRL).

    Paper: Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences" (https://arxiv.org/abs/2310.12036).

    Formula (the paper's eq. 17, on sequence log-ratios): ``loss = (h - 1/(2τ))²``,
    ``h = [logp(y_w)-ref(y_w)] - [logp(y_l)-ref(y_l)]`` (summed over the answer's tokens), i.e.
    ``norm="sum"``. This class's default ``norm="token"`` computes instead
    ``loss = (h̄ - 1/(2τ))²``, ``h̄ = [logp(y_w)-ref(y_w)]/|y_w| - [logp(y_l)-ref(y_l)]/|y_l|``:
    each answer's log-ratio divided by its token count before the difference. That averaging is not
    in the paper's written formula; it is TRL's choice (``DPOTrainer``, ``loss_type="ipo"``, whose
    comment says the IPO authors confirmed their reported results used it), so the target margin
    does not grow with answer length.

    Intuition: DPO's logistic loss keeps pushing the margin to infinity on deterministic preferences;
    IPO's squared loss has a finite target margin 1/(2τ), so τ acts as a real regulariser (larger τ,
    smaller target margin).

    Usual ranges: τ ∈ [0.01, 1] (often passed as "beta"); default 0.1 (TRL's ``beta``), a target margin
    of 5 nats per token with ``norm="token"``, 5 nats per answer with ``norm="sum"``.

    Args:
        tau: τ, regularisation strength; the target margin is 1/(2τ).
        norm: length unit the log-ratios are divided by; ``token`` (default) is TRL's form, ``sum``
            the paper's written formula.
    """

    needs_reference = True
    input_kind = InputKind.PAIR

    def __init__(self, *, tau: float = 0.1, norm: Norm = "token") -> None:
        super().__init__()
        Fn.check_positive(tau, "tau", type(self).__name__)
        Fn.check_norm(norm, type(self).__name__)
        self.tau = tau
        self.norm = norm

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """IPO loss of pairs (column 0 chosen), shapes (B, 2); needs ``ref_logps``.

        Metrics report ``τ·h̄`` components as rewards (TRL's convention).
        """
        name = type(self).__name__
        Fn.check_k(batch, 2, name)
        ratios = Fn.log_ratios(batch, self.norm, name)  # (B, 2)
        margin = ratios[:, 0] - ratios[:, 1]
        loss = ((margin - 1 / (2 * self.tau)) ** 2).mean()
        return loss, Fn.pair_metrics(self.tau * ratios[:, 0], self.tau * ratios[:, 1])

    def extra_repr(self) -> str:
        return f"tau={self.tau}, norm={self.norm!r}"
