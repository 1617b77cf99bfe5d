"""Unit tests of the evaluator's pieces: prompts, few-shot draws, limit, metrics, files, lm-eval task files."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pytest
from helpers import ONE_LAYER, load_tiny

from arc_lab.data.records import MCItem
from arc_lab.eval import flat_metrics, run_eval, score_item
from arc_lab.eval.engine import resolve_max_length
from arc_lab.eval.metrics import aggregate, mean_stderr
from arc_lab.eval.outputs import read_samples, task_metrics, write_outputs
from arc_lab.eval.tasks import apply_limit, build_contexts, doc_to_text


def _item(i: int, source: str = "arc_challenge", split: str = "test", **kw) -> MCItem:
    base = dict(
        id=f"q{i}",
        question=f"Question text {i}?",
        choices=(f"yes {i}", "no", "maybe"),
        gold=i % 3,
        source=source,
        split=split,
        labels=("A", "B", "C"),
    )
    base.update(kw)
    return MCItem(**base)


def test_doc_to_text_per_task():
    it = _item(0, support="  Plants need light.\n")
    assert doc_to_text("arc_challenge", it) == "Question: Question text 0?\nAnswer:"
    assert doc_to_text("builtin", it) == doc_to_text("arc_easy", it)
    assert doc_to_text("openbookqa", it) == "Question text 0?"
    assert doc_to_text("sciq", it) == "Plants need light.\n\nQuestion: Question text 0?\nAnswer:"
    assert doc_to_text("sciq", _item(1)) == "\nQuestion: Question text 1?\nAnswer:"  # empty support
    with pytest.raises(ValueError, match="unknown"):
        doc_to_text("mmlu", it)


def test_fewshot_draws_are_one_sequential_generator():
    pool = [_item(i, split="train") for i in range(10)]
    docs = [_item(100 + i) for i in range(3)]
    ctxs = build_contexts("arc_easy", docs, pool, 2)
    rnd = random.Random(1234)
    for doc, ctx in zip(docs, ctxs, strict=True):
        shots = rnd.sample(pool, 2)
        expect = "".join(f"Question: {s.question}\nAnswer: {s.choices[s.gold]}\n\n" for s in shots)
        assert ctx == expect + f"Question: {doc.question}\nAnswer:"
    assert build_contexts("arc_easy", docs[:2], pool, 2) == ctxs[:2]  # limit = prefix of the same draws
    assert build_contexts("openbookqa", docs[:1], pool, 0) == ["Question text 100?"]
    with pytest.raises(ValueError, match="few-shot pool has 10"):
        build_contexts("arc_easy", docs, pool, 11)


def test_limit_semantics():
    assert apply_limit(1172, None) == 1172
    assert apply_limit(1172, 50) == 50
    assert apply_limit(1172, 50.0) == 50
    assert apply_limit(1172, 0.1) == math.ceil(117.2)
    assert apply_limit(10, 99) == 10
    with pytest.raises(ValueError):
        apply_limit(10, -1)


def test_score_item_ties_chars_and_bytes():
    tie = score_item([-2.0, -2.0, -3.0], ["a", "b", "c"], gold=1)
    assert (tie["pred"], tie["acc"]) == (0, 0.0)  # np.argmax: first maximum
    # raw: -4.4 > -6 -> 1; per char: -6/3 = -2.0 > -4.4/2 = -2.2 -> 0; per byte ("°" is 2 bytes): -6/6 > -2.2 -> 0
    s = score_item([-6.0, -4.4], ["°°°", "ab"], gold=1)
    assert (s["pred"], s["pred_norm"], s["pred_bytes"]) == (1, 0, 0)
    assert (s["acc"], s["acc_norm"], s["acc_bytes"]) == (1.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        score_item([-1.0], ["a", "b"], gold=0)


def test_stderr_matches_lm_eval():
    from lm_eval.api.metrics import mean_stderr as lm_mean_stderr

    xs = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert mean_stderr(xs) == pytest.approx(lm_mean_stderr(xs), rel=1e-12)
    assert math.isnan(mean_stderr([1.0]))
    agg = aggregate([{"acc": a, "acc_norm": 1 - a, "acc_bytes": a} for a in xs])
    assert agg["n"] == 7 and agg["acc"] == pytest.approx(4 / 7) and agg["acc_norm"] == pytest.approx(3 / 7)


def test_flat_metrics_and_files(tmp_path):
    recs = [
        {"doc_id": 0, "acc": 1.0, "acc_norm": 0.0, "acc_bytes": 0.0, "loglikelihoods": [-1.0, -2.0]},
        {"doc_id": 1, "acc": 0.0, "acc_norm": 0.0, "acc_bytes": 1.0, "loglikelihoods": [-3.0, -2.0]},
    ]
    metrics = {
        "arc_challenge": task_metrics(recs, num_fewshot=25, fingerprint="abc"),
        "model_fingerprint": "m",
    }
    flat = flat_metrics(metrics)
    assert flat["eval/arc_challenge/acc"] == 0.5 and flat["eval/arc_challenge/acc_norm"] == 0.0
    assert all(k.startswith("eval/arc_challenge/") for k in flat)
    metrics_both = dict(
        metrics,
        backend="ours",
        lm_eval=metrics,
        parity={"arc_challenge": {"max_abs_ll_diff": 1e-6, "acc_disagree": [], "acc_norm_disagree": [3]}},
    )
    flat_both = flat_metrics(metrics_both)
    assert (
        flat_both["eval/arc_challenge/parity_acc_disagree"] == 1
        and flat_both["eval/arc_challenge/acc"] == 0.5
    )
    write_outputs(tmp_path, metrics, {"arc_challenge": recs})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        saved["arc_challenge"]["num_fewshot"] == 25 and saved["arc_challenge"]["dataset_fingerprint"] == "abc"
    )
    assert read_samples(tmp_path / "samples" / "arc_challenge.jsonl") == recs


def test_hub_rows_round_trip_through_the_loader(tmp_path):
    """What the lm_eval backend writes must read back (Hub schema) as the same items."""
    from arc_lab.data.loaders import load_mc
    from arc_lab.eval.lmeval_backend import write_task

    arc = [
        _item(0, labels=("1", "2", "3")),
        _item(1, choices=("a", "b", "c", "d", "e"), labels=tuple("ABCDE")),
    ]
    obqa = [_item(2, source="openbookqa")]
    sciq = [_item(3, source="sciq", choices=("w", "x", "y", "z"), gold=3, labels=(), support=" Some text.")]
    for task, items in (("arc_challenge", arc), ("openbookqa", obqa), ("sciq", sciq)):
        name = write_task(task, items, items, tmp_path)
        yaml_text = (tmp_path / task / f"{name}.yaml").read_text()
        assert "dataset_path: json" in yaml_text and "validation_split: null" in yaml_text
        back = load_mc(task, "test", tmp_path)
        key = [(b.question, b.choices, b.gold, b.support.strip()) for b in back]
        assert key == [(a.question, a.choices, a.gold, a.support.strip()) for a in items]


def test_resolve_max_length_matches_lm_eval():
    from lm_eval.models.utils import resolve_max_length as lm_resolve
    from transformers import LlamaConfig

    for cfg, tok in (
        (LlamaConfig(max_position_embeddings=321), None),
        (SimpleNamespace(), SimpleNamespace(model_max_length=77)),
        (SimpleNamespace(), SimpleNamespace(model_max_length=int(1e30))),
    ):
        assert resolve_max_length(SimpleNamespace(config=cfg), tok) == lm_resolve(cfg, tok, default=2048)


def test_run_eval_rejects_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        run_eval("fast", None, None, tasks=["arc_challenge"], num_fewshot=0)
    with pytest.raises(ValueError, match="unknown"):
        run_eval("ours", None, None, tasks=["hellaswag"], num_fewshot=0)
    with pytest.raises(ValueError, match="no entry"):
        run_eval("ours", None, None, tasks=["arc_challenge"], num_fewshot={"sciq": 0}, task_items={})


def test_sample_files_have_one_reader_that_the_report_uses(tmp_path):
    """Sample lines keep non-ASCII text unescaped, so a record may hold U+2028 (which ``str.splitlines``
    would split on): the evaluator's reader and the report read it back alike, and a broken line is named
    by file and line."""
    from arc_lab.analysis.report import ReportError, discover_runs, load_samples
    from arc_lab.data.loaders import DataError
    from arc_lab.eval.ours import sample_record

    items = [_item(0, id="q\u2028line-separated"), _item(1)]
    recs = [
        sample_record("arc_challenge", i, it, "ctx", [-1.0, -2.0, -3.0], [1, 1, 1])
        for i, it in enumerate(items)
    ]
    metrics = {"arc_challenge": task_metrics(recs, num_fewshot=0, fingerprint="f"), "model_fingerprint": "m"}
    write_outputs(tmp_path, metrics, {"arc_challenge": recs})
    path = tmp_path / "samples" / "arc_challenge.jsonl"
    assert "\u2028" in path.read_text(encoding="utf-8")
    (run,) = discover_runs(tmp_path)
    assert read_samples(path) == recs == load_samples(run, "arc_challenge")
    path.write_text(path.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"arc_challenge.jsonl line 3: invalid JSON"):
        read_samples(path)
    with pytest.raises(ReportError, match=r"arc_challenge.jsonl line 3: invalid JSON"):
        load_samples(run, "arc_challenge")


def test_truncated_items_are_counted_in_metrics_and_logged(caplog):
    # a window shorter than some prompts: lm-eval cuts them from the left; arc_lab says how many it cut
    from arc_lab.eval import run_eval

    model, tok = load_tiny("tiny_llama", **ONE_LAYER)
    kw = dict(tasks=["builtin"], num_fewshot=0, batch_size=8, progress=False, limit=8)
    with caplog.at_level("WARNING", logger="arc_lab.eval.runner"):
        cut = run_eval("ours", model, tok, max_length=8, **kw)["builtin"]
    assert 0 < cut["truncated_items"] <= 8
    assert any(f"{cut['truncated_items']} of 8 items" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="arc_lab.eval.runner"):
        whole = run_eval("ours", model, tok, max_length=512, **kw)["builtin"]
    assert whole["truncated_items"] == 0 and not caplog.records
