"""Is the model that training produced usable? Checked before every checkpoint save and at the end of a run.

The loop's per-step guard sees the loss and gradient *before* each update; the update of the last step (and of
any step before a save) is only seen here, on the weights it produced. :func:`check_model` raises when

* **non-finite weights**: a trainable parameter holds NaN or inf;
* **non-finite outputs**: the weights are finite but a forward pass on a training example gives NaN/inf
  logits (weights so large that activations overflow: ``lr=1e30`` does this in one step);
* **collapse**: the model's next-token logits are the same at every position of that example, i.e. its
  output no longer depends on its input.

The collapse criterion has no tuned threshold. Different positions of one sequence have different contexts
(prefixes of different lengths), so a model that reads its input, even a random one, gives different logits
there; a model whose logits are *bit for bit* equal at every position computes the same hidden state whatever
the input and cannot rank answers at all (``lr=1e6`` collapses tiny Llama to all-zero logits: every token
ln(V) nats, gradient exactly 0). Exact equality cannot flag a working model; its limit is the other way: a
model that is collapsed up to rounding noise (hidden states equal but for the last bits) passes.

The probe runs in eval mode without gradients: it draws no random numbers, so checking changes nothing in
the run (resume stays bitwise exact).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from arc_lab.train.batching import collate
from arc_lab.train.forward import autocast_ctx, split_lm


class TrainingDiverged(RuntimeError):
    """The loss, gradient, weights or outputs became non-finite; the message says where and what to try."""


class ModelCollapsed(TrainingDiverged):
    """The model's output no longer depends on its input (see the module docstring for the criterion)."""


def nonfinite_parameters(model: nn.Module, trainable_only: bool = True) -> list[str]:
    """Names of the (trainable) parameters that hold a NaN or inf."""
    return [
        name
        for name, p in model.named_parameters()
        if (p.requires_grad or not trainable_only) and not bool(torch.isfinite(p).all())
    ]


def probe_logits(model: nn.Module, setup) -> torch.Tensor:
    """Next-token logits (P, V) at every real position of the first training row, in eval mode.

    Runs under the training precision (bf16 autocast or fp32), without gradients.
    """
    batch = collate(setup.dataset, [0], setup.pad_id)
    decoder, head = split_lm(model)
    device = next(model.parameters()).device
    real = batch.attention_mask[0].bool()
    ids = batch.input_ids[0:1, real].to(device)  # (1, P): the row's real tokens (right padding dropped)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast_ctx(device, setup.optim.precision):
            hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state[0]  # (P, H)
            return head(hidden).float()  # (P, V)
    finally:
        model.train(was_training)


def check_model(model: nn.Module, setup, *, step: int, where: str) -> None:
    """Raise if the weights after ``step`` optimizer steps are unusable (non-finite or collapsed).

    Args:
        model: the model the stepper trains.
        setup: the :class:`~arc_lab.train.setup.TrainSetup` (data, pad id, precision).
        step: optimizer steps done (for the message).
        where: what the caller will not do because of a failure (``"not saved"``...), with the last good
            checkpoint and hints; appended to the message.

    Raises:
        TrainingDiverged: non-finite parameters or logits.
        ModelCollapsed: logits identical at every position of the probe.
    """
    bad = nonfinite_parameters(model)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise TrainingDiverged(
            f"training diverged: after step {step} the parameters {bad[:3]}{more} hold NaN/inf. {where}"
        )
    logits = probe_logits(model, setup)
    if not bool(torch.isfinite(logits).all()):
        raise TrainingDiverged(
            f"training diverged: after step {step} the weights are finite but the model's logits on a "
            f"training example are NaN/inf (activations overflow). {where}"
        )
    if logits.shape[0] >= 2 and bool((logits == logits[:1]).all()):
        logp = logits[0].log_softmax(-1)
        entropy = float(-(logp.exp() * logp).sum())
        raise ModelCollapsed(
            f"training collapsed: after step {step} the model gives the same next-token logits at all "
            f"{logits.shape[0]} positions of a training example (its output ignores its input; entropy "
            f"{entropy:.4f} nats, uniform over the vocabulary = ln {logits.shape[1]} = "
            f"{math.log(logits.shape[1]):.4f}). {where}"
        )
