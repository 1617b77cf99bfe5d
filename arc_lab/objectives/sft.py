"""Supervised fine-tuning loss on the gold answer's tokens."""

from __future__ import annotations

from arc_lab.objectives.base import InputKind
from arc_lab.objectives.clm import CLMLoss


class SFTLoss(CLMLoss):
    """Negative log-likelihood of the gold answer given the question (prompt tokens masked).

    Paper: supervised fine-tuning / instruction tuning (e.g. Wei et al. 2022, "Finetuned Language Models
    Are Zero-Shot Learners"; Ouyang et al. 2022 for the SFT stage before preference learning).

    Formula: ``loss = -Σ_b logp(y_b | x_b) / Σ_b |y_b|`` (mean NLL per answer token over the batch).

    Intuition: raises the likelihood of the gold answer text exactly as the harness scores it
    (answer-only continuation); token-weighted over the batch, so long answers weigh more in total.
    The maths is CPT's token-weighted NLL; only the input differs: the batch's one "answer" is the gold
    answer after its prompt (:attr:`InputKind.ANSWER`) instead of a whole packed block.

    No hyper-parameters. Input: K=1, column 0 is the gold answer.
    """

    input_kind = InputKind.ANSWER
