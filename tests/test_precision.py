"""``stage.optim.precision=auto``: bf16 where native, fp32 elsewhere, logged once; an explicit bf16 that this
CPU would emulate warns with the measured cost; the stage hash sees the resolved value, so ``auto`` and the
explicit precision it resolves to share a cache entry, and explicit fp32 hashes are unchanged."""

from __future__ import annotations

import logging

import pytest
from helpers import run_config

from arc_lab import precision
from arc_lab.run import build
from arc_lab.run.plan import root_ref, stage_hash


@pytest.fixture()
def device(monkeypatch):
    """Pretend the device does (True) or does not (False) compute bf16 natively."""
    monkeypatch.setattr(precision, "_said", set())

    def set_native(native: bool) -> None:
        why = "test device with avx512_bf16" if native else "test device without bf16"
        monkeypatch.setattr(precision, "native_bf16", lambda: (native, why))

    return set_native


def _hash(run) -> str:
    return stage_hash(run, root_ref(run).key, build.stage_inputs(run))


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_resolves_to_the_native_precision_and_shares_its_hash(device, caplog, native, expected):
    device(native)
    with caplog.at_level(logging.INFO, logger="arc_lab.precision"):
        auto = run_config(["stage=dpo", "model=tiny_llama"])
    assert auto.stage.optim.precision == expected
    assert [r.message for r in caplog.records if "precision=auto" in r.message] == [
        f"stage.optim.precision=auto -> {expected}: test device {'with avx512_bf16' if native else 'without bf16'}"
    ]
    assert _hash(auto) == _hash(
        run_config(["stage=dpo", "model=tiny_llama", f"stage.optim.precision={expected}"])
    )


def test_explicit_bf16_on_an_emulating_cpu_warns_once_with_the_cost(device, caplog):
    device(False)
    with caplog.at_level(logging.WARNING, logger="arc_lab.precision"):
        for _ in range(2):
            run = run_config(["stage=dpo", "model=tiny_llama", "stage.optim.precision=bf16"])
    assert run.stage.optim.precision == "bf16"  # what was asked for is kept
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1
        and "12.7× slower per DPO step" in warnings[0]
        and "auto would choose fp32" in warnings[0]
    )


def test_explicit_fp32_presets_keep_fp32_and_bf16_native_does_not_warn(device, caplog):
    device(True)
    with caplog.at_level(logging.WARNING, logger="arc_lab.precision"):
        assert run_config(["stage=dpo_cpu"]).stage.optim.precision == "fp32"
        assert (
            run_config(["stage=dpo", "model=tiny_llama", "stage.optim.precision=bf16"]).stage.optim.precision
            == "bf16"
        )
    assert not caplog.records


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert "avx512_bf16" in precision.cpu_flags(info)
    assert precision.cpu_flags(tmp_path / "missing") is None


def test_a_bad_precision_is_one_config_error():
    from arc_lab.config import ConfigError

    with pytest.raises(ConfigError, match=r"stage.optim.precision.*fp16.*auto"):
        run_config(["stage=dpo", "stage.optim.precision=fp16"])
