"""Report on synthetic run folders with known outcomes: tables, p-values, flags, PNG, CLI."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from arc_lab.analysis.report import ReportError, build_report, config_label, discover_runs
from arc_lab.analysis.stats import PairingError

N = 20
# arc_challenge outcomes per item (doc_id = index). Baseline: acc right on items 0-9, acc_norm on 0-11.
BASE_ACC = [1] * 10 + [0] * 10
BASE_NORM = [1] * 12 + [0] * 8


def _flip(xs: list[int], to_one: list[int] = (), to_zero: list[int] = ()) -> list[int]:
    out = list(xs)
    for i in to_one:
        out[i] = 1
    for i in to_zero:
        out[i] = 0
    return out


# DPO: acc b=6 (10-15), c=1 (0) -> +0.25, p = 2·(1+7)/128; acc_norm b=2, c=0 -> +0.10. Both better: no flag.
DPO_ACC = _flip(BASE_ACC, to_one=[10, 11, 12, 13, 14, 15], to_zero=[0])
DPO_NORM = _flip(BASE_NORM, to_one=[12, 13])
# SimPO: acc b=1, c=3 -> -0.10; acc_norm b=5, c=1 -> +0.20. acc and acc_norm disagree: flagged.
SIMPO_ACC = _flip(BASE_ACC, to_one=[10], to_zero=[0, 1, 2])
SIMPO_NORM = _flip(BASE_NORM, to_one=[12, 13, 14, 15, 16], to_zero=[0])
EASY = {"base": [1, 1, 0, 0, 1, 0], "dpo": [1, 1, 1, 0, 1, 0], "simpo": [1, 0, 1, 0, 1, 1]}

CONFIGS = {
    "base": "name: default\nstage:\n  name: eval\n  init: base\nobjective:\n  name: dpo\nmodel:\n  name: smollm2-360m\n",
    "dpo": "name: recipe\nstage:\n  name: dpo\n  init: cpt\nobjective:\n  name: dpo\n  beta: 0.1\nmodel:\n  name: smollm2-360m\n",
    "simpo": "name: recipe\nstage:\n  name: dpo\n  init: cpt\nobjective:\n  name: simpo\nmodel:\n  name: smollm2-360m\n",
}
LABELS = {"base": "eval/smollm2-360m", "dpo": "cpt→dpo", "simpo": "cpt→dpo[simpo]"}


def _stderr(xs: list[int]) -> float:
    """lm-eval's mean_stderr: sample std (Bessel) / sqrt(n)."""
    n, mu = len(xs), sum(xs) / len(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def _record(doc_id: int, acc: int, acc_norm: int, ctx: str = "") -> dict:
    """A samples line whose log-likelihoods and character counts give the requested outcomes."""
    target = doc_id % 4
    pred = target if acc else (target + 1) % 4
    pred_norm = target if acc_norm else (target + 2) % 4
    lls, chars = [-10.0] * 4, [10] * 4
    lls[pred] = -2.0
    if pred_norm != pred:  # a long, slightly less likely answer wins per character
        lls[pred_norm], chars[pred_norm], chars[pred] = -3.0, 30, 5
    return {
        "doc_id": doc_id,
        "id": f"q{doc_id}",
        "target": target,
        "loglikelihoods": lls,
        "choice_chars": chars,
        "choice_bytes": chars,
        "choice_tokens": [3] * 4,
        "pred": pred,
        "pred_norm": pred_norm,
        "acc": acc,
        "acc_norm": acc_norm,
        "context_hash": f"ctx{doc_id}{ctx}",
    }


def write_run(run_dir: Path, config: str | None, config_name: str, tasks: dict) -> Path:
    """Write metrics.json, samples/<task>.jsonl and (optionally) a config; tasks: {task: (acc, norm, ids)}."""
    (run_dir / "samples").mkdir(parents=True)
    metrics: dict = {"model_fingerprint": f"fp-{run_dir.name}"}
    for task, (acc, norm, ids) in tasks.items():
        lines = [json.dumps(_record(i, a, b)) for i, a, b in zip(ids, acc, norm, strict=True)]
        (run_dir / "samples" / f"{task}.jsonl").write_text("\n".join(lines) + "\n")
        metrics[task] = {
            "acc": sum(acc) / len(acc),
            "acc_stderr": _stderr(acc),
            "acc_norm": sum(norm) / len(norm),
            "acc_norm_stderr": _stderr(norm),
            "acc_bytes": sum(norm) / len(norm),
            "n": len(acc),
            "num_fewshot": 0,
            "dataset_fingerprint": f"ds-{task}",
        }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if config is not None:
        (run_dir / config_name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / config_name).write_text(config)
    return run_dir


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    """0/ = base (eval stage), 1/ = DPO, 2/dpo/ = SimPO nested in a pipeline folder (no metrics of its own)."""
    root = tmp_path / "multirun"
    ids, easy_ids = list(range(N)), list(range(6))
    outcomes = {"base": (BASE_ACC, BASE_NORM), "dpo": (DPO_ACC, DPO_NORM), "simpo": (SIMPO_ACC, SIMPO_NORM)}
    where = {
        "base": ("0", ".hydra/config.yaml"),
        "dpo": ("1", "config.yaml"),
        "simpo": ("2/dpo", ".hydra/config.yaml"),
    }
    for name, (folder, cfg_name) in where.items():
        acc, norm = outcomes[name]
        write_run(
            root / folder,
            CONFIGS[name],
            cfg_name,
            {"arc_challenge": (acc, norm, ids), "arc_easy": (EASY[name], EASY[name], easy_ids)},
        )
    (root / "2" / ".hydra").mkdir()
    (root / "2" / ".hydra" / "config.yaml").write_text("name: pipeline\n")
    return root


def _comparison_rows(md: str, task: str) -> dict[tuple[str, str], list[str]]:
    """{(run label, metric): cells} of one task's comparison table."""
    section = md.split(f"### {task}\n", 1)[1].strip().split("\n\n", 1)[0]
    rows = {}
    for line in section.splitlines()[2:]:  # after the header and the |---| line
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[0].strip("`"), cells[1])] = cells
    return rows


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_discovers_nested_runs_and_labels_them_from_config(multirun: Path) -> None:
    runs = discover_runs(multirun)
    assert [r.rel for r in runs] == ["0", "1", "2/dpo"]
    assert [r.label for r in runs] == [LABELS["base"], LABELS["dpo"], LABELS["simpo"]]
    assert config_label({"name": "my_exp"}) == "my_exp" and config_label({}) is None


def test_report_tables_pvalues_and_flags(multirun: Path) -> None:
    md_path, png_path = build_report(multirun)
    md = md_path.read_text()
    assert md_path.parent == multirun
    assert 'Baseline: `eval/smollm2-360m` (`0`), default: the first run whose stage is "eval"' in md
    # accuracy table: mean ± lm-eval stderr and n
    assert (
        f"| `cpt→dpo` | arc_challenge | 0.7500 ± {_stderr(DPO_ACC):.4f} | "
        f"0.7000 ± {_stderr(DPO_NORM):.4f} | 20 | 0 |" in md
    )
    assert f"| `eval/smollm2-360m` | arc_easy | 0.5000 ± {_stderr(EASY['base']):.4f} |" in md

    rows = _comparison_rows(md, "arc_challenge")
    assert set(rows) == {(LABELS[r], m) for r in ("dpo", "simpo") for m in ("acc", "acc_norm")}
    # McNemar by hand: p = 2·P(X <= min(b, c)), X ~ Bin(b + c, 1/2)
    expected = {
        ("dpo", "acc"): (0.25, 6, 1, 2 * (1 + 7) / 2**7),
        ("dpo", "acc_norm"): (0.10, 2, 0, 2 * 1 / 2**2),
        ("simpo", "acc"): (-0.10, 1, 3, 2 * (1 + 4) / 2**4),
        ("simpo", "acc_norm"): (0.20, 5, 1, 2 * (1 + 6) / 2**6),
    }
    for (run, metric), (diff, b, c, p) in expected.items():
        cells = rows[(LABELS[run], metric)]
        assert cells[4] == f"{diff:+.4f}"
        low, high = (float(v) for v in cells[5].strip("[]").split(","))
        assert low <= diff <= high
        assert cells[6] == f"{p:.4g}"
        assert cells[7:10] == [str(b), str(c), str(N)]
        # the flag appears exactly on SimPO's rows, where acc and acc_norm disagree
        assert (cells[10] != "") == (run == "simpo")
    assert rows[(LABELS["dpo"], "acc")][6] == "0.125"
    assert "acc favours `cpt→dpo` (by 0.3500), acc_norm favours `cpt→dpo[simpo]` (by 0.1000)" in md
    assert "Warnings" not in md

    width, height = _png_size(png_path)
    assert png_path.stat().st_size > 20_000 and width > 800 and height > 300


def test_report_is_deterministic(multirun: Path, tmp_path: Path) -> None:
    first = build_report(multirun, out_dir=tmp_path / "a", n_resamples=2000, seed=3)[0].read_text()
    second = build_report(multirun, out_dir=tmp_path / "b", n_resamples=2000, seed=3)[0].read_text()
    assert first == second


def test_cli_with_baseline_folder_and_task(multirun: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "arc_lab.analysis.report",
            str(multirun),
            "--baseline",
            "1",
            "--task",
            "arc_challenge",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "Baseline: `cpt→dpo` (`1`), given by --baseline '1' (folder)" in md
    assert "arc_easy" not in md
    rows = _comparison_rows(md, "arc_challenge")
    # vs DPO, by hand from the outcome lists above:
    # base acc: right only on item 0 (b=1), wrong only on 10-15 (c=6): p = 2·(1+7)/2^7
    assert rows[("eval/smollm2-360m", "acc")][4:10] == [
        "-0.2500",
        rows[("eval/smollm2-360m", "acc")][5],
        "0.125",
        "1",
        "6",
        "20",
    ]
    # SimPO acc (right on 3-10) vs DPO acc (right on 1-15): b=0, c=7 (1, 2, 11-15): p = 2·1/2^7
    # SimPO acc_norm (right on 1-16) vs DPO (0-13): b=3 (14-16), c=1 (0): p = 2·(1+4)/2^4; flagged
    assert rows[("cpt→dpo[simpo]", "acc")][6:10] == [f"{2 / 2**7:.4g}", "0", "7", "20"]
    assert rows[("cpt→dpo[simpo]", "acc_norm")][6:10] == [f"{2 * 5 / 2**4:.4g}", "3", "1", "20"]
    assert rows[("cpt→dpo[simpo]", "acc")][10] == rows[("cpt→dpo[simpo]", "acc_norm")][10] == "⚠ disagree"
    assert rows[("eval/smollm2-360m", "acc")][10] == ""
    assert _png_size(out / "report.png")[0] > 500


def test_different_doc_id_sets_are_compared_on_the_intersection_loudly(multirun: Path) -> None:
    keep = list(range(N - 2))
    write_run(
        multirun / "3",
        CONFIGS["dpo"].replace("dpo\n  beta", "ipo\n  beta"),
        "config.yaml",
        {"arc_challenge": (DPO_ACC[: N - 2], DPO_NORM[: N - 2], keep)},
    )
    md = build_report(multirun)[0].read_text()
    assert "## ⚠ Warnings" in md
    assert (
        "arc_challenge: `cpt→dpo[ipo]` vs baseline compared on the 18 doc_ids both scored; 0 only in the "
        "run, 2 only in the baseline (doc_ids 18, 19)"
    ) in md
    assert _comparison_rows(md, "arc_challenge")[("cpt→dpo[ipo]", "acc")][9] == "18"


def test_different_contexts_for_a_doc_id_are_an_error(multirun: Path) -> None:
    path = multirun / "1" / "samples" / "arc_challenge.jsonl"
    lines = path.read_text().splitlines()
    rec = json.loads(lines[7])
    rec["context_hash"] = "another prompt"
    lines[7] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PairingError, match="task 'arc_challenge', doc_id 7: context_hash differs"):
        build_report(multirun)


def test_bad_inputs_are_loud(multirun: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="matches no run label or run folder; labels: 'eval/smollm2-360m'"):
        build_report(multirun, baseline="nope")
    with pytest.raises(ReportError, match="no run has it"):
        build_report(multirun, task="sciq")
    with pytest.raises(ReportError, match="no metrics.json found"):
        build_report(tmp_path / "multirun" / "0" / "samples")
    metrics = multirun / "1" / "metrics.json"
    raw = json.loads(metrics.read_text())
    raw["arc_challenge"]["acc"] = 0.5
    metrics.write_text(json.dumps(raw))
    with pytest.raises(
        ReportError, match="mean acc of the samples is 0.750000 but metrics.json says 0.500000"
    ):
        build_report(multirun)


def test_pipeline_chain_labels_win_over_config_labels(multirun: Path) -> None:
    """arc_lab run folders carry chain.json: the final model's chain label (``sft→dpo[ipo]``) names the run
    and metrics.json's run-level keys (backend, parity) are not tasks."""
    run = multirun / "1"
    chain = [
        {"kind": "eval", "label": "base"},
        {"kind": "stage", "label": "cpt"},
        {"kind": "eval", "label": "cpt"},
        {"kind": "eval", "label": "sft→dpo[ipo]"},  # its config says cpt→dpo: the chain's label wins
    ]
    (run / "chain.json").write_text(json.dumps(chain))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(backend="ours", parity={})
    (run / "metrics.json").write_text(json.dumps(metrics))
    labels = {r.rel: r.label for r in discover_runs(multirun)}
    assert labels["1"] == "sft→dpo[ipo]"
    assert set(next(r for r in discover_runs(multirun) if r.rel == "1").tasks) == {
        "arc_challenge",
        "arc_easy",
    }
