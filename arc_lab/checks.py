"""Config errors and the range checks the schemas' ``__post_init__`` run (no Hydra, no torch).

:mod:`arc_lab.config` (the Hydra schemas) and :mod:`arc_lab.train.args` (the training settings, which the
training code imports without Hydra) both use them.
"""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A composed config is invalid; the message names the override to fix."""


def _check_choice(key: str, value: Any, allowed: tuple | list) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: expected one of {list(allowed)}")


def _check_int(key: str, value: int | None, minimum: int, *, null: str = "") -> None:
    """``value >= minimum`` (``null`` says what None means; empty = None is not allowed)."""
    if value is None and null:
        return
    if value is None or value < minimum:
        also = f" or null ({null})" if null else ""
        raise ConfigError(f"{key}={value}: expected an integer >= {minimum}{also}")


def _check_float(
    key: str,
    value: float,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``value`` is a finite number in ``[low, high]`` (``low_open``/``high_open`` exclude the ends)."""
    ok = (
        math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        if high == math.inf:
            rng = f"{'>' if low_open else '>='} {low:g}"
        else:
            rng = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{key}={value}: expected a finite number {rng}")
