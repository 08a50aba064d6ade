from __future__ import annotations

from pathlib import Path

import pytest

from core.params import ParameterError, parse_pairs, parse_value, read_params_file


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("999", 999),
        ("1.5", 1.5),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("GG", "GG"),
        ("true", "true"),
        ("null", "null"),
        ('"quoted"', '"quoted"'),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_values_are_json_only_for_lists_objects_and_numbers(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_pairs_split_on_the_first_equals() -> None:
    assert parse_pairs(["Parameter1=999", "Parameter4=a=b"]) == {
        "Parameter1": 999,
        "Parameter4": "a=b",
    }
    with pytest.raises(ParameterError, match="not KEY=VALUE"):
        parse_pairs(["Parameter1"])


def test_params_file_must_be_a_json_object(tmp_path: Path) -> None:
    good = tmp_path / "p.json"
    good.write_text('{"Parameter1": 5}')
    assert read_params_file(good) == {"Parameter1": 5}
    bad = tmp_path / "list.json"
    bad.write_text("[1]")
    with pytest.raises(ParameterError, match="must hold a JSON object"):
        read_params_file(bad)
    with pytest.raises(ParameterError, match="does not exist"):
        read_params_file(tmp_path / "missing.json")
