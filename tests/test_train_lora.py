"""LoRA through the shared loop: only the adapter moves, adapter-off is the exact base, merge is exact."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_model

from arc_lab.config import LoraConfig, OptimConfig
from arc_lab.data.builders import PreferencePair
from arc_lab.objectives import build_objective
from arc_lab.objectives.base import InputKind
from arc_lab.train.args import Runtime, StageArgs
from arc_lab.train.batching import collate, tokenize_examples
from arc_lab.train.forward import answer_logps
from arc_lab.train.loop import train
from arc_lab.train.lora import add_lora, reference_mode
from arc_lab.train.merge import merge

PAIRS = [
    PreferencePair(
        f"Question: What is fact number {i} about plants?\nAnswer:",
        f" chosen answer {i}",
        f" a wrong one {i}",
        f"q{i}",
        "t",
    )
    for i in range(8)
]


@pytest.fixture(scope="module")
def trained(smol_tokenizer, tmp_path_factory):
    """A tiny Mistral, its base log-probs and base weights, then 3 DPO steps with a fresh LoRA adapter."""
    model = tiny_model("tiny_mistral", smol_tokenizer)
    ds = tokenize_examples(smol_tokenizer, PAIRS, InputKind.PAIR, seq_len=64)
    batch = collate(ds, list(range(8)), smol_tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        base_logps = answer_logps(model, batch).logps.clone()
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(
        model,
        smol_tokenizer,
        build_objective("dpo", beta=0.1),
        PAIRS,
        StageArgs(
            optim=OptimConfig(
                lr=1e-2, max_steps=3, batch_size=4, warmup_ratio=0.0, log_every=1, precision="fp32"
            ),
            lora=LoraConfig(r=4, alpha=8, dropout=0.1),
            seq_len=64,
            precompute_reference=False,
        ),
        out_dir=tmp_path_factory.mktemp("lora"),
        runtime=Runtime(progress=False),
    )
    return dict(result=result, batch=batch, base_logps=base_logps, base_weights=base_weights)


def test_only_adapter_weights_change(trained):
    model = trained["result"].model
    assert trained["result"].reference == "adapter_off"
    lora_moved = frozen = 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad
            lora_moved += "lora_B" in name and bool(p.abs().sum() > 0)  # B starts at exactly 0
        else:
            assert not p.requires_grad
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(p, trained["base_weights"][key]), name
            frozen += 1
    assert lora_moved == 2 * 7 and frozen > 0  # 2 layers x 7 projections
    ckpt = trained["result"].checkpoint
    saved = torch.load(ckpt / "trainable.pt", weights_only=True)
    assert saved and all("lora_" in k for k in saved)  # the checkpoint holds the adapter only


def test_adapter_off_reference_is_the_base_model_exactly(trained):
    model = trained["result"].model
    with torch.no_grad():
        with reference_mode(model):
            ref = answer_logps(model, trained["batch"]).logps
        policy = answer_logps(model.eval(), trained["batch"]).logps
    assert torch.equal(ref, trained["base_logps"])
    assert not torch.equal(policy, trained["base_logps"])  # the adapter does change the function


def test_merged_checkpoint_equals_adapter_outputs(trained, smol_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model, batch = trained["result"].model.eval(), trained["batch"]
    with torch.no_grad():
        want = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    out = merge(model, smol_tokenizer, tmp_path / "merged", dtype="float32")
    assert not (out / "adapter_config.json").exists()
    assert json.loads((out / "merge_info.json").read_text()) == {"lora_merged": True, "dtype": "float32"}
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert not any("lora" in k for k in loaded.state_dict())
    with torch.no_grad():
        got = loaded(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert (got - want).abs().max() < 1e-5


def test_add_lora_rejects_unknown_modules(smol_tokenizer):
    model = tiny_model("tiny_mistral", smol_tokenizer)
    with pytest.raises(ValueError, match="match no module"):
        add_lora(model, r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "c_attn"])
