"""``eval.sample``: a seeded subset of the eval split, scored exactly as in the full run."""

from __future__ import annotations

import pytest
from helpers import ONE_LAYER, load_tiny

from arc_lab.data.records import MCItem
from arc_lab.eval import run_eval
from arc_lab.eval.tasks import sample_indices


def _items(n: int, split: str) -> list[MCItem]:
    return [
        MCItem(
            f"{split}{i}",
            f"Which thing number {i}?",
            (f"alpha {i}", "beta", "gamma"),
            i % 3,
            "arc_challenge",
            split,
        )
        for i in range(n)
    ]


def test_sample_indices_are_seeded_sorted_and_checked():
    a = sample_indices(100, 10, seed=0)
    assert a == sorted(a) and len(set(a)) == 10 and a == sample_indices(100, 10, seed=0)
    assert a != sample_indices(100, 10, seed=1)
    assert sample_indices(5, None) == [0, 1, 2, 3, 4]
    for bad in (0, 101):
        with pytest.raises(ValueError, match="eval.sample"):
            sample_indices(100, bad)


@pytest.mark.slow
def test_sampled_records_match_the_full_records(tmp_path):
    """A sampled doc keeps its full-run few-shot context and its position in the split as doc_id, and
    scores the same log-likelihoods up to float32 noise from different batch padding (1e-4 nats on sums
    of a few tokens' log-probs of magnitude ~10: many times float32 epsilon times the terms summed)."""
    from arc_lab.eval.outputs import read_samples

    model, tok = load_tiny("tiny_llama", **ONE_LAYER)
    items = {"arc_challenge": (_items(30, "test"), _items(10, "train"))}
    kw = dict(tasks=["arc_challenge"], num_fewshot=3, task_items=items, progress=False)
    run_eval("ours", model, tok, **kw, out_dir=tmp_path / "full")
    metrics = run_eval("ours", model, tok, **kw, sample=7, sample_seed=3, out_dir=tmp_path / "sub")
    assert metrics["arc_challenge"]["n"] == 7
    assert (metrics["arc_challenge"]["sample"], metrics["arc_challenge"]["sample_seed"]) == (7, 3)
    full = {r["doc_id"]: r for r in read_samples(tmp_path / "full" / "samples" / "arc_challenge.jsonl")}
    sub = read_samples(tmp_path / "sub" / "samples" / "arc_challenge.jsonl")
    assert [r["doc_id"] for r in sub] == sample_indices(30, 7, seed=3)
    for r in sub:
        f = full[r["doc_id"]]
        assert r["context_hash"] == f["context_hash"] and r["id"] == f["id"]
        assert r["loglikelihoods"] == pytest.approx(f["loglikelihoods"], abs=1e-4)


def test_sample_needs_our_backend():
    with pytest.raises(ValueError, match="needs eval.backend=ours"):
        run_eval("lm_eval", None, None, tasks=["arc_challenge"], num_fewshot=0, sample=3, task_items={})
