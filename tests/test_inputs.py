"""knightwatch.inputs and flags.yamlfile: the checks every file passes before it is parsed."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from knightwatch.flags.yamlfile import load_yaml
from knightwatch.inputs import (
    MAX_DEPTH,
    YAML_MAX_BYTES,
    InputFileError,
    check_depth,
    check_json_depth,
    is_name,
    load_toml,
    read_bytes,
    read_text,
)
from knightwatch.release.dsse import decode_envelope
from knightwatch.release.errors import ReleaseInputError


def test_depth_counts_brackets_outside_strings_and_comments() -> None:
    check_depth('a = "' + "[" * 500 + '"\n# ' + "{" * 500 + "\n", "f")  # strings, comments
    check_depth("[" * MAX_DEPTH + "]" * MAX_DEPTH, "f")
    with pytest.raises(InputFileError, match=r"f: line 2: nested deeper than 32 levels"):
        check_depth("x\n" + "[" * (MAX_DEPTH + 1), "f")


def test_yaml_refuses_aliases_deep_blocks_duplicates_and_impossible_dates() -> None:
    assert load_yaml("a: [1, {b: 2023-02-28}]\n", "f") == {"a": [1, {"b": date(2023, 2, 28)}]}
    with pytest.raises(InputFileError, match="YAML aliases"):
        load_yaml("a: &x [1]\nb: *x\n", "f")
    with pytest.raises(InputFileError, match="nested deeper than 32"):
        load_yaml("\n".join(" " * i + "k:" for i in range(40)) + " 1\n", "f")
    with pytest.raises(InputFileError, match="duplicate key 'a'"):
        load_yaml("a: 1\na: 2\n", "f")
    with pytest.raises(InputFileError, match=r"line 1, column 7: 2023-02-29 is not a real date"):
        load_yaml("when: 2023-02-29\n", "f")


def test_size_emptiness_and_kind_are_checked_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with big.open("wb") as f:
        f.truncate(10_000_000)
    with pytest.raises(InputFileError, match="10000000 bytes is over the 100 byte limit"):
        read_bytes(big, "limits file", 100)
    empty = tmp_path / "e.toml"
    empty.write_text("  \n")
    with pytest.raises(InputFileError, match="the file is empty"):
        read_bytes(empty, "limits file", 100)
    comments = tmp_path / "c.toml"
    comments.write_text("# nothing\n")
    with pytest.raises(InputFileError, match="no settings"):
        load_toml(comments, "limits file")
    with pytest.raises(InputFileError, match="not a regular file"):
        read_bytes(Path("/dev/zero"), "limits file", 100)


@pytest.mark.parametrize("name", ["ci", "release-manager", "n_1", "A" * 64])
def test_names_of_people_and_components_that_follow_the_rule(name: str) -> None:
    assert is_name(name)


@pytest.mark.parametrize(
    "name", ["", " ci", "ci ", "ci\n", "c i", "ci.1", 'ci"', "é", "A" * 65, "ci\x00"]
)
def test_a_padded_or_odd_spelling_is_no_name(name: str) -> None:
    """One spelling for one name: a padded twin would count as a second signer."""
    assert not is_name(name)


def test_a_byte_order_mark_is_read_past_in_toml_and_yaml_and_named_in_json(
    tmp_path: Path,
) -> None:
    """A file saved by a Windows editor opens with a UTF-8 byte-order mark. The TOML reader
    refused it as "not valid TOML: Invalid statement (line 1, column 1)", which named
    nothing the user could see (the YAML reader accepted it). It marks the encoding only:
    TOML and YAML read past it alike; JSON, whose bytes are signed, is refused naming it."""
    limits = tmp_path / "limits.toml"
    limits.write_bytes(b'\xef\xbb\xbfversion = "v1"\n[x]\nqty = 5\n')
    assert load_toml(limits, "limits file") == {"version": "v1", "x": {"qty": 5}}
    flags = tmp_path / "flags.yaml"
    flags.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert load_yaml(read_text(flags, "flags file", YAML_MAX_BYTES), "f") == {"a": 1}
    with pytest.raises(
        InputFileError, match=r"^envelope e\.json: starts with a UTF-8 byte-order mark \(BOM\)"
    ):
        check_json_depth(b'\xef\xbb\xbf{"payload": ""}', "envelope e.json")
    with pytest.raises(ReleaseInputError, match=r"e\.json: starts with a UTF-8 byte-order mark"):
        decode_envelope(b'\xef\xbb\xbf{"payload": ""}', source="envelope e.json")
