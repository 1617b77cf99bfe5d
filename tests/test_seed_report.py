"""Seed-aware report on synthetic sweep folders with known outcomes: rows grouped across seeds, the base row
scored once, per-seed values, the interval of :func:`arc_lab.analysis.stats.seed_item_diff`, verdicts, one seed."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from arc_lab.analysis.report import ReportError, discover_runs
from arc_lab.analysis.seed_report import compare_rows, find_row, group_rows, parse_pairs, seed_table
from arc_lab.analysis.stats import seed_item_diff

TASK = "arc_challenge"
N = 12
BASE = [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
# per seed: the trained rows' acc outcomes (acc_norm = acc here, to keep the fixture small)
DPO = {
    0: [1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0],
    1: [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1],
    2: [1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0],
}
CPT_DPO = {0: [1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1], 1: [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0], 2: [1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]}  # fmt: skip


def _record(doc_id: int, acc: int) -> dict:
    target = doc_id % 4
    pred = target if acc else (target + 1) % 4
    lls = [-9.0] * 4
    lls[pred] = -1.0
    return {
        "doc_id": doc_id,
        "id": f"q{doc_id}",
        "target": target,
        "loglikelihoods": lls,
        "choice_chars": [5] * 4,
        "pred": pred,
        "pred_norm": pred,
        "acc": float(acc),
        "acc_norm": float(acc),
        "context_hash": f"ctx{doc_id}",
    }


def write_cell(
    d: Path, label: str, chain: str, seed: int | None, outcomes: list[int], fingerprint: str
) -> None:
    d.mkdir(parents=True)
    stage = "eval" if label == "base" else "dpo"
    mean = sum(outcomes) / len(outcomes)
    metrics = {
        TASK: {"acc": mean, "acc_stderr": 0.1, "acc_norm": mean, "acc_norm_stderr": 0.1, "n": len(outcomes),
               "num_fewshot": 0},
        "model_fingerprint": fingerprint,
    }  # fmt: skip
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "samples").mkdir()
    (d / "samples" / f"{TASK}.jsonl").write_text(
        "".join(json.dumps(_record(i, a)) + "\n" for i, a in enumerate(outcomes))
    )
    if seed is not None:
        (d / "config.yaml").write_text(f"name: study\nseed: {seed}\nstage:\n  name: {stage}\n  init: base\n")
        (d / ".hydra").mkdir()
        (d / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- chain={chain}\n- output_root=/x\n")
    (d / "chain.json").write_text(json.dumps([{"kind": "eval", "label": label}]))


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    for s in (0, 1, 2):
        write_cell(root / f"seed{s}" / "0", "base", "cpu_base", s, BASE, "basefp")
        write_cell(root / f"seed{s}" / "1", "dpo", "cpu_dpo", s, DPO[s], f"dpo{s}")
        write_cell(root / f"seed{s}" / "2", "cpt→dpo", "cpu_cpt_dpo", s, CPT_DPO[s], f"cptdpo{s}")
    return root


def test_cells_group_into_rows_across_seeds_and_base_is_one_model(sweep: Path):
    runs = discover_runs(sweep)
    assert {r.label for r in runs} >= {"cpt→dpo [seed=1]", "base [seed=0]"}  # labels show the seed
    rows = group_rows(runs, TASK)
    assert [r.name for r in rows] == ["base", "dpo", "cpt→dpo"]
    base, dpo, cpt_dpo = rows
    assert base.seed_independent and not dpo.seed_independent
    assert dpo.seeds == [0, 1, 2]
    assert base.values(TASK, "acc") == [sum(BASE) / N]  # one value: scored once
    assert cpt_dpo.values(TASK, "acc") == [sum(CPT_DPO[s]) / N for s in (0, 1, 2)]


def test_comparison_is_seed_item_diff_on_the_seed_paired_outcomes(sweep: Path):
    rows = group_rows(discover_runs(sweep), TASK)
    comp = compare_rows(find_row(rows, "cpt→dpo"), find_row(rows, "dpo"), TASK, "acc")
    expected = seed_item_diff([CPT_DPO[s] for s in (0, 1, 2)], [DPO[s] for s in (0, 1, 2)])
    assert comp.diff == expected
    assert comp.seeds == (0, 1, 2) and comp.n == N and len(comp.mcnemar_p) == 3
    # vs the seed-independent base: its one vector is paired with every seed
    vs_base = compare_rows(find_row(rows, "dpo"), find_row(rows, "base"), TASK, "acc")
    assert vs_base.diff == seed_item_diff([DPO[s] for s in (0, 1, 2)], [BASE] * 3)
    # DPO never loses an item base gets right and gains 1-2 per seed: the interval excludes 0
    assert vs_base.diff.low > 0 and vs_base.verdict == "beyond seed noise"
    assert comp.verdict == ("within seed noise" if comp.diff.within_noise else "beyond seed noise")


def test_table_lines_show_mean_sd_and_each_seed(sweep: Path):
    text = "\n".join(seed_table(discover_runs(sweep), TASK, [("cpt→dpo", "dpo")]))
    vals = [sum(CPT_DPO[s]) / N for s in (0, 1, 2)]
    mean, sd = statistics.fmean(vals), statistics.stdev(vals)
    line = next(x for x in text.splitlines() if x.startswith("| cpt→dpo | 0, 1, 2 |"))
    assert f"{mean:.4f} ± {sd:.4f}" in line and " / ".join(f"{v:.4f}" for v in vals) in line
    assert "| base | any (untrained: one model) |" in text
    assert "| cpt→dpo | dpo | acc |" in text and "seed noise is not measured" not in text


def test_one_seed_says_seed_noise_is_not_measured(tmp_path: Path):
    root = tmp_path / "one"
    write_cell(root / "0", "base", "cpu_base", 0, BASE, "basefp")
    write_cell(root / "1", "dpo", "cpu_dpo", 0, DPO[0], "dpo0")
    runs = discover_runs(root)
    rows = group_rows(runs, TASK)
    text = "\n".join(seed_table(runs, TASK, parse_pairs(None, rows, None)))
    assert "seed noise is not measured" in text
    assert "| dpo | base | acc |" in text and "seed noise not measured" in text


def test_two_cells_of_one_row_at_one_seed_are_refused(sweep: Path):
    write_cell(sweep / "again" / "0", "dpo", "cpu_dpo", 1, DPO[1], "dpo1b")
    with pytest.raises(ReportError, match="two cells of row 'dpo' at seed 1"):
        group_rows(discover_runs(sweep), TASK)


def test_unknown_row_and_bad_pairs_are_one_line_errors(sweep: Path):
    rows = group_rows(discover_runs(sweep), TASK)
    with pytest.raises(ReportError, match="no row 'sft'; rows:"):
        find_row(rows, "sft")
    with pytest.raises(ReportError, match="expected row:row"):
        parse_pairs("cpt→dpo", rows, None)
    assert parse_pairs("all", rows, None) == [("base", "dpo"), ("base", "cpt→dpo"), ("dpo", "cpt→dpo")]


def test_cli_seed_table_prints_and_gz_samples_are_read(sweep: Path):
    import gzip

    for p in sweep.rglob("*.jsonl"):  # a committed study keeps its samples gzipped
        p.with_name(p.name + ".gz").write_bytes(gzip.compress(p.read_bytes()))
        p.unlink()
    out = subprocess.run(
        [sys.executable, "-m", "arc_lab.report", str(sweep), "--seed-table", "--pairs", "cpt→dpo:dpo"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("### arc_challenge: rows across seeds") and "| cpt→dpo | dpo | acc_norm |" in out
    assert np.isfinite(float(out.split("| cpt→dpo | dpo | acc | ")[1].split(" |")[0]))
