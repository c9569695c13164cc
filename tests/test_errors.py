"""`knightwatch.errors`: the error root and the two helpers every layer uses to show text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from knightwatch.errors import QUOTE_LIMIT, KnightwatchError, escaped, quoted
from knightwatch.guard.errors import RecorderUnavailable


@given(st.text())
def test_escaped_text_is_one_printable_line(text: str) -> None:
    out = escaped(text)
    assert out.isprintable()
    assert "\n" not in out and "\r" not in out and "\x1b" not in out
    assert (out == text) is text.isprintable()


def test_escaped_writes_each_control_character_as_its_escape() -> None:
    assert escaped("ok\x1b[1A\nFAIL\r\x00\udcff") == "ok\\x1b[1A\\nFAIL\\r\\x00\\udcff"


@given(st.text(min_size=QUOTE_LIMIT + 1))
def test_quoted_cuts_long_text_and_says_so(text: str) -> None:
    out = quoted(text)
    assert out.startswith(repr(text[:QUOTE_LIMIT]))
    assert out.endswith(f"({len(text)} characters, cut)")


def test_quoted_survives_a_hostile_repr() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert quoted(Hostile()) == "<Hostile object>"


def test_every_library_error_has_the_one_root() -> None:
    assert issubclass(RecorderUnavailable, KnightwatchError)
    assert issubclass(RecorderUnavailable, RuntimeError)
