"""``metrics.json`` and ``samples/<task>.jsonl``: the evaluation's files, shared by both backends."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from arc_lab.data.loaders import read_jsonl
from arc_lab.eval.metrics import aggregate
from arc_lab.run.runinfo import json_safe

#: Top-level keys of ``metrics.json`` that describe the run rather than a task.
METADATA_KEYS = ("model_fingerprint", "backend", "parity", "lm_eval")


def task_metrics(samples: Sequence[dict], *, num_fewshot: int, fingerprint: str) -> dict:
    """``metrics.json`` entry of one task: aggregates + ``num_fewshot`` + ``dataset_fingerprint``."""
    out = aggregate(samples)
    out.update(num_fewshot=num_fewshot, dataset_fingerprint=fingerprint)
    return out


def write_outputs(out_dir: str | Path, metrics: dict, samples: dict[str, list[dict]]) -> Path:
    """Write ``<out_dir>/metrics.json`` and ``<out_dir>/samples/<task>.jsonl``; returns ``out_dir``."""
    out = Path(out_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2, sort_keys=True) + "\n")
    for task, recs in samples.items():
        with open(out / "samples" / f"{task}.jsonl", "w", encoding="utf-8") as f:
            for rec in recs:
                f.write(json.dumps(json_safe(rec), ensure_ascii=False) + "\n")
    return out


def read_samples(path: str | Path) -> list[dict]:
    """Read a ``samples/<task>.jsonl`` file back: one record per non-blank line, in file order.

    The one reader of sample files (the report reads them with it too). Lines are split on ``"\\n"`` only
    (:func:`arc_lab.data.loaders.read_jsonl`), since :func:`write_outputs` leaves non-ASCII text unescaped.

    Raises:
        DataError: bytes that are not UTF-8, invalid JSON or a line that is not an object, naming the file
            and line.
    """
    return [record for _, record in read_jsonl(path)]
