"""Every stage hash and eval key of every sweep cell of every experiment preset, as JSON.

A refactor that must keep existing caches valid is checked by running this on the old commit and on the new
one and comparing the two files::

    python bench/cache_keys.py --out /tmp/keys-old.json          # at the old commit
    python bench/cache_keys.py --out /tmp/keys-new.json          # at the new one
    python bench/cache_keys.py --compare /tmp/keys-old.json /tmp/keys-new.json

Nothing is trained or loaded: the keys are computed from the composed configs and the content fingerprints
of the data (the real-data presets need ``ARC_LAB_DATA_DIR``; without it their cells are listed as skipped).
Extra overrides after ``--`` apply to every cell (``-- seed=1``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cells(experiment: str) -> list[list[str]]:
    """The override lists of every cell of ``experiment``'s sweep (its sweeper params, crossed)."""
    from hydra import compose
    from omegaconf import OmegaConf

    cfg = compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    node = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(node, resolve=False) if node is not None else {}
    axes = [[f"{k}={v}" for v in str(vals).split(",")] for k, vals in params.items()]
    return [list(c) for c in itertools.product(*axes)] if axes else [[]]


def keys(extra: list[str]) -> dict[str, object]:
    from hydra import compose, initialize_config_dir

    from arc_lab.config import register_configs
    from arc_lab.run import build
    from arc_lab.run.plan import ModelRef, plan_chain, root_ref, stage_hash, stage_label
    from arc_lab.run.runinfo import config_hash
    from arc_lab.stage_kinds import STAGE_KINDS

    register_configs()
    out: dict[str, object] = {}
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        experiments = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
        for exp in experiments:
            for cell in _cells(exp):
                name = f"{exp}:{','.join(cell + extra)}"
                cfg = compose(config_name="config", overrides=[f"experiment={exp}", *cell, *extra])
                try:
                    plan = plan_chain(cfg)
                    ref = root_ref(plan[0])
                    stages = []
                    for run in plan:
                        if not STAGE_KINDS[run.stage.name].trains:
                            continue
                        h = stage_hash(run, ref.key, build.stage_inputs(run))
                        label = stage_label(run, ref)
                        stages.append({"label": label, "hash": h})
                        # the weights digest is unknown without training: the key of an eval of this stage
                        # is checked through its stage hash, which the model identity starts with
                        ref = ModelRef(key=f"stage:{h}", label=label)
                    run = plan[-1]
                    out[name] = {
                        "stages": stages,
                        "eval_key": config_hash({"eval": build.eval_key(run)}),
                        "eval_inputs": build.eval_inputs(run),
                        "root": root_ref(plan[0]).key,
                    }
                except Exception as e:  # noqa: BLE001 - a cell needing absent data is listed, not fatal
                    out[name] = {"skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return out


def compare(old: dict, new: dict) -> int:
    bad = 0
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a != b:
            bad += 1
            print(f"DIFFERENT {name}\n  old: {a}\n  new: {b}")
    same = len(set(old) & set(new)) - bad
    skipped = sum("skipped" in v for v in new.values())
    print(f"{same} cells identical, {bad} different, {skipped} skipped (no data)")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="write the keys here (default: stdout)")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two key files")
    p.add_argument("extra", nargs="*", help="overrides applied to every cell (after --)")
    args = p.parse_args()
    if args.compare:
        return compare(*(json.loads(Path(f).read_text()) for f in args.compare))
    os.environ.setdefault("ARC_LAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
    text = json.dumps(keys(args.extra), indent=1, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
