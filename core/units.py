"""Durations ("10m", "9h30m") and memory sizes ("8G", "512Mi") as validated pydantic types.

Values are held as whole seconds and bytes and written back in the planner's short form.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(w|d|h|m|s)", re.ASCII)
_DURATION_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:w|d|h|m|s))+$", re.ASCII)
_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
_DURATION_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)$", re.IGNORECASE | re.ASCII)
_MEMORY_POWER = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
MAX_SECONDS = 10 * 366 * 86400
"""The longest duration anything here accepts: ten years."""
MAX_BYTES = 2**60
"""The largest memory size anything here accepts: one EiB."""
MAX_CORES = 1_000_000
"""The most cores any request may name."""


def _float(value: float | str) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        return math.inf


def _bounded(amount: float, value: object, what: str, limit: int) -> int:
    if math.isnan(amount):
        raise ValueError(f"{what} {value!r:.40} is not a number")
    if amount < 0:
        raise ValueError(f"{what} {value!r:.40} is negative")
    if amount > limit:
        raise ValueError(f"{what} {value!r:.40} is beyond the largest allowed, {limit}")
    return round(amount)


def parse_duration(value: object) -> int:
    """Whole seconds from a number of seconds or a string such as "10m", "9h30m", "1d".

    Raises:
        ValueError: naming the value when it is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = _float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if _NUMBER.fullmatch(text):
            seconds = _float(text)
        elif _DURATION_WHOLE.fullmatch(text):
            seconds = sum(_float(n) * _DURATION_SECONDS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(
                f"{value!r} is not a duration: use seconds or units w, d, h, m, s as in '9h30m'"
            )
    else:
        raise ValueError(f"{value!r:.40} is not a duration")
    return _bounded(seconds, value, "duration", MAX_SECONDS)


def format_duration(seconds: int) -> str:
    """The short form of a number of seconds: 34200 -> "9h30m", 0 -> "0s"."""
    if seconds == 0:
        return "0s"
    parts = []
    rest = seconds
    for unit in ("d", "h", "m", "s"):
        count, rest = divmod(rest, _DURATION_SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_memory(value: object) -> int:
    """Bytes from a number of bytes or a string such as "8G", "512Mi", "1.5TB".

    Binary multiples are used throughout (1G = 1024**3 bytes), as batch systems do.

    Raises:
        ValueError: naming the value when it is not a memory size.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a memory size")
    if isinstance(value, int | float):
        size = _float(value)
    elif isinstance(value, str):
        match = _MEMORY.fullmatch(value.strip())
        if not match:
            raise ValueError(
                f"{value!r} is not a memory size: use bytes or a unit K, M, G, T, P as in '8G'"
            )
        number, unit, _ = match.groups()
        size = _float(number) * 1024 ** _MEMORY_POWER[unit.upper()]
    else:
        raise ValueError(f"{value!r:.40} is not a memory size")
    return _bounded(size, value, "memory size", MAX_BYTES)


def format_memory(size: int) -> str:
    """The short form of a number of bytes: 8589934592 -> "8G", 1536 -> "1536"."""
    for unit in ("P", "T", "G", "M", "K"):
        scale = 1024 ** _MEMORY_POWER[unit]
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def human_memory(size: int) -> str:
    """A size as a person reads it: 25275338752 -> "23.5 GiB", 512 -> "512 B"."""
    for unit in ("P", "T", "G", "M", "K"):
        scale = 1024 ** _MEMORY_POWER[unit]
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}iB"
    return f"{size} B"


def human_duration(seconds: int) -> str:
    """A duration as a person reads it, in its two largest units: 34200 -> "9 h 30 min"."""
    if seconds == 0:
        return "0 s"
    parts = []
    rest = seconds
    for unit, name in (("d", "d"), ("h", "h"), ("m", "min"), ("s", "s")):
        count, rest = divmod(rest, _DURATION_SECONDS[unit])
        if count:
            parts.append(f"{count} {name}")
    return " ".join(parts[:2])


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "examples": ["10m", "9h30m"], "description": "Seconds or w/d/h/m/s"}
    ),
]
"""Seconds in Python, "9h30m" in JSON."""

Memory = Annotated[
    int,
    BeforeValidator(parse_memory),
    PlainSerializer(format_memory, return_type=str),
    WithJsonSchema(
        {"type": "string", "examples": ["8G", "512M"], "description": "Bytes or K/M/G/T/P"}
    ),
]
"""Bytes in Python, "8G" in JSON."""
