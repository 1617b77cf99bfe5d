"""``metrics.json`` and ``samples/<task>.jsonl``: the evaluation's files, shared by both backends."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from arc_lab.data.records import MCItem
from arc_lab.eval.metrics import aggregate
from arc_lab.runinfo import json_safe

#: Top-level keys of ``metrics.json`` that describe the run rather than a task.
METADATA_KEYS = ("model_fingerprint", "backend", "parity", "lm_eval")


def items_fingerprint(items: Sequence[MCItem]) -> str:
    """Short sha256 over the items' content (used when the data module offers no fingerprint)."""
    h = hashlib.sha256()
    for it in items:
        h.update(
            json.dumps(
                [it.id, it.question, list(it.choices), it.gold, list(it.labels), it.support],
                ensure_ascii=False,
            ).encode("utf-8")
        )
        h.update(b"\n")
    return h.hexdigest()[:16]


def dataset_fingerprint(task: str, split: str, data_dir) -> str:
    """The data module's fingerprint of the file (or generated set) a task's eval split was read from."""
    from arc_lab.data.loaders import dataset_fingerprint as loader_fp

    return loader_fp(task, split, data_dir)


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
    """Read a ``samples/<task>.jsonl`` file back."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
