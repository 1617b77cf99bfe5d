"""Reference log-probs precomputed in one no-grad pass and cached on disk by fingerprint.

A reference-needing objective (DPO and friends) compares the policy with the init model. Computing the
reference once, before training, takes its forward out of every step; cached on disk it is paid once
for a whole sweep. The cache file ``<cache_dir>/reflogps/<key>.pt`` holds a (N, K) float32 tensor
aligned with the rows of a :class:`~arc_lab.train.batching.TokenizedDataset`, and ``<key>`` is a hash of:

* the init model's weights (:func:`arc_lab.models.model_fingerprint`, taken before any adapter),
* the tokenizer (vocabulary, special tokens, whether it adds BOS),
* the tokenised data (every id, which also covers seq_len, truncation and append_eos),
* the precision of the forward and the batch layout (prefix-shared or one row per answer: equal up to
  fp32 rounding, not bitwise, so a cache entry never stands in for the other layout's values).

The pass runs over whole questions with a progress bar and logs its throughput (examples/s, tokens/s).

Never used silently when stale or damaged: a different key is a miss (logged with the components in
which it differs from the nearest cached entry); an unreadable file, a wrong shape, a wrong key inside
the file, or values that fail their checksum are logged as a WARNING and recomputed. Files are written
to a temporary name and renamed, so a killed run leaves no half file.

Public API: :func:`tokenizer_fingerprint`, :func:`reference_key`, :func:`compute_reference_logps`,
:func:`cached_reference_logps`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from arc_lab.train.batching import TokenizedDataset, collate
from arc_lab.train.forward import answer_logps
from arc_lab.train.lora import is_lora, reference_mode

log = logging.getLogger(__name__)


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 (16 hex) of the vocabulary, the special tokens and the BOS/EOS the tokenizer adds."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    h.update(repr(tokenizer.encode("a")).encode())  # covers add_bos / add_eos behaviour
    return h.hexdigest()[:16]


def reference_key(
    model_fp: str, tokenizer_fp: str, dataset: TokenizedDataset, precision: str, shared: bool = False
) -> tuple[str, dict]:
    """(cache key, its components) for reference log-probs of ``dataset``."""
    parts = {
        "layout": "shared" if shared else "unshared",
        "model": model_fp,
        "tokenizer": tokenizer_fp,
        "data": dataset.fingerprint(),
        "seq_len": dataset.seq_len,
        "append_eos": dataset.append_eos,
        "precision": precision,
        "n": len(dataset),
        "k": dataset.max_k,
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return key, parts


def _chunks(dataset: TokenizedDataset, batch_size: int) -> list[list[int]]:
    """Whole questions in dataset order, up to ``batch_size`` examples per chunk (a bigger question alone)."""
    chunks: list[list[int]] = [[]]
    for g in dataset.groups:
        if chunks[-1] and len(chunks[-1]) + len(g) > batch_size:
            chunks.append([])
        chunks[-1].extend(g)
    return chunks


@torch.no_grad()
def compute_reference_logps(
    model: nn.Module,
    dataset: TokenizedDataset,
    *,
    batch_size: int,
    pad_id: int,
    precision: str = "fp32",
    shared: bool = False,
    progress: bool = True,
) -> torch.Tensor:
    """Log-probs of every answer of ``dataset`` under the reference policy, shape (N, K), 0 where masked.

    ``model`` is the init model, or a LoRA model (then evaluated with its adapter disabled). Runs in
    eval mode over whole questions in dataset order (``shared``: each prompt and distinct answer once), with
    a progress bar; logs examples/s and tokens/s at the end. The training mode is restored afterwards.
    """
    device = next(model.parameters()).device
    out = torch.zeros((len(dataset), dataset.max_k), dtype=torch.float32)
    was_training = model.training
    model.eval()
    t0, n_tokens = time.perf_counter(), 0
    bar = tqdm(total=len(dataset), desc="reference log-probs", unit="ex", disable=not progress)
    try:
        for idx in _chunks(dataset, batch_size):
            batch = collate(dataset, idx, pad_id, shared=shared).to(device)
            with reference_mode(model) if is_lora(model) else nullcontext():
                lp = answer_logps(model, batch, precision=precision).logps
            out[idx, : lp.shape[1]] = lp.cpu()
            n_tokens += batch.n_tokens
            bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    wall = max(time.perf_counter() - t0, 1e-9)
    log.info(
        "reference log-probs: %d examples (%d tokens, %s layout) in %.1f s: %.1f examples/s, %.0f tokens/s",
        len(dataset),
        n_tokens,
        "prefix-shared" if shared else "one row per answer",
        wall,
        len(dataset) / wall,
        n_tokens / wall,
    )
    return out


def _checksum(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _load(path: Path, key: str, shape: tuple[int, int]) -> torch.Tensor | None:
    """The cached tensor, or None with a WARNING saying what is wrong with the file."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        logps, problem = blob["logps"], None
        if blob.get("key") != key:
            problem = f"its key is {blob.get('key')!r}, not {key!r}"
        elif tuple(logps.shape) != shape or logps.dtype != torch.float32:
            problem = f"its tensor is {tuple(logps.shape)} {logps.dtype}, expected {shape} float32"
        elif _checksum(logps) != blob.get("checksum"):
            problem = "its values do not match their checksum (modified after writing)"
        elif not torch.isfinite(logps).all():
            problem = "it holds non-finite values"
    except Exception as e:  # unreadable, truncated, not a dict, missing fields
        problem = f"it cannot be read ({type(e).__name__}: {e})"
    if problem:
        log.warning("reference cache: INVALID %s: %s; recomputing", path, problem)
        return None
    return logps


def _why_miss(root: Path, parts: dict) -> str:
    """Which key components differ from the nearest cached entry (fewest differences, then newest)."""
    best: tuple[int, float, str, list[str]] | None = None
    for meta in root.glob("*.json"):
        try:
            prev = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        diff = [k for k in parts if prev.get(k) != parts[k]]
        cand = (len(diff), -meta.stat().st_mtime, meta.stem, diff)
        best = cand if best is None or cand < best else best
    if best is None:
        return "cache empty"
    return f"nearest entry {best[2]} differs in {best[3]}"


def _save(path: Path, key: str, parts: dict, logps: torch.Tensor) -> None:
    """Write tensor + meta sidecar atomically (temporary file, then os.replace)."""
    for target, write in (
        (
            path,
            lambda f: torch.save(
                {"key": key, "meta": parts, "logps": logps, "checksum": _checksum(logps)}, f
            ),
        ),
        (path.with_suffix(".json"), lambda f: f.write(json.dumps(parts, indent=1).encode())),
    ):
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def cached_reference_logps(
    model: nn.Module,
    tokenizer,
    dataset: TokenizedDataset,
    *,
    model_fp: str,
    cache_dir: str | Path,
    batch_size: int,
    precision: str = "fp32",
    shared: bool = False,
    progress: bool = True,
) -> tuple[torch.Tensor, str]:
    """Reference log-probs (N, K) of ``dataset`` from the disk cache, computed and stored on a miss.

    Args:
        model: the init model, or a LoRA model whose adapter-off network is the init model.
        tokenizer: the tokenizer that built ``dataset``.
        dataset: pre-tokenised training examples.
        model_fp: :func:`arc_lab.models.model_fingerprint` of the init model (before any adapter).
        cache_dir: root of the caches; files go to ``<cache_dir>/reflogps/``.
        batch_size: examples per no-grad forward.
        precision: ``fp32`` | ``bf16``.
        shared: compute with the prefix-shared layout (a key component: the two layouts agree to fp32
            rounding, not bitwise).
        progress: show a progress bar while computing.

    Returns:
        (logps (N, K) float32, ``"hit <key>"`` or ``"miss <key>"``).
    """
    key, parts = reference_key(model_fp, tokenizer_fingerprint(tokenizer), dataset, precision, shared)
    root = Path(cache_dir) / "reflogps"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key}.pt"
    if path.exists():
        logps = _load(path, key, (len(dataset), dataset.max_k))
        if logps is not None:
            log.info("reference cache: hit %s (%s)", key, path)
            return logps, f"hit {key}"
        reason = "file invalid"
    else:
        reason = _why_miss(root, parts)
    log.info("reference cache: miss %s (%s); computing %d examples", key, reason, len(dataset))
    logps = compute_reference_logps(
        model,
        dataset,
        batch_size=batch_size,
        pad_id=tokenizer.pad_token_id,
        precision=precision,
        shared=shared,
        progress=progress,
    )
    _save(path, key, parts, logps)
    return logps, f"miss {key}"
