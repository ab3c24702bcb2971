"""Checks of API arguments that raise the one-line :class:`ArgumentError` the CLI reports (exit 2)."""

from __future__ import annotations

from typing import Any

from mbexport.errors import ArgumentError


def check_int(name: str, value: Any, low: int, high: int | None = None, why: str = "") -> None:
    """ArgumentError unless ``value`` is an int (not a bool) in [low, high]; ``name`` says the
    argument and its option, ``why`` the reason for the bounds."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value and (high is None or value <= high):
        return
    bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
    raise ArgumentError(f"{name} must be an integer {bounds}{f' ({why})' if why else ''}, got {value!r}")
