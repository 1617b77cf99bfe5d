"""End of a stage: a standalone checkpoint that ``AutoModelForCausalLM.from_pretrained`` loads without peft.

For a LoRA model the adapter is merged into the base weights (``merge_and_unload``: W + (alpha/r)·B·A,
computed in the weights' dtype, then cast to ``dtype``); a fully fine-tuned model is saved as is (cast to
``dtype``). The tokenizer is saved alongside. The directory is written to a temporary sibling and renamed,
so a killed merge never leaves a half checkpoint at ``out_dir``. Weights that are NaN/inf after the
cast (float16 overflow) are refused before anything is written.

Public API: :func:`merge`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from arc_lab.models import resolve_dtype
from arc_lab.train.health import TrainingDiverged, nonfinite_parameters
from arc_lab.train.lora import is_lora

log = logging.getLogger(__name__)


def merge(model: nn.Module, tokenizer, out_dir: str | Path, *, dtype: str = "float32") -> Path:
    """Merge a LoRA adapter (if any) and save a standalone ``save_pretrained`` checkpoint + tokenizer.

    The LoRA model is consumed: its base layers receive the merged weights and the adapter layers are
    removed (no copy of a 7B model is made); a plain model is cast to ``dtype`` in place. Keep the adapter checkpoint (``out_dir`` of ``train``) if
    the unmerged model is still needed.

    Args:
        model: a peft LoRA model (from :func:`arc_lab.train.loop.train`) or a plain causal LM.
        tokenizer: saved next to the weights.
        out_dir: target directory (replaced if it exists).
        dtype: ``float32`` (default; CPU) | ``bfloat16`` | ``float16`` (the 7B recipe).

    Returns:
        ``out_dir`` as a Path; it holds ``config.json``, ``model.safetensors`` (or shards), tokenizer
        files and ``merge_info.json``.
    """
    torch_dtype = resolve_dtype(dtype)
    out_dir = Path(out_dir)
    lora = is_lora(model)
    merged = model.merge_and_unload() if lora else model
    merged = merged.to(torch_dtype)
    merged.eval()
    bad = nonfinite_parameters(merged, trainable_only=False)
    if bad:  # finite fp32 weights can overflow a float16 cast; never save weights that cannot score
        raise TrainingDiverged(
            f"merging to {dtype}: parameters {bad[:3]}{' ...' if len(bad) > 3 else ''} hold NaN/inf "
            f"(values beyond the range of {dtype}?); nothing was written to {out_dir}. Try "
            f"stage.merge_dtype=float32 or bfloat16, or a lower stage.optim.lr."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in sorted(out_dir.parent.glob(f".tmp-{out_dir.name}-*")):  # a merge killed midway (7B: ~14 GB)
        log.info("removing %s, left by a merge that was killed before it finished", stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "merge_info.json").write_text(json.dumps({"lora_merged": lora, "dtype": dtype}, indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved %s checkpoint (%s) to %s", "merged LoRA" if lora else "full", dtype, out_dir)
    return out_dir
