"""Copy a sweep's evaluated cells into a study folder that can be committed, so that every reported number
can be recomputed from the repository (``python -m arc_lab.report experiments/<study> --seed-table``).

Usage::

    python -m arc_lab.export <sweep dir> experiments/<study>

Per cell (every folder holding a ``metrics.json``) it keeps what the report reads and what tells the run
apart: ``metrics.json``, ``samples/<task>.jsonl.gz`` (gzipped; the fields the report and a re-scoring
need: ``doc_id``, ``id``, ``target``, ``loglikelihoods``, ``choice_chars``, ``pred``, ``pred_norm``, ``acc``,
``acc_norm``, ``context_hash``, and ``truncated`` where any continuation was cut), ``config.yaml``,
``.hydra/overrides.yaml``, ``chain.json`` and ``provenance.json``. Paths of the machine that ran it are
replaced: cache folders by ``<output_root>/stages/<hash>`` and ``<output_root>/evals/<hash>``, the
``output_root`` by ``<output_root>``, and the command line, working directory and host are dropped from
the provenance (its code revision, library versions and time are kept).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import sys
from pathlib import Path

from arc_lab.data.loaders import read_jsonl

KEEP = ("doc_id", "id", "target", "loglikelihoods", "choice_chars", "pred", "pred_norm", "acc", "acc_norm")
#: Overrides that name a place on the machine that ran the sweep.
MACHINE_OVERRIDES = ("output_root=", "hydra.sweep.dir=", "hydra.run.dir=", "data.data_dir=")


def _sample(record: dict) -> dict:
    out = {k: record[k] for k in KEEP if k in record}
    out["context_hash"] = str(record.get("context_hash", ""))[:16]
    if any(record.get("truncated") or []):
        out["truncated"] = record["truncated"]
    return out


def _cache_ref(path: str) -> str:
    parts = Path(path).parts
    return f"<output_root>/{parts[-2]}/{parts[-1]}" if len(parts) >= 2 else "<output_root>"


def export_cell(src: Path, dest: Path) -> None:
    """One cell: the files listed in the module docstring, machine paths replaced."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "metrics.json", dest / "metrics.json")
    if (src / "samples").is_dir():
        (dest / "samples").mkdir(exist_ok=True)
        for path in sorted((src / "samples").glob("*.jsonl")):
            lines = "".join(json.dumps(_sample(r)) + "\n" for _, r in read_jsonl(path))
            # mtime=0: the same samples give the same bytes (no spurious diffs when re-exported)
            (dest / "samples" / f"{path.name}.gz").write_bytes(gzip.compress(lines.encode(), mtime=0))
    if (src / "config.yaml").is_file():
        text = (src / "config.yaml").read_text()
        (dest / "config.yaml").write_text(
            re.sub(r"(?m)^output_root: .*$", "output_root: <output_root>", text)
        )
    overrides = src / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        (dest / ".hydra").mkdir(exist_ok=True)
        kept = [
            ln
            for ln in overrides.read_text().splitlines()
            if not ln.lstrip("- ").startswith(MACHINE_OVERRIDES)
        ]
        (dest / ".hydra" / "overrides.yaml").write_text("\n".join(kept) + "\n")
    if (src / "chain.json").is_file():
        chain = json.loads((src / "chain.json").read_text())
        for entry in chain:
            if "dir" in entry:
                entry["dir"] = _cache_ref(entry["dir"])
        (dest / "chain.json").write_text(json.dumps(chain, indent=2, sort_keys=True) + "\n")
    if (src / "provenance.json").is_file():
        prov = json.loads((src / "provenance.json").read_text())
        for key in ("command", "cwd", "host"):
            prov.pop(key, None)
        config = prov.get("config")
        if isinstance(config, dict) and "output_root" in config:
            config["output_root"] = "<output_root>"
        (dest / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True) + "\n")


def export_study(src: Path, dest: Path) -> list[Path]:
    """Every cell under ``src`` into the same relative folder under ``dest``; returns the cells written."""
    cells = sorted({p.parent for p in Path(src).rglob("metrics.json")})
    if not cells:
        raise ValueError(f"{src}: no metrics.json found in it or any subfolder")
    for cell in cells:
        export_cell(cell, Path(dest) / cell.relative_to(src))
    return cells


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m arc_lab.export <sweep dir> <study dir>``."""
    p = argparse.ArgumentParser(prog="python -m arc_lab.export", description=__doc__.split("\n")[0])
    p.add_argument("src", help="a sweep directory (searched recursively for metrics.json)")
    p.add_argument("dest", help="the study folder to write, e.g. experiments/quickstart_seeds")
    args = p.parse_args(argv)
    try:
        cells = export_study(Path(args.src), Path(args.dest))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {len(cells)} cells into {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
