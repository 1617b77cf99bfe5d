"""tests/helpers.py builds what the app builds: its tiny-model presets read as ``model=<preset>`` composes them,
its size changes refused unless they name a size."""

from __future__ import annotations

import pytest
from helpers import CONF, model_preset, run_config, tiny_sizes

TINY_PRESETS = sorted(p.stem for p in (CONF / "model").glob("tiny_*.yaml"))


def test_there_are_tiny_presets():
    assert {"tiny_llama", "tiny_mistral"} <= set(TINY_PRESETS)


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_a_preset_reads_as_the_app_composes_it(preset):
    assert model_preset(preset) == run_config([f"model={preset}"]).model


def test_size_changes_must_name_a_size():
    assert tiny_sizes("tiny_mistral", num_layers=1)["num_layers"] == 1
    assert tiny_sizes("tiny_mistral")["num_layers"] == model_preset("tiny_mistral").tiny["num_layers"]
    with pytest.raises(TypeError, match="hiden_size"):
        tiny_sizes("tiny_llama", hiden_size=8)
