"""Artifact paths are printable: no control, format or line-separator characters.

A path is a finding's subject, so it lands in the admission service's log line and the
node's refusal as it is. A node whose artifacts held a file named with a newline in it
(`x`, newline, `ADMISSION node=n9 verdict=admitted ...`) attested it, and the service
wrote a forged line into the control plane's log; a bidi override (U+202E) showed one
file's name as another's. `release build` and the node's measurement refuse such a
name in one line naming the directory, the path and the character; a manifest or
signed statement listing one is refused too.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from knightwatch.release.contents import ReleaseContents, contents_from_directory
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.manifest import Manifest

H = "a" * 64
HOSTILE = [
    "x\nADMISSION node=n9 verdict=admitted",
    "x\rboth",
    "nul\x00here",
    "esc\x1b[2Jclear",
    "del\x7f",
    "c1\x85next-line",
    "rtl\u202egnp.exe",
    "zero\u200bwidth",
    "line\u2028sep",
    "para\u2029sep",
    "bom\ufeff",
    "dir/tab\tname",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_a_path_with_an_unprintable_character_is_refused_in_one_line(path: str) -> None:
    with pytest.raises(ReleaseInputError) as raised:
        ReleaseContents(artifacts={path: H}, config_sha256=H, flag_schema={})
    message = str(raised.value)
    assert "\n" not in message and "\r" not in message, message
    assert "artifact path" in message and "unprintable character U+" in message, message


@pytest.mark.parametrize("path", HOSTILE)
def test_a_signed_statement_listing_one_is_refused(path: str) -> None:
    good = Manifest(
        release_id="r1",
        contents=ReleaseContents(artifacts={"ok": H}, config_sha256=H, flag_schema={}),
    )
    payload = good.statement_bytes().replace(b'"name":"ok"', _json_name(path))
    with pytest.raises(ReleaseInputError, match="unprintable character"):
        Manifest.from_statement_bytes(payload, source="statement")


def _json_name(path: str) -> bytes:
    return b'"name":' + msgspec.json.encode(path)


@pytest.mark.parametrize("path", [p for p in HOSTILE if "\x00" not in p and "/" not in p])
def test_a_node_holding_such_a_file_cannot_be_measured(tmp_path: Path, path: str) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "router.py").write_bytes(b"route()\n")
    (app / path).write_bytes(b"anything\n")
    config = tmp_path / "config.toml"
    config.write_bytes(b"[router]\n")
    with pytest.raises(ReleaseInputError) as raised:
        contents_from_directory(app, config, {})
    message = str(raised.value)
    assert "\n" not in message and "\r" not in message, message
    assert str(app) in message and "unprintable character U+" in message, message


@pytest.mark.parametrize("path", ["router.py", "bin/ünïcødé-ok.so", "a b/c-d_e.f+g", "日本/x"])
def test_printable_paths_stay_accepted(path: str) -> None:
    contents = ReleaseContents(artifacts={path: H}, config_sha256=H, flag_schema={})
    assert path in contents.artifacts
