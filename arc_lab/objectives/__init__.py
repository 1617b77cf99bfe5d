"""Training objectives, one per module, and their registry.

``OBJECTIVES`` maps the config name (``objective.name`` and ``conf/objective/<name>.yaml``) to the loss
class; the training loop reads only the class declarations ``needs_reference`` and ``input_kind``.
"""

from __future__ import annotations

import inspect
from typing import Any

from arc_lab.objectives.base import AnswerLogps, InputKind, Objective
from arc_lab.objectives.cdpo import CDPOLoss
from arc_lab.objectives.clm import CLMLoss
from arc_lab.objectives.cpo import CPOLoss
from arc_lab.objectives.dpo import DPOLoss
from arc_lab.objectives.dpo_norm import DPONormLoss
from arc_lab.objectives.hinge import HingeLoss
from arc_lab.objectives.ipo import IPOLoss
from arc_lab.objectives.kto import KTOLoss
from arc_lab.objectives.listwise_dpo import ListwiseDPOLoss
from arc_lab.objectives.listwise_simpo import ListwiseSimPOLoss
from arc_lab.objectives.orpo import ORPOLoss
from arc_lab.objectives.robust_dpo import RobustDPOLoss
from arc_lab.objectives.rpo import RPOLoss
from arc_lab.objectives.sft import SFTLoss
from arc_lab.objectives.simpo import SimPOLoss

OBJECTIVES: dict[str, type[Objective]] = {
    "clm": CLMLoss,
    "sft": SFTLoss,
    "dpo": DPOLoss,
    "cdpo": CDPOLoss,
    "robust_dpo": RobustDPOLoss,
    "ipo": IPOLoss,
    "hinge": HingeLoss,
    "dpo_norm": DPONormLoss,
    "rpo": RPOLoss,
    "simpo": SimPOLoss,
    "cpo": CPOLoss,
    "orpo": ORPOLoss,
    "listwise_dpo": ListwiseDPOLoss,
    "listwise_simpo": ListwiseSimPOLoss,
    "kto": KTOLoss,
}


def objective_params(cls: type[Objective]) -> list[str]:
    """Names of the keyword parameters of ``cls``'s constructor (the objective's config fields)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def build_objective(name: str, **params: Any) -> Objective:
    """Instantiate the registered objective ``name`` with its keyword parameters.

    Raises:
        ValueError: ``name`` is not registered (the message lists the registered names), or a parameter
            is not accepted (the message names ``objective.<param>`` and the accepted ones).
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; registered objectives: {sorted(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    accepted = objective_params(cls)
    for key in params:
        if key not in accepted:
            raise ValueError(
                f"objective.{key}: not a parameter of objective {name!r} ({cls.__name__}); "
                f"accepted: {accepted or 'none'}"
            )
    return cls(**params)


__all__ = ["OBJECTIVES", "AnswerLogps", "InputKind", "Objective", "build_objective", "objective_params"]
