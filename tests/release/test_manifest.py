from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from knightwatch.flags.definition import definition_hash
from knightwatch.release.contents import contents_from_directory, contents_from_memory
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.flagfiles import load_flag_schema
from knightwatch.release.manifest import Manifest, decode_manifest, encode_manifest

from .release_world import CONFIG, FILES, FLAGS, RLP, RLP_HASH, World


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_directory_and_memory_give_the_same_contents(tmp_path: Path) -> None:
    write_tree(tmp_path / "art", FILES)
    (tmp_path / "cfg.toml").write_bytes(CONFIG)
    (tmp_path / "flags.json").write_text(json.dumps(FLAGS))
    seen: list[tuple[int, int]] = []
    on_disk = contents_from_directory(
        tmp_path / "art",
        tmp_path / "cfg.toml",
        load_flag_schema(tmp_path / "flags.json"),
        lambda done, total: seen.append((done, total)),
    )
    assert on_disk == contents_from_memory(FILES, CONFIG, FLAGS)
    assert seen[-1] == (3, 3)


def test_manifest_digest_is_reproducible_and_order_independent(world: World) -> None:
    forward = contents_from_memory(FILES, CONFIG, FLAGS)
    backward = contents_from_memory(dict(reversed(list(FILES.items()))), CONFIG, FLAGS)
    one = Manifest(release_id="r1", contents=forward)
    two = Manifest(release_id="r1", contents=backward)
    assert one.statement_bytes() == two.statement_bytes()
    assert one.digest() == two.digest()
    assert Manifest(release_id="r2", contents=forward).digest() != one.digest()


def test_statement_round_trip_and_json_file_round_trip() -> None:
    manifest = Manifest(release_id="r1", contents=contents_from_memory(FILES, CONFIG, FLAGS))
    assert Manifest.from_statement_bytes(manifest.statement_bytes(), source="s") == manifest
    assert decode_manifest(encode_manifest(manifest), source="m") == manifest
    statement = json.loads(manifest.statement_bytes())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert {s["name"] for s in statement["subject"]} == set(FILES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not a manifest JSON document"),
        ('{"release_id": "r1"}', "contents"),
        (
            '{"release_id": "bad id", "contents": {"artifacts": {}, "config_sha256": "'
            + "0" * 64
            + '", "flag_schema": {}}}',
            "release_id",
        ),
        (
            '{"release_id": "r", "contents": {"artifacts": {"/etc/x": "' + "0" * 64 + '"}, '
            '"config_sha256": "' + "0" * 64 + '", "flag_schema": {}}}',
            "normalised relative POSIX path",
        ),
        (
            '{"release_id": "r", "contents": {"artifacts": {}, "config_sha256": "abc", '
            '"flag_schema": {}}}',
            "config_sha256",
        ),
    ],
)
def test_malformed_manifests_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ReleaseInputError, match=message):
        decode_manifest(text.encode(), source="manifest m.json")


def test_flag_table_accepts_hashes_meanings_and_the_registry_file(tmp_path: Path) -> None:
    table = tmp_path / "flags.yaml"
    table.write_text(
        f"{RLP}:\n  description: Retail Liquidity Program routing\n"
        "  safe_default: false\n  trading_behaviour: true\n"
        f"ops.audit.verbose: {definition_hash('ops.audit.verbose', 'x', False, False)}\n"
    )
    schema = load_flag_schema(table)
    assert schema[RLP] == RLP_HASH
    assert schema["ops.audit.verbose"] == definition_hash("ops.audit.verbose", "x", False, False)
    registry = tmp_path / "feature-flags.yaml"
    registry.write_text(
        "version: 1\nflags:\n"
        f"  - id: {RLP}\n    description: Retail Liquidity Program routing\n"
        "    safe_default: false\n    trading_behaviour: true\n    lifecycle: active\n"
        "    created: 2012-06-01\n    owner: smars\n    expires: 2013-01-01\n"
        "  - id: trading.smars.power_peg\n    description: Legacy Power Peg\n"
        "    safe_default: false\n    trading_behaviour: true\n    lifecycle: retired\n"
        "    created: 2003-01-01\n    owner: smars\n    expires: 2004-01-01\n"
    )
    assert load_flag_schema(registry) == {RLP: RLP_HASH}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "top level must be a mapping"),
        ("trading.x: 12\n", "trading.x.*definition hash"),
        ("trading.x: {description: d}\n", "safe_default"),
        ("'bad id': " + "0" * 64 + "\n", "without whitespace"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_flag_files_name_the_flag_and_rule(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text(text)
    with pytest.raises(ReleaseInputError, match=message):
        load_flag_schema(path)


def test_missing_artifact_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReleaseInputError, match="not a directory"):
        contents_from_directory(tmp_path / "nope", tmp_path / "c", {})


def test_a_symlinked_directory_is_measured_and_what_cannot_be_is_refused(tmp_path: Path) -> None:
    """Files a node runs from a linked directory are hashed (drift there is seen); a link
    loop or a broken link is an error naming it, never a file quietly left out."""
    write_tree(tmp_path / "art", FILES)
    write_tree(tmp_path / "lib", {"peg.py": b"power_peg = True\n"})
    (tmp_path / "art" / "vendor").symlink_to(tmp_path / "lib", target_is_directory=True)
    (tmp_path / "cfg.toml").write_bytes(CONFIG)
    before = contents_from_directory(tmp_path / "art", tmp_path / "cfg.toml", {})
    assert "vendor/peg.py" in before.artifacts
    (tmp_path / "lib" / "peg.py").write_bytes(b"power_peg = False\n")
    after = contents_from_directory(tmp_path / "art", tmp_path / "cfg.toml", {})
    assert after.artifacts["vendor/peg.py"] != before.artifacts["vendor/peg.py"]

    (tmp_path / "lib" / "back").symlink_to(tmp_path / "art", target_is_directory=True)
    with pytest.raises(ReleaseInputError, match=r"art/vendor/back links back.*symlink loop"):
        contents_from_directory(tmp_path / "art", tmp_path / "cfg.toml", {})
    (tmp_path / "lib" / "back").unlink()

    (tmp_path / "art" / "current.py").symlink_to(tmp_path / "v2" / "current.py")
    with pytest.raises(ReleaseInputError, match=r"current.py is a broken symlink"):
        contents_from_directory(tmp_path / "art", tmp_path / "cfg.toml", {})


@pytest.mark.parametrize("special", ["fifo", "link to /dev/zero"])
def test_a_pipe_or_device_in_the_artifacts_is_refused_not_left_out(
    tmp_path: Path, special: str
) -> None:
    """A FIFO or a symlink to /dev/zero among the artifacts was silently skipped: the
    manifest listed the other files and said nothing of the one it could not measure."""
    write_tree(tmp_path / "art", FILES)
    (tmp_path / "cfg.toml").write_bytes(CONFIG)
    odd = tmp_path / "art" / "smars" / "odd.py"
    if special == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to("/dev/zero")
    with pytest.raises(ReleaseInputError, match=r"smars/odd\.py is not a regular file"):
        contents_from_directory(tmp_path / "art", tmp_path / "cfg.toml", {})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # the reviewer reads the first `artifacts`, the signature covers the last
        (
            lambda text: text.replace(
                '"config_sha256"', '"artifacts": {"evil.py": "' + "e" * 64 + '"},\n"config_sha256"'
            ),
            "key 'artifacts' appears twice in one object",
        ),
        (
            lambda text: text.replace(
                '"config_sha256"',
                '"extra_artifacts": {"evil.py": "' + "e" * 64 + '"},\n"config_sha256"',
            ),
            "unknown field `extra_artifacts`",
        ),
        (lambda text: text.replace('"release_id"', '"note": "x", "release_id"'), "`note`"),
    ],
    ids=["duplicated-key", "unknown-contents-field", "unknown-field"],
)
def test_a_manifest_file_with_a_second_reading_or_an_unsigned_field_is_refused(
    edit: Callable[[str], str], message: str
) -> None:
    """`release sign M.json` signed whatever msgspec read: a duplicated key (JSON readers
    take the first or the last) or a field the manifest does not have let the file a signer
    reviewed list a file the signed release does not (or hide one it does)."""
    manifest = Manifest(release_id="r1", contents=contents_from_memory(FILES, CONFIG, FLAGS))
    text = encode_manifest(manifest).decode()
    edited = edit(text)
    assert edited != text
    with pytest.raises(ReleaseInputError, match=message) as caught:
        decode_manifest(edited.encode(), source="manifest m.json")
    assert str(caught.value).startswith("manifest m.json: ")
    assert decode_manifest(text.encode(), source="manifest m.json") == manifest
