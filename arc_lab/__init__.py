"""arc_lab: fine-tune causal LMs to rank multiple-choice science answers, scored exactly as lm-eval does.

Entry points: ``python -m arc_lab`` (Hydra app, see README.md) and ``python -m arc_lab.report``.
"""

__version__ = "0.1.0"
