"""Durations ("10m", "9h30m") and memory sizes ("8G", "512Mi") as validated pydantic types.

Values are held as whole seconds and bytes and written back in the planner's short form.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(w|d|h|m|s)")
_DURATION_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:w|d|h|m|s))+$")
_DURATION_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)$", re.IGNORECASE)
_MEMORY_POWER = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_duration(value: object) -> int:
    """Whole seconds from a number of seconds or a string such as "10m", "9h30m", "1d".

    Raises:
        ValueError: naming the value when it is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif _DURATION_WHOLE.match(text):
            seconds = sum(float(n) * _DURATION_SECONDS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(
                f"{value!r} is not a duration: use seconds or units w, d, h, m, s as in '9h30m'"
            )
    else:
        raise ValueError(f"{value!r} is not a duration")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative")
    return round(seconds)


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
        size = float(value)
    elif isinstance(value, str):
        match = _MEMORY.match(value.strip())
        if not match:
            raise ValueError(
                f"{value!r} is not a memory size: use bytes or a unit K, M, G, T, P as in '8G'"
            )
        number, unit, _ = match.groups()
        size = float(number) * 1024 ** _MEMORY_POWER[unit.upper()]
    else:
        raise ValueError(f"{value!r} is not a memory size")
    if size < 0:
        raise ValueError(f"memory size {value!r} is negative")
    return round(size)


def format_memory(size: int) -> str:
    """The short form of a number of bytes: 8589934592 -> "8G", 1536 -> "1536"."""
    for unit in ("P", "T", "G", "M", "K"):
        scale = 1024 ** _MEMORY_POWER[unit]
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


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
