"""The shared loop: CPT learns, accumulation is exact, divergence stops cleanly, logging/eval/resume."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_model
from numerics import ADAM_RMS_TOL, adam_rms, check_losses

from arc_lab.config import OptimConfig
from arc_lab.data.builders import PreferencePair
from arc_lab.objectives import build_objective
from arc_lab.objectives.base import AnswerLogps, InputKind, Objective
from arc_lab.objectives.clm import CLMLoss
from arc_lab.train.args import Runtime, StageArgs
from arc_lab.train.checkpoint import list_checkpoints
from arc_lab.train.health import ModelCollapsed, check_model
from arc_lab.train.loop import TrainingDiverged, train
from arc_lab.train.setup import prepare
from arc_lab.train.stepper import lr_lambda


class Recorder:
    def __init__(self):
        self.calls = []

    def log(self, metrics, step):
        self.calls.append((step, dict(metrics)))


def test_cpt_full_finetune_loss_goes_down_logs_evals_and_resumes(smol_tokenizer, blocks, tmp_path):
    logger, evals = Recorder(), []

    def eval_fn(model, step):
        assert not model.training
        evals.append(step)
        return {"eval/probe": float(step)}

    optim = OptimConfig(
        lr=3e-3,
        max_steps=6,
        batch_size=4,
        warmup_ratio=0.0,
        log_every=2,
        scheduler="constant",
        precision="fp32",
    )
    run = dict(
        args=StageArgs(optim=optim, seq_len=32, lora=None, eval_every=4),
        out_dir=tmp_path,
        runtime=Runtime(progress=False, logger=logger, eval_fn=eval_fn),
    )
    result = train(tiny_model("tiny_mistral", smol_tokenizer), smol_tokenizer, CLMLoss(), blocks, **run)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.3, losses
    assert all(p.requires_grad for p in result.model.parameters())
    assert [s for s, _ in logger.calls] == [2, 4, 4, 6, 6] and evals == [4, 6]
    rec = logger.calls[0][1]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "epoch", "nll"} <= set(rec) and rec["lr"] == 3e-3
    assert rec["epoch"] == 1.0 and result.tokens_seen == 3 * blocks.numel()  # 3 epochs
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000006"]
    # rerunning a finished run resumes at its end: nothing is trained again
    again = train(tiny_model("tiny_mistral", smol_tokenizer), smol_tokenizer, CLMLoss(), blocks, **run)
    assert again.resumed_from == 6 and again.history == result.history
    for a, b in zip(again.model.parameters(), result.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="different run"):  # same out_dir, other data
        train(tiny_model("tiny_mistral", smol_tokenizer), smol_tokenizer, CLMLoss(), blocks[:4], **run)


def test_grad_accumulation_2x4_equals_batch_8(smol_tokenizer, tmp_path):
    pairs = [
        PreferencePair(f"Question: number {i}?\nAnswer:", f" yes {i}", f" no {i % 3}", f"q{i}", "t")
        for i in range(16)
    ]
    states = []
    for bs, accum in ((8, 1), (4, 2)):
        optim = OptimConfig(
            lr=1e-3,
            max_steps=2,
            batch_size=bs,
            grad_accum=accum,
            warmup_ratio=0.0,
            log_every=1,
            precision="fp32",
        )
        r = train(
            tiny_model("tiny_mistral", smol_tokenizer),
            smol_tokenizer,
            build_objective("simpo"),
            pairs,
            StageArgs(optim=optim, lora=None, seq_len=32),
            out_dir=tmp_path / str(bs),
            runtime=Runtime(progress=False),
        )
        states.append((r.model.state_dict(), [h["loss"] for h in r.history]))
    (a, la), (b, lb) = states
    check_losses(la, lb)
    assert adam_rms(a, b, [1e-3] * 2) < ADAM_RMS_TOL  # tests/numerics.py: not a max |dw| (Adam)


class NaNAfter(Objective):
    """Stand-in objective: CLM whose loss turns NaN at the ``bad``-th call."""

    input_kind = InputKind.PACKED

    def __init__(self, bad: int):
        super().__init__()
        self.calls, self.bad, self.clm = 0, bad, CLMLoss()

    def forward(self, batch: AnswerLogps):
        self.calls += 1
        loss, metrics = self.clm(batch)
        return (loss * float("nan") if self.calls >= self.bad else loss), metrics


def test_divergence_stops_and_keeps_last_good_checkpoint(smol_tokenizer, blocks, tmp_path):
    optim = OptimConfig(
        lr=1e-3, max_steps=6, batch_size=4, warmup_ratio=0.0, save_every=1, log_every=1, precision="fp32"
    )
    with pytest.raises(TrainingDiverged) as err:
        train(
            tiny_model("tiny_mistral", smol_tokenizer),
            smol_tokenizer,
            NaNAfter(bad=3),
            blocks,
            StageArgs(optim=optim, lora=None, seq_len=32),
            out_dir=tmp_path,
            runtime=Runtime(keep_checkpoints=2, progress=False),
        )
    msg = str(err.value)
    assert "step 3" in msg and "loss = nan" in msg and "lower stage.optim.lr" in msg and "step-000002" in msg
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000001", "step-000002"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_schedules():
    lin, cos, const = (lr_lambda(s, 10, 0.2) for s in ("linear", "cosine", "constant"))
    assert [lin(i) for i in (0, 1, 2, 6, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert cos(2) == 1.0 and abs(cos(6) - 0.5) < 1e-12 and abs(cos(10)) < 1e-12
    assert const(1) == 0.5 and const(9) == 1.0


def test_bf16_autocast_keeps_fp32_master_weights(smol_tokenizer, blocks, tmp_path):
    optim = OptimConfig(lr=1e-3, max_steps=1, batch_size=4, warmup_ratio=0.0, precision="bf16")
    r = train(
        tiny_model("tiny_mistral", smol_tokenizer),
        smol_tokenizer,
        CLMLoss(),
        blocks,
        StageArgs(optim=optim, lora=None, seq_len=32),
        out_dir=tmp_path,
        runtime=Runtime(progress=False),
    )
    assert 10 < r.history[0]["loss"] < 12  # ~ln(49152) for a random model, computed under bf16 autocast
    assert all(p.dtype == torch.float32 for p in r.model.parameters())


# ------------------------------------------------------------------ the weights the last update produced
@pytest.mark.parametrize(
    "lr, steps, error",
    [
        (
            1e30,
            1,
            TrainingDiverged,
        ),  # one update: the loss of that step was finite, the weights are not usable
        (1e6, 6, ModelCollapsed),  # logits constant (all 0: ln V nats per token), grad norm exactly 0
    ],
)
def test_a_broken_last_update_fails_and_saves_nothing(smol_tokenizer, blocks, tmp_path, lr, steps, error):
    optim = OptimConfig(lr=lr, max_steps=steps, batch_size=4, warmup_ratio=0.0, log_every=1, precision="fp32")
    with pytest.raises(error) as err:
        train(
            tiny_model("tiny_llama", smol_tokenizer),
            smol_tokenizer,
            CLMLoss(),
            blocks,
            StageArgs(optim=optim, lora=None, seq_len=32),
            out_dir=tmp_path,
            runtime=Runtime(progress=False),
        )
    msg = str(err.value)
    assert f"after step {steps}" in msg and "was not saved" in msg and "lower stage.optim.lr" in msg
    assert list_checkpoints(tmp_path) == [] and not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_check_model_criteria(smol_tokenizer, blocks):
    optim = OptimConfig(lr=1e-3, max_steps=1, batch_size=4, precision="fp32")
    model = tiny_model("tiny_llama", smol_tokenizer)
    setup = prepare(model, smol_tokenizer, CLMLoss(), blocks, StageArgs(optim=optim, seq_len=32))
    check_model(model, setup, step=0, where="")  # a random model reads its input: no false alarm
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}

    def restore():
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(weights[n])

    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(
        TrainingDiverged, match=r"parameters \['model.layers.1.mlp.up_proj.weight'\] hold NaN"
    ):
        check_model(model, setup, step=3, where="")
    restore()
    with torch.no_grad():  # finite weights whose products overflow float32 (max 3.4e38)
        model.lm_head.weight.fill_(1e38)
    with pytest.raises(TrainingDiverged, match="the weights are finite but the model's logits"):
        check_model(model, setup, step=3, where="")
    restore()
    with torch.no_grad():  # the final norm zeroes every hidden state: the output ignores the input
        model.model.norm.weight.zero_()
    with pytest.raises(ModelCollapsed, match=r"same next-token logits at all 32 positions .* ln 49152"):
        check_model(model, setup, step=3, where="")
    restore()
    check_model(model, setup, step=0, where="")
