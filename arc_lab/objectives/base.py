"""What every objective receives and declares.

All objectives, from CPT's causal-LM loss to listwise preference losses, see the same structure:
per-sequence *summed* answer log-probabilities, shaped ``(B, K)`` where K is the number of candidate
answers of one prompt (K=1 for packed text / SFT, K=2 for a pair with the chosen answer at 0,
K=#choices for a list with the gold answer at ``gold``). Lengths in tokens, characters and bytes come
along, so that length normalisation is one explicit, shared axis (``norm``), and the character unit is
the one acc_norm uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Literal

import torch
from torch import nn

Norm = Literal["sum", "token", "char", "byte"]


class InputKind(str, Enum):
    """Which training data an objective consumes; the loop branches on this, never on a name."""

    PACKED = "packed"  # fixed-length blocks of text, loss on every token (CPT)
    ANSWER = "answer"  # (prompt, gold answer): loss on answer tokens only (SFT)
    PAIR = "pair"  # (prompt, chosen, rejected): K=2, chosen at index 0
    LIST = "list"  # (prompt, all choices, gold index): K = number of choices


@dataclass
class AnswerLogps:
    """Summed log-probabilities of candidate answers, plus their lengths.

    Attributes:
        logps: (B, K) policy log p(answer_k | prompt), summed over the answer's tokens.
        tokens: (B, K) number of answer tokens (float).
        chars: (B, K) number of characters of the answer text *without* the leading space (acc_norm's unit).
        bytes: (B, K) UTF-8 bytes of the answer text without the leading space.
        mask: (B, K) bool, True where a choice exists (lists may have 3..5 choices).
        gold: (B,) long, index of the preferred answer (0 for pairs).
        ref_logps: (B, K) the same under the reference model, or None when not needed.
        mismatched: for objectives that declare ``needs_mismatched``: the same fields for every prompt
            of the batch paired with ANOTHER example's answers (policy ``logps`` without gradient, and
            ``ref_logps`` when the objective also ``needs_reference``); None otherwise.
    """

    logps: torch.Tensor
    tokens: torch.Tensor
    chars: torch.Tensor
    bytes: torch.Tensor
    mask: torch.Tensor
    gold: torch.Tensor
    ref_logps: torch.Tensor | None = None
    mismatched: AnswerLogps | None = None

    def normalized(self, logps: torch.Tensor, norm: Norm) -> torch.Tensor:
        """``logps`` divided by the length unit ``norm`` (``sum`` leaves it as is)."""
        if norm == "sum":
            return logps
        denom = {"token": self.tokens, "char": self.chars, "byte": self.bytes}[norm]
        return logps / denom.clamp_min(1)


class Objective(nn.Module):
    """Base class: subclasses set the declarations and implement ``forward``.

    Declarations (the loop reads these, never the objective's name):

    * ``input_kind``: which training data the objective consumes;
    * ``needs_reference``: attach reference log-probs (``batch.ref_logps``);
    * ``needs_mismatched``: attach ``batch.mismatched``, every prompt of the batch paired with another
      example's answers (TRL's KTO "KL dataset": example i's prompt with example i-1's answers), e.g.
      for KTO's KL reference point.

    ``forward(batch: AnswerLogps) -> (loss, metrics)`` returns a scalar loss (mean over the batch) and a
    dict of detached scalar tensors to log (e.g. ``rewards/margin``, ``accuracy``).
    """

    needs_reference: ClassVar[bool] = False
    needs_mismatched: ClassVar[bool] = False
    input_kind: ClassVar[InputKind]

    def forward(self, batch: AnswerLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError
