from __future__ import annotations

import pytest

from core.units import format_duration, format_memory, parse_duration, parse_memory


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10m", 600),
        ("9h30m", 34200),
        ("1d", 86400),
        ("90", 90),
        (45, 45),
        ("1.5h", 5400),
        ("2w", 1209600),
        ("1h 30m", 5400),
        ("0s", 0),
    ],
)
def test_durations_parse(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten minutes", "10x", "", "-5", "h", True, None, "5m-"])
def test_bad_durations_are_named(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("8G", 8 * 1024**3),
        ("512M", 512 * 1024**2),
        ("512Mi", 512 * 1024**2),
        ("1.5T", int(1.5 * 1024**4)),
        ("360GB", 360 * 1024**3),
        ("100", 100),
        (2048, 2048),
        ("4 g", 4 * 1024**3),
    ],
)
def test_memory_parses(text: object, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("bad", ["8Q", "lots", "", "-1G", False, [1]])
def test_bad_memory_is_named(bad: object) -> None:
    with pytest.raises(ValueError, match="memory"):
        parse_memory(bad)


def test_round_trip_short_forms() -> None:
    assert format_duration(34200) == "9h30m"
    assert format_duration(0) == "0s"
    assert format_duration(86461) == "1d1m1s"
    assert format_memory(8 * 1024**3) == "8G"
    assert format_memory(1536) == "1536"
    for seconds in (1, 59, 3600, 34200, 90061):
        assert parse_duration(format_duration(seconds)) == seconds
    for size in (1, 1024, 8 * 1024**3, 3 * 1024**5):
        assert parse_memory(format_memory(size)) == size
