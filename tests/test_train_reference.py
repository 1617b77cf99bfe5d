"""Reference log-prob cache: hit, invalidation on data/model change, damaged files never used silently."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import pytest
import torch
from helpers import tiny_model
from numerics import check_losses

from arc_lab.config import LoraConfig, OptimConfig
from arc_lab.data.builders import ListExample, PreferencePair
from arc_lab.models import model_fingerprint
from arc_lab.objectives import build_objective
from arc_lab.objectives.base import InputKind
from arc_lab.train.args import Runtime, StageArgs
from arc_lab.train.batching import tokenize_examples
from arc_lab.train.loop import train
from arc_lab.train.reference import cached_reference_logps, compute_reference_logps

PAIRS = [
    PreferencePair(f"Question: Which gas is number {i}?\nAnswer:", f" oxygen {i}", " iron", f"q{i}", "t")
    for i in range(6)
]


def lookup(model, tok, pairs, cache):
    ds = tokenize_examples(tok, pairs, InputKind.PAIR, seq_len=64)
    return cached_reference_logps(
        model, tok, ds, model_fp=model_fingerprint(model), cache_dir=cache, batch_size=4
    )


def test_hit_and_invalidation(smol_tokenizer, tmp_path, caplog):
    model = tiny_model("tiny_mistral", smol_tokenizer)
    with caplog.at_level(logging.INFO, logger="arc_lab.train.reference"):
        first, s1 = lookup(model, smol_tokenizer, PAIRS, tmp_path)
        again, s2 = lookup(model, smol_tokenizer, PAIRS, tmp_path)
        changed, s3 = lookup(model, smol_tokenizer, PAIRS[:5] + [replace(PAIRS[5], chosen=" neon")], tmp_path)
        other, s4 = lookup(
            tiny_model("tiny_mistral", smol_tokenizer, seed=1), smol_tokenizer, PAIRS, tmp_path
        )
    assert s1.startswith("miss") and s2 == "hit " + s1.split()[1] and torch.equal(first, again)
    assert first.shape == (6, 2) and (first < 0).all()
    assert s3.startswith("miss") and "differs in ['data'" in caplog.text
    assert s4.startswith("miss") and "differs in ['model']" in caplog.text
    assert not torch.equal(other, first)
    assert "reference cache: hit" in caplog.text and "reference cache: miss" in caplog.text
    assert not list((tmp_path / "reflogps").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["values", "garbage", "shape"])
def test_damaged_cache_is_recomputed_loudly(smol_tokenizer, tmp_path, caplog, damage):
    model = tiny_model("tiny_mistral", smol_tokenizer)
    good, status = lookup(model, smol_tokenizer, PAIRS, tmp_path)
    path = tmp_path / "reflogps" / f"{status.split()[1]}.pt"
    if damage == "garbage":
        path.write_bytes(b"not a torch file")
    else:
        blob = torch.load(path, weights_only=True)
        blob["logps"] = blob["logps"] + 1.0 if damage == "values" else blob["logps"][:3]
        torch.save(blob, path)
    with caplog.at_level(logging.WARNING, logger="arc_lab.train.reference"):
        again, status2 = lookup(model, smol_tokenizer, PAIRS, tmp_path)
    assert status2.startswith("miss") and "reference cache: INVALID" in caplog.text
    assert torch.equal(again, good)
    assert lookup(model, smol_tokenizer, PAIRS, tmp_path)[1].startswith("hit")  # rewritten correctly


def test_full_finetune_dpo_uses_the_cache(smol_tokenizer, tmp_path):
    """Full fine-tuning has no frozen reference: train() precomputes it (miss), a rerun reuses it (hit).
    At step 1 the policy is the reference, so DPO's loss is log 2."""
    optim = OptimConfig(lr=1e-3, max_steps=1, batch_size=6, warmup_ratio=0.0, log_every=1, precision="fp32")
    runs = [
        train(
            tiny_model("tiny_mistral", smol_tokenizer),
            smol_tokenizer,
            build_objective("dpo"),
            PAIRS,
            StageArgs(optim=optim, lora=None, seq_len=64),
            out_dir=tmp_path / f"run{i}",
            runtime=Runtime(cache_dir=tmp_path / "cache", progress=False),
        )
        for i in range(2)
    ]
    assert runs[0].reference.startswith("cache miss") and runs[1].reference.startswith("cache hit")
    assert abs(runs[0].history[0]["loss"] - math.log(2)) < 1e-6
    assert runs[0].history[0]["loss"] == runs[1].history[0]["loss"]


def test_listwise_lora_cached_equals_adapter_off(smol_tokenizer, tmp_path):
    """Padded K (3 and 4 choices): the precomputed reference and the per-step adapter-off one agree."""
    lists = [
        ListExample(
            f"Question: Pick item {i}.\nAnswer:",
            tuple(f" choice {j}" for j in range(3 + i % 2)),
            i % 3,
            f"l{i}",
            "t",
        )
        for i in range(4)
    ]
    optim = OptimConfig(lr=1e-3, max_steps=2, batch_size=4, warmup_ratio=0.0, log_every=1, precision="fp32")
    losses = []
    for pre in (True, False):
        r = train(
            tiny_model("tiny_mistral", smol_tokenizer),
            smol_tokenizer,
            build_objective("listwise_dpo"),
            lists,
            StageArgs(
                optim=optim, lora=LoraConfig(r=4, alpha=8, dropout=0.0), seq_len=64, precompute_reference=pre
            ),
            out_dir=tmp_path / f"pre{pre}",
            runtime=Runtime(cache_dir=tmp_path / "cache", progress=False),
        )
        losses.append([h["loss"] for h in r.history])
    check_losses(losses[0], losses[1])  # tests/numerics.py


def test_compute_reference_masks_missing_choices(smol_tokenizer):
    lists = [
        ListExample("Q: a?\nA:", (" x", " y"), 0, "a", "t"),
        ListExample("Q: b?\nA:", (" x", " y", " z"), 2, "b", "t"),
    ]
    ds = tokenize_examples(smol_tokenizer, lists, InputKind.LIST, seq_len=32)
    out = compute_reference_logps(
        tiny_model("tiny_mistral", smol_tokenizer), ds, batch_size=1, pad_id=smol_tokenizer.pad_token_id
    )
    assert out.shape == (2, 3) and out[0, 2] == 0 and (out[1] < 0).all()
