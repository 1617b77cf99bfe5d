"""Caches never lie: stage and eval entries are keyed on the *content* of the data they read and verified
against their manifests (issue 10, defects 1, 7 and 8b).

Each test runs the app in-process on a tiny model (as tests/test_pipeline.py does) in its own output root,
damages or edits something on disk, reruns, and checks what was reused, what was recomputed and what the
log says about it. The data is a few hand-written ARC-Easy rows in a temporary data folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from test_pipeline import CHAIN, run_app

from arc_lab.run.manifest import check_manifest


def _row(i: int, key: str = "A") -> dict:
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return {
        "id": f"q{i}",
        "question": {
            "stem": f"Which word names the number {i}?",
            "choices": [{"text": words[(i + j) % 10], "label": "ABCD"[j]} for j in range(4)],
        },
        "answerKey": key,
    }


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """arc_easy train (8 rows) and test (6 rows), arc_challenge test (the decontamination set)."""
    d = tmp_path / "data"
    _write(d / "arc_easy" / "train.jsonl", [_row(i) for i in range(8)])
    _write(d / "arc_easy" / "test.jsonl", [_row(i) for i in range(10, 16)])
    _write(d / "arc_challenge" / "test.jsonl", [{**_row(i), "id": f"c{i}"} for i in range(20, 24)])
    return d


def _rotate_gold(path: Path) -> None:
    """Rotate every answer key A->B->C->D->A in place: same size, same questions, other gold labels."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    _write(path, [{**r, "answerKey": "BCDA"["ABCD".index(r["answerKey"])]} for r in rows])


def _metrics(run) -> dict:
    return json.loads((run.run_dir / "metrics.json").read_text())


# ------------------------------------------------------------------------------ defect 1: data content
@pytest.mark.slow
def test_editing_the_eval_split_in_place_recomputes_the_evaluation(hydra_ctx, tmp_path, data_dir):
    root, test = tmp_path / "out", data_dir / "arc_easy" / "test.jsonl"
    args = ["stage=eval", "objective=dpo", "eval.tasks=[arc_easy]", f"data.data_dir={data_dir}"]
    first = run_app(root, "first", *args)
    assert first.evals_cached() == [False] and "eval cache miss" in first.log
    again = run_app(root, "again", *args)
    assert again.evals_cached() == [True] and "eval cache hit" in again.log

    _rotate_gold(test)
    rotated = run_app(root, "rotated", *args)
    assert rotated.evals_cached() == [False], rotated.log
    assert "same config but other data content: ['arc_easy/test']" in rotated.log  # the miss says why
    old, new = _metrics(first)["arc_easy"], _metrics(rotated)["arc_easy"]
    assert new["dataset_fingerprint"] != old["dataset_fingerprint"]
    targets = [json.loads(x)["target"] for x in (rotated.run_dir / "samples" / "arc_easy.jsonl").open()]
    assert targets == [1] * 4  # eval.limit=4 docs, gold now B: the rotated labels were scored

    test.write_bytes(test.read_bytes())  # rewritten, same bytes: new mtime, same content -> reused
    touched = run_app(root, "touched", *args)
    assert touched.evals_cached() == [True]
    assert _metrics(touched) == _metrics(rotated)


@pytest.mark.slow
def test_cutting_the_train_file_retrains_the_stage(hydra_ctx, tmp_path, data_dir):
    root, train = tmp_path / "out", data_dir / "arc_easy" / "train.jsonl"
    args = [
        "stage=sft_cpu",
        "objective=sft",
        "stage.optim.max_steps=1",
        "data.train_sources=[arc_easy]",
        "eval.before=false",
        "eval.tasks=[arc_easy]",
        f"data.data_dir={data_dir}",
    ]
    first = run_app(root, "first", *args)
    assert first.stages_cached() == [False]
    assert json.loads((first.run_dir / "data.json").read_text())["sft"]["questions"] == 8

    _rotate_gold(data_dir / "arc_challenge" / "test.jsonl")  # the decontamination set's questions: same
    same = run_app(root, "same", *args)
    assert same.stages_cached() == [True] and "stage cache hit" in same.log

    _write(train, [_row(i) for i in range(6)])  # cut to 6 questions in place
    cut = run_app(root, "cut", *args)
    assert cut.stages_cached() == [False] and "stage cache miss" in cut.log
    assert "same config but other data content: ['arc_easy/train']" in cut.log
    (h1,), (h2,) = ([c["hash"] for c in r.chain if c["kind"] == "stage"] for r in (first, cut))
    assert h1 != h2
    data = json.loads((cut.run_dir / "data.json").read_text())["sft"]
    assert data["questions"] == 6
    assert (
        data["fingerprints"]["arc_easy"]
        != json.loads((first.run_dir / "data.json").read_text())["sft"]["fingerprints"]["arc_easy"]
    )
    assert (
        json.loads((root / "stages" / h2 / "provenance.json").read_text())["data_inputs"]["arc_easy/train"]
        == (data["fingerprints"]["arc_easy"])
    )


def test_generated_data_is_fingerprinted_by_content(monkeypatch):
    """The builtin set has no file: its key is the hash of the generated items, so a generator change
    (here: one question reworded) is a different key."""
    from arc_lab.data import builtin
    from arc_lab.data.training import cpt_inputs, question_inputs

    before = question_inputs(["builtin"], data_dir=None, hub=False)
    items = builtin.builtin_items("train")
    changed = [dataclasses.replace(items[0], question=items[0].question + "?"), *items[1:]]
    monkeypatch.setattr(builtin, "builtin_items", lambda split: changed if split == "train" else [])
    after = question_inputs(["builtin"], data_dir=None, hub=False)
    assert after["builtin/train"] != before["builtin/train"]
    assert cpt_inputs(["builtin_prose"], data_dir=None, hub=False)["builtin_prose"].startswith("generated:")


# ------------------------------------------------------------- defects 7 and 8b: damaged cache entries
@pytest.mark.slow
def test_damaged_stage_and_eval_entries_are_rebuilt(hydra_ctx, tmp_path):
    root = tmp_path / "out"
    args = [*CHAIN, "eval.before=false"]
    first = run_app(root, "first", *args)
    cpt_dir, dpo_dir = (Path(c["dir"]) for c in first.chain if c["kind"] == "stage")
    assert check_manifest(cpt_dir) == [] and check_manifest(dpo_dir) == []
    weights = cpt_dir / "model" / "model.safetensors"
    original = weights.read_bytes()

    # 7: a deleted weight file under a DONE entry -> rebuilt (and said so), the chain on top of it works
    weights.unlink()
    deleted = run_app(root, "deleted", *args)
    assert deleted.stages_cached()[0] is False
    assert "model/model.safetensors: missing" in deleted.log and "rebuilding it" in deleted.log
    assert weights.is_file() and check_manifest(cpt_dir) == []
    # the rebuilt model's identity is its new weights: the chain on top is reused only if they are equal
    assert deleted.stages_cached()[1] == (weights.read_bytes() == original)

    # 7: same size, other bytes (only the hash can see it) -> rebuilt
    dpo_weights = Path(deleted.chain[-2]["dir"]) / "model" / "model.safetensors"
    data = bytearray(dpo_weights.read_bytes())
    data[-8] ^= 0x01
    dpo_weights.write_bytes(bytes(data))
    flipped = run_app(root, "flipped", *args)
    assert flipped.stages_cached() == [True, False]
    assert "content differs from the manifest" in flipped.log and "rebuilding it" in flipped.log

    # 8b: a truncated eval-cache metrics.json -> a logged miss, recomputed, not stuck
    final_eval = Path(flipped.chain[-1]["dir"])
    good = (final_eval / "metrics.json").read_text()
    (final_eval / "metrics.json").write_text(good[: len(good) // 2])
    truncated = run_app(root, "truncated", *args)
    assert truncated.evals_cached()[-1] is False
    assert "eval cache miss" in truncated.log and "metrics.json:" in truncated.log
    assert json.loads((final_eval / "metrics.json").read_text()) == json.loads(good)
    assert _metrics(truncated) == json.loads(good)
    assert run_app(root, "after", *args).evals_cached() == [True, True]  # healed: hits again


@pytest.mark.slow
def test_data_that_changes_while_a_stage_trains_does_not_finish_the_entry(hydra_ctx, tmp_path, data_dir):
    """The key is taken before training reads the data; if the content differs afterwards, the entry would
    be keyed on data it was not trained on: it is left unfinished (no DONE) and the run fails naming it."""
    from arc_lab.run import stage

    train_file = data_dir / "arc_easy" / "train.jsonl"
    real = stage.train_stage

    def edit_then_train(*args, **kwargs):
        out = real(*args, **kwargs)
        _write(train_file, [_row(i) for i in range(5)])  # edited by someone while the stage ran
        return out

    args = ["stage=sft_cpu", "objective=sft", "stage.optim.max_steps=1", "data.train_sources=[arc_easy]"]
    args += ["eval.before=false", "eval.tasks=[arc_easy]", f"data.data_dir={data_dir}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stage, "train_stage", edit_then_train)
        with pytest.raises(RuntimeError, match=r"changed while it trained \(\['arc_easy/train'\]\)"):
            run_app(tmp_path / "out", "edited", *args)
    (entry,) = (tmp_path / "out" / "stages").iterdir()
    assert not (entry / "DONE").exists() and not (entry / "MANIFEST.json").exists()
