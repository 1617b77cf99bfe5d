"""Mismatched pairs (``needs_mismatched``, KTO's KL term): the dataset TRL builds, and what the loop attaches."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from helpers import tiny_model

from arc_lab.config import LoraConfig, OptimConfig
from arc_lab.data.builders import ListExample
from arc_lab.objectives.base import InputKind
from arc_lab.objectives.kto import KTOLoss
from arc_lab.train.args import Runtime, StageArgs
from arc_lab.train.batching import tokenize_examples
from arc_lab.train.loop import train
from arc_lab.train.mismatched import mismatched_dataset
from arc_lab.train.reference import compute_reference_logps

LISTS = [
    ListExample(
        f"Question: Which gas is number {i}?\nAnswer:",
        (f" oxygen {i}", " iron" + " filings" * i, " neon"),
        i % 3,
        f"q{i}",
        "t",
    )
    for i in range(5)
]
# Summed answer log-probs of the same rows, computed in another batch (other padding and GEMM shapes):
# fp32 rounding of a tiny model's log-softmax is ~1e-6 per token, and answers have <= 12 tokens.
LOGP_ROUNDING = 1e-4


def test_each_prompt_gets_the_previous_examples_answers(smol_tokenizer):
    ds = tokenize_examples(smol_tokenizer, LISTS, InputKind.LIST, seq_len=64)
    mm = mismatched_dataset(ds)
    assert len(mm) == len(ds) and mm.kind is ds.kind and mm.truncated == 0
    for i, (ex, got) in enumerate(zip(ds.examples, mm.examples, strict=True)):
        src = ds.examples[i - 1]  # example 0 takes the last one's answers (TRL's +1 offset)
        assert got.prompt == ex.prompt
        assert (got.answers, got.chars, got.nbytes, got.gold) == (
            src.answers,
            src.chars,
            src.nbytes,
            src.gold,
        )
        assert got.answers != ex.answers
    assert mm.fingerprint() != ds.fingerprint()  # its own reference-cache key


def test_prompt_is_cut_from_the_left_to_fit_the_other_answers(smol_tokenizer):
    ds = tokenize_examples(smol_tokenizer, LISTS, InputKind.LIST, seq_len=16)
    mm = mismatched_dataset(ds)
    assert mm.truncated >= 1
    for ex, got in zip(ds.examples, mm.examples, strict=True):
        assert len(got.prompt) + max(len(a) for a in got.answers) <= 16
        assert ex.prompt[len(ex.prompt) - len(got.prompt) :] == got.prompt  # a suffix: cut from the left


def test_one_example_cannot_be_mismatched(smol_tokenizer):
    ds = tokenize_examples(smol_tokenizer, LISTS[:1], InputKind.LIST, seq_len=64)
    with pytest.raises(ValueError, match="at least 2 training examples"):
        mismatched_dataset(ds)


class Recorder(KTOLoss):
    """KTO that keeps what the loop attached (the loop reads only the declarations, never a name)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def forward(self, batch):
        self.seen.append(batch.mismatched)
        return super().forward(batch)


@pytest.mark.parametrize("precompute", [True, False], ids=["cached_reference", "adapter_off"])
def test_loop_attaches_the_mismatched_logps(smol_tokenizer, tmp_path, caplog, precompute):
    tok = smol_tokenizer
    model = tiny_model("tiny_mistral", tok)
    init = copy.deepcopy(model)
    objective = Recorder()
    with caplog.at_level(logging.INFO, logger="arc_lab.train"):
        result = train(
            model,
            tok,
            objective,
            LISTS,
            StageArgs(
                optim=OptimConfig(lr=1e-3, max_steps=1, batch_size=len(LISTS), log_every=1, precision="fp32"),
                lora=LoraConfig(r=4, alpha=8, dropout=0.0),
                seq_len=64,
                precompute_reference=precompute,
            ),
            out_dir=tmp_path / "run",
            runtime=Runtime(cache_dir=tmp_path / "cache", progress=False),
        )
    (mm,) = objective.seen  # one step of one micro-batch holding every example
    assert mm is not None and not mm.logps.requires_grad
    # the policy before its first update (LoRA B = 0) is the init model: its log-probs of the
    # mismatched rows, in the order the stream drew the examples
    ds = tokenize_examples(tok, LISTS, InputKind.LIST, seq_len=64)
    want = compute_reference_logps(init, mismatched_dataset(ds), batch_size=2, pad_id=tok.pad_token_id)
    got = mm.logps.detach().cpu()
    rows = [int((want - g).abs().amax(1).argmin()) for g in got]
    assert sorted(rows) == list(range(len(LISTS)))
    assert torch.allclose(got, want[rows], atol=LOGP_ROUNDING)
    assert torch.allclose(mm.ref_logps.cpu(), want[rows], atol=LOGP_ROUNDING)
    assert result.last["kl"] <= LOGP_ROUNDING  # policy == reference: z0 = max(0, ~0)
    if precompute:  # the mismatched rows have their own entry in the reference cache
        assert len(list((tmp_path / "cache" / "reflogps").glob("*.pt"))) == 2
        assert "mismatched pairs" in caplog.text and "reference: cache miss" in caplog.text
    else:
        assert not (tmp_path / "cache" / "reflogps").exists() or not any(
            (tmp_path / "cache" / "reflogps").glob("*.pt")
        )
