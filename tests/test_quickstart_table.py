"""``python -m arc_lab.quickstart``: the control-row table, entity-clustered SEs, CPT→DPO vs DPO paired test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arc_lab.analysis.quickstart import controls_table, main
from arc_lab.analysis.stats import clustered_stderr, mcnemar_p
from arc_lab.data.builtin import builtin_entity, builtin_items
from arc_lab.eval.metrics import mean_stderr

TEST = builtin_items("test")


def write_run(root: Path, name: str, label: str, shots: int, correct: list[int]) -> None:
    """A run folder as the pipeline writes it: metrics.json, samples/builtin.jsonl, chain.json."""
    d = root / name
    (d / "samples").mkdir(parents=True)
    recs = [
        {
            "doc_id": i,
            "id": item.id,
            "target": item.gold,
            "context_hash": f"h{i}-{shots}",
            "acc": c,
            "acc_norm": c,
        }
        for i, (item, c) in enumerate(zip(TEST, correct, strict=True))
    ]
    (d / "samples" / "builtin.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    mean, se = sum(correct) / len(correct), mean_stderr(correct)
    metrics = {"acc": mean, "acc_stderr": se, "acc_norm": mean, "acc_norm_stderr": se, "n": len(correct)}
    (d / "metrics.json").write_text(json.dumps({"builtin": {**metrics, "num_fewshot": shots}}))
    (d / "chain.json").write_text(json.dumps([{"kind": "eval", "label": label}]))


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    n = len(TEST)
    dpo = [1 if i % 4 == 0 else 0 for i in range(n)]
    cpt_dpo = [1 if i % 4 == 0 or i % 3 == 0 else 0 for i in range(n)]  # right wherever dpo is, and more
    write_run(tmp_path, "0", "base", 0, [1 if i % 4 == 1 else 0 for i in range(n)])
    write_run(tmp_path, "1", "base", 5, [1 if i % 4 == 2 else 0 for i in range(n)])
    write_run(tmp_path, "2", "dpo", 0, dpo)
    write_run(tmp_path, "3", "cpt", 0, [1 if i % 2 else 0 for i in range(n)])
    write_run(tmp_path, "4", "cpt→dpo", 0, cpt_dpo)
    return tmp_path


def test_rows_in_order_with_entity_clustered_stderrs(sweep):
    table = controls_table(sweep, n_resamples=200)
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[2:7]]
    assert rows == ["base 0-shot", "base 5-shot", "dpo 0-shot", "cpt 0-shot", "cpt→dpo 0-shot"]
    n = len(TEST)
    cpt = [1 if i % 2 else 0 for i in range(n)]
    se = clustered_stderr(cpt, [builtin_entity(it.id) for it in TEST])
    entities = len({builtin_entity(it.id) for it in TEST})
    assert f"| cpt 0-shot | 0.5000 ± {se:.4f} | 0.5000 ± {se:.4f} | {n} | {entities} |" in table


def test_cpt_dpo_vs_dpo_mcnemar(sweep):
    n = len(TEST)
    b = sum(1 for i in range(n) if i % 3 == 0 and i % 4 != 0)  # only cpt→dpo right; c = 0
    table = controls_table(sweep, n_resamples=200)
    assert f"McNemar b = {b} (only CPT→DPO right), c = 0 (only DPO right), p = {mcnemar_p(b, 0):.3g}" in table


def test_cli_writes_summary_and_fails_loudly_without_runs(sweep, tmp_path, capsys):
    assert main([str(sweep), "--n-resamples", "100"]) == 0
    assert (sweep / "summary.md").read_text().strip() == capsys.readouterr().out.strip()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert "no metrics.json" in capsys.readouterr().err
