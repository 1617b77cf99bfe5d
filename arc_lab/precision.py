"""``stage.optim.precision=auto``: bf16 where the hardware computes it natively, fp32 elsewhere.

bf16 autocast runs natively on CUDA devices that support it and on CPUs with AVX512-BF16 or AMX; on other
CPUs PyTorch emulates it, which bench/README.md measured on an AVX2-only CPU at 12.7× slower per DPO step
and 4.8× slower per evaluation than fp32. ``auto`` picks bf16 only where it is native and logs which it
chose and why (once per process); an explicit ``bf16`` on a CPU that emulates it warns once with that cost.
The resolved value is what the stage hash and the run folder's provenance record, so an ``auto`` run and an
explicit run of the same precision share a stage cache entry.

Imports torch lazily and nothing of Hydra.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
#: CPU flags (``/proc/cpuinfo``) under which bf16 matmuls run natively.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
EMULATED_COST = (
    "12.7× slower per DPO step and 4.8× slower per evaluation on an AVX2-only CPU (bench/README.md)"
)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags, or None where ``/proc/cpuinfo`` cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.lru_cache(maxsize=1)
def native_bf16() -> tuple[bool, str]:
    """Whether this process's device computes bf16 natively, and why (for the log line)."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported():
            return True, f"CUDA device {name} supports bf16"
        return False, f"CUDA device {name} does not support bf16"
    flags = cpu_flags()
    if flags is None:
        return False, "no CUDA device, and the CPU's flags cannot be read"
    native = sorted(f for f in NATIVE_BF16_FLAGS if f in flags)
    if native:
        return True, f"no CUDA device; the CPU has {', '.join(native)}"
    return (
        False,
        f"no CUDA device; the CPU has none of {', '.join(NATIVE_BF16_FLAGS)} (bf16 would be emulated)",
    )


_said: set[str] = set()


def _once(level: int, msg: str) -> None:
    if msg not in _said:
        _said.add(msg)
        log.log(level, msg)


def resolve_precision(requested: str) -> str:
    """``fp32`` or ``bf16`` for ``stage.optim.precision=requested``, logging the choice for ``auto`` and
    warning about an explicit ``bf16`` that this CPU would emulate."""
    if requested == "auto":
        native, why = native_bf16()
        chosen = "bf16" if native else "fp32"
        _once(logging.INFO, f"stage.optim.precision=auto -> {chosen}: {why}")
        return chosen
    if requested == "bf16":
        native, why = native_bf16()
        if not native:
            _once(
                logging.WARNING,
                f"stage.optim.precision=bf16 on a device that emulates it ({why}): measured "
                f"{EMULATED_COST}; stage.optim.precision=auto would choose fp32 here",
            )
    return requested
