"""One JSON convention for every file arc_lab writes: non-finite floats become ``null`` (strict JSON),
and every reader of those files reads them back (``metrics.json``, ``samples/*.jsonl``, ``metrics.jsonl``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from arc_lab.analysis import quickstart, report
from arc_lab.eval.metrics import flat_metrics
from arc_lab.eval.outputs import read_samples, task_metrics, write_outputs
from arc_lab.run.runinfo import json_safe
from arc_lab.train.loggers import JsonlLogger, read_metrics


def strict_loads(text: str):
    """``json.loads`` that rejects the non-standard ``NaN``/``Infinity``/``-Infinity`` tokens."""

    def reject(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


def test_json_safe_turns_every_non_finite_float_into_null():
    nan, inf = float("nan"), float("inf")
    obj = {"a": nan, "b": [1.0, inf, {"c": -inf}], "d": (nan, 2), "e": "nan", "f": 0, "g": None, "h": True}
    out = json_safe(obj)
    assert out == {
        "a": None,
        "b": [1.0, None, {"c": None}],
        "d": [None, 2],
        "e": "nan",
        "f": 0,
        "g": None,
        "h": True,
    }
    json.dumps(out, allow_nan=False)  # strict: raises on any NaN/inf left
    assert obj["a"] is nan and obj["b"][1] == inf  # the input is not modified


def one_item_eval(root: Path) -> Path:
    """A real one-item evaluation folder: n = 1, so lm-eval's stderr is NaN (see ``mean_stderr``)."""
    samples = [
        {"doc_id": 0, "id": "builtin-mineral-7-color", "acc": 1.0, "acc_norm": 0.0, "acc_bytes": 1.0},
    ]
    samples[0]["loglikelihoods"] = [-0.5, float("-inf")]
    metrics = {"builtin": task_metrics(samples, num_fewshot=0, fingerprint="fp"), "model_fingerprint": "m"}
    assert math.isnan(metrics["builtin"]["acc_stderr"])
    return write_outputs(root / "run", metrics, {"builtin": samples})


def test_eval_files_are_strict_json_and_every_reader_reads_them(tmp_path):
    run_dir = one_item_eval(tmp_path)
    raw = strict_loads((run_dir / "metrics.json").read_text())
    assert raw["builtin"]["acc_stderr"] is None and raw["builtin"]["acc_norm_stderr"] is None
    line = (run_dir / "samples" / "builtin.jsonl").read_text().splitlines()[0]
    assert strict_loads(line)["loglikelihoods"] == [-0.5, None]
    assert read_samples(run_dir / "samples" / "builtin.jsonl")[0]["acc"] == 1.0

    # report: null stderr is "no stderr", the table says n/a
    tasks, fingerprint = report.read_metrics(run_dir / "metrics.json")
    m = tasks["builtin"]
    assert (m.acc, m.acc_norm, m.n, m.acc_stderr, m.acc_norm_stderr) == (1.0, 0.0, 1, None, None)
    assert fingerprint == "m"
    runs = report.discover_runs(tmp_path)
    assert report.load_samples(runs[0], "builtin")[0]["acc_norm"] == 0.0
    assert "1.0000 ± n/a" in "\n".join(report.runs_section(runs, ["builtin"]))

    # quickstart: reads the same folder through report; one entity, so the clustered stderr is NaN
    table = quickstart.controls_table(tmp_path, n_resamples=10)
    assert "| 1.0000 ± nan | 0.0000 ± nan | 1 | 1 |" in table

    # the run's summary numbers (pipeline: flat_metrics of metrics.json -> logger.log_summary)
    flat = flat_metrics(raw)
    assert flat["eval/builtin/acc_stderr"] is None and flat["eval/builtin/acc"] == 1.0
    with JsonlLogger(tmp_path) as lg:
        lg.log({"train/loss": float("nan"), "train/grad_norm": float("inf")}, step=1)
        lg.log_summary(flat)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [strict_loads(x)["summary"] if "summary" in x else None for x in lines] == [None, True]
    rows, summary = read_metrics(tmp_path / "metrics.jsonl")
    assert rows[0]["train/loss"] is None and rows[0]["train/grad_norm"] is None
    assert summary["eval/builtin/acc_stderr"] is None and summary["eval/builtin/acc"] == 1.0


def test_pipeline_summary_table_reads_a_null_stderr(tmp_path):
    from arc_lab.run.pipeline import summary_table

    run_dir = one_item_eval(tmp_path)
    table = summary_table([{"kind": "eval", "dir": str(run_dir), "label": "base"}])
    assert "base" in table and "1.0000" in table
