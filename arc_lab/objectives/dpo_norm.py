"""Length-normalised DPO."""

from __future__ import annotations

from arc_lab.objectives.base import Norm
from arc_lab.objectives.dpo import DPOLoss


class DPONormLoss(DPOLoss):
    """DPO on per-token averaged log-ratios (length-normalised DPO, "LN-DPO").

    Paper: Lambert et al. 2024, "Tulu 3: Pushing Frontiers in Open Language Model Post-Training"
    (https://arxiv.org/abs/2411.15124), whose final DPO recipe is this "dpo_norm" with β = 5; the
    length-normalised reward is motivated by SimPO (Meng et al. 2024, https://arxiv.org/abs/2405.14734).

    Formula: ``loss = -log σ(β·h̄)``,
    ``h̄ = [logp(y_w)-ref(y_w)]/|y_w| - [logp(y_l)-ref(y_l)]/|y_l|``.

    Intuition: summed log-ratios grow with answer length, so plain DPO can favour length; averaging per
    token removes that bias. Averaged ratios are ~|y| times smaller, hence the much larger β.

    Usual ranges: β ∈ [1, 10]; β ≈ 5 (Tulu 3 used 5).

    The maths is :class:`DPOLoss` with ``norm="token"``; this class only sets the paper's defaults.

    Args:
        beta: inverse temperature β of the averaged implicit reward.
        norm: length unit of the averaging; ``token`` (default) is the paper's.
    """

    def __init__(self, *, beta: float = 5.0, norm: Norm = "token") -> None:
        super().__init__(beta=beta, norm=norm)
