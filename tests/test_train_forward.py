"""Batching and the answer-only forward: harness tokenisation, truncation, LM head at answer positions."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import tiny_model

from arc_lab.data.builders import ListExample, PreferencePair, SFTExample
from arc_lab.objectives.base import InputKind
from arc_lab.scoring import encode_pair
from arc_lab.train.batching import collate, tokenize_examples
from arc_lab.train.forward import answer_logps

Q1 = "Question: Which of these is a gas at room temperature?\nAnswer:"
Q2 = "Question: What do green plants need to make food?\nAnswer:"


@pytest.fixture(scope="module")
def model(smol_tokenizer):
    return tiny_model("tiny_mistral", smol_tokenizer).eval()


def full_logits_logps(model, batch):
    """Reference implementation: full (R, T, V) logits, then the same gather. (B, K)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    flat = logits.log_softmax(-1).reshape(-1, logits.shape[-1])[batch.pred_pos]
    per_tok = flat.gather(1, batch.targets[:, None]).squeeze(1)
    b, k = batch.mask.shape
    per_answer = torch.zeros(batch.n_answers + 1).index_add(0, batch.token_answer, per_tok)
    return per_answer[batch.answer_slot].view(b, k)


def lists():
    return [
        ListExample(Q1, (" oxygen", " iron", " a block of solid granite rock"), 0, "q1", "t"),
        ListExample(Q2, (" sunlight", " darkness"), 1, "q2", "t"),
    ]


def test_tokenisation_is_encode_pair(smol_tokenizer):
    ds = tokenize_examples(smol_tokenizer, lists(), InputKind.LIST, seq_len=64)
    for ex, tok in zip(lists(), ds.examples, strict=True):
        for text, ids in zip(ex.choices, tok.answers, strict=True):
            ctx, cont = encode_pair(smol_tokenizer, ex.prompt, text)
            assert tok.prompt == tuple(ctx) and ids == tuple(cont)
    assert ds.examples[0].chars == (6, 4, 29)  # leading space not counted (acc_norm)
    assert ds.truncated == 0 and ds.max_k == 3


def test_answer_only_head_equals_full_logits(smol_tokenizer, model):
    ds = tokenize_examples(smol_tokenizer, lists(), InputKind.LIST, seq_len=64)
    batch = collate(ds, [0, 1], smol_tokenizer.pad_token_id)
    assert batch.input_ids.shape[0] == 5  # every choice of every example in one forward
    with torch.no_grad():
        out = answer_logps(model, batch)
        ref = full_logits_logps(model, batch)
    assert out.logps.shape == (2, 3)
    assert out.mask.tolist() == [[True, True, True], [True, True, False]]
    assert out.gold.tolist() == [0, 1] and out.logps[1, 2] == 0
    assert (out.logps - ref).abs().max() < 1e-5
    # padding another row into the batch does not change an example's log-probs
    alone = answer_logps(model, collate(ds, [1], smol_tokenizer.pad_token_id)).logps.detach()
    assert (alone[0] - out.logps[1, :2]).abs().max() < 1e-5


def test_pairs_answers_and_packed(smol_tokenizer, model):
    pairs = tokenize_examples(
        smol_tokenizer, [PreferencePair(Q1, " oxygen", " iron", "q1", "t")], InputKind.PAIR, seq_len=64
    )
    b = collate(pairs, [0], 0)
    assert b.mask.shape == (1, 2) and b.gold.tolist() == [0]
    sft = tokenize_examples(
        smol_tokenizer,
        [SFTExample(Q2, " sunlight", "q2", "t")],
        InputKind.ANSWER,
        seq_len=64,
        append_eos=True,
    )
    assert sft.examples[0].answers[0][-1] == smol_tokenizer.eos_token_id
    blocks = torch.arange(100, 124).view(2, 12)
    packed = tokenize_examples(smol_tokenizer, blocks, InputKind.PACKED, seq_len=12)
    pb = collate(packed, [0, 1], 0)
    assert pb.tokens.tolist() == [[11.0], [11.0]] and pb.targets.tolist() == list(range(101, 112)) + list(
        range(113, 124)
    )
    with torch.no_grad():
        assert (answer_logps(model, pb).logps - full_logits_logps(model, pb)).abs().max() < 1e-5


def test_left_truncation_is_counted_and_answers_kept(smol_tokenizer, caplog):
    full = tokenize_examples(smol_tokenizer, lists(), InputKind.LIST, seq_len=64)
    with caplog.at_level(logging.WARNING):
        cut = tokenize_examples(smol_tokenizer, lists(), InputKind.LIST, seq_len=16)
    assert cut.truncated == 1 and "truncated the prompt of 1 of 2" in caplog.text
    ex, orig = cut.examples[0], full.examples[0]
    assert ex.answers == orig.answers  # answers intact
    assert ex.prompt == orig.prompt[-(16 - max(map(len, ex.answers))) :]  # prompt loses its LEFT end
    with pytest.raises(ValueError, match="never truncated"):
        tokenize_examples(smol_tokenizer, lists(), InputKind.LIST, seq_len=3)
