"""Per-choice log-likelihoods -> per-item predictions -> task metrics, exactly as lm-eval computes them.

Pure functions, shared by both backends (ours and ``lm_eval``), so the two can only differ in the
log-likelihoods themselves.

* ``acc``: ``argmax`` of the summed log-likelihoods.
* ``acc_norm``: ``argmax`` of ``ll / len(choice_text)`` in **characters** (Python ``len``, without the
  leading delimiter space): lm-eval's normalisation, not bytes and not tokens.
* ``acc_bytes``: ``argmax`` of ``ll / len(choice_text.encode("utf-8"))``.
* Non-finite log-likelihoods are refused (:func:`check_finite`): ``argmax`` over NaN picks the first choice,
  which would report a broken model as scoring chance-level accuracy.
* Ties go to the first index (``np.argmax``). Aggregates are means; stderrs are the closed-form
  ``sample_stddev / sqrt(n)`` with Bessel's correction (lm-eval's ``mean_stderr``), NaN for n < 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

METRICS = ("acc", "acc_norm", "acc_bytes")


class NonFiniteLogLikelihood(ValueError):
    """A choice's log-likelihood is NaN or inf: the model is broken; nothing is scored."""


def check_finite(
    task: str, item_id: str, doc_id: int, loglikelihoods: Sequence[float], choices: Sequence[str]
) -> None:
    """Refuse NaN/inf log-likelihoods, naming the task, item and choice.

    Raises:
        NonFiniteLogLikelihood: for the first non-finite value.
    """
    for j, ll in enumerate(loglikelihoods):
        if not math.isfinite(ll):
            text = choices[j] if j < len(choices) else "?"
            raise NonFiniteLogLikelihood(
                f"eval {task}: item {item_id!r} (doc {doc_id}) choice {j} ({text[:40]!r}) has log-likelihood "
                f"{ll}: the model's outputs are NaN/inf (a diverged model?); refusing to score it"
            )


def score_item(loglikelihoods: Sequence[float], choices: Sequence[str], gold: int) -> dict:
    """Predictions and 0/1 scores of one item.

    Args:
        loglikelihoods: summed log-likelihood of each choice, in choice order.
        choices: the choice texts (no delimiter).
        gold: 0-based index of the correct choice.

    Returns:
        ``pred``, ``pred_norm``, ``pred_bytes`` (ints) and ``acc``, ``acc_norm``, ``acc_bytes`` (0.0 / 1.0).
    """
    if len(loglikelihoods) != len(choices):
        raise ValueError(f"{len(loglikelihoods)} log-likelihoods for {len(choices)} choices")
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    chars = np.array([float(len(c)) for c in choices])
    nbytes = np.array([float(len(c.encode("utf-8"))) for c in choices])
    pred, pred_norm, pred_bytes = (
        int(np.argmax(lls)),
        int(np.argmax(lls / chars)),
        int(np.argmax(lls / nbytes)),
    )
    return {
        "pred": pred,
        "pred_norm": pred_norm,
        "pred_bytes": pred_bytes,
        "acc": float(pred == gold),
        "acc_norm": float(pred_norm == gold),
        "acc_bytes": float(pred_bytes == gold),
    }


def mean_stderr(values: Sequence[float]) -> float:
    """lm-eval's ``mean_stderr``: ``sqrt(sum((x - mean)^2) / (n - 1)) / sqrt(n)``; NaN when n < 2."""
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def aggregate(samples: Sequence[dict]) -> dict:
    """Task metrics from per-item records (each with ``acc``, ``acc_norm``, ``acc_bytes``).

    Returns:
        ``acc``, ``acc_stderr``, ``acc_norm``, ``acc_norm_stderr``, ``acc_bytes``, ``acc_bytes_stderr``, ``n``.
    """
    if not samples:
        raise ValueError("no evaluated items to aggregate (is the eval split empty or limit=0?)")
    out: dict = {}
    for name in METRICS:
        vals = [float(s[name]) for s in samples]
        out[name] = sum(vals) / len(vals)
        out[f"{name}_stderr"] = mean_stderr(vals)
    out["n"] = len(samples)
    return out


def flat_metrics(metrics: dict) -> dict[str, float]:
    """W&B-friendly flat view: ``{"eval/<task>/acc": ..., "eval/<task>/acc_norm": ..., ...}``.

    Args:
        metrics: the ``metrics.json`` dict (``{task: {...}, "model_fingerprint": ...}``).
    """
    flat = {}
    for task, m in metrics.items():
        if not isinstance(m, dict) or "acc" not in m:  # model_fingerprint, backend, parity, lm_eval
            continue
        for key in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "acc_bytes", "n"):
            if key in m:
                flat[f"eval/{task}/{key}"] = m[key]
    for task, p in metrics.get("parity", {}).items():  # backend=both
        flat[f"eval/{task}/parity_max_abs_ll_diff"] = p["max_abs_ll_diff"]
        flat[f"eval/{task}/parity_acc_disagree"] = len(p["acc_disagree"]) + len(p["acc_norm_disagree"])
    return flat
