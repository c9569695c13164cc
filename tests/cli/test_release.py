from __future__ import annotations

import base64
import json
import os
import re
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app

from ..release.release_world import CONFIG, FILES, RLP, RLP_HASH

runner = CliRunner()
WIDE = {"COLUMNS": "300"}


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env=WIDE)
    return result.exit_code, result.output


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """Keys for CI and the release manager, a policy, and a release tree."""
    entries = []
    for name in ("ci", "rm"):
        code, out = run("keys", "new", name, "--dir", tmp_path / "keys")
        assert code == 0, out
        entries.append(out[out.index("[[keys]]") :])
    (tmp_path / "policy.toml").write_text("threshold = 2\n\n" + "\n".join(entries))
    for name, data in FILES.items():
        (tmp_path / "release" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "release" / name).write_bytes(data)
    (tmp_path / "config.toml").write_bytes(CONFIG)
    (tmp_path / "flags.yaml").write_text(f"{RLP}: {RLP_HASH}\n")
    return tmp_path


def build_and_sign(site: Path, *signers: str) -> Path:
    code, out = run(
        "release", "build", "--id", "2012.08.01-rlp", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
        "--out", site / "m.json",
    )  # fmt: skip
    assert code == 0, out
    assert re.search(r"3 artifact\(s\), 1 flag\(s\), digest [0-9a-f]{64}", out)
    source = site / "m.json"
    for signer in signers:
        code, out = run("release", "sign", source, "--key", site / "keys" / f"{signer}.key")
        assert code == 0, out
        source = site / "m.dsse.json"
    return site / "m.dsse.json"


def test_keys_new_prints_a_usable_policy_entry(site: Path) -> None:
    assert (site / "keys" / "ci.key").stat().st_mode & 0o777 == 0o600
    code, out = run("keys", "new", "ci", "--dir", site / "keys")
    assert code == 2 and "already exists" in out
    code, out = run("keys", "show", site / "keys" / "rm.pub", "--signer", "rm")
    assert code == 0
    assert out.strip() in (site / "policy.toml").read_text()
    code, out = run("keys", "show", site / "config.toml", "--signer", "rm")
    assert code == 2 and "not a PEM public key" in out


def test_build_sign_twice_verify(site: Path) -> None:
    envelope = build_and_sign(site, "ci")
    code, out = run("release", "verify", envelope, "--policy", site / "policy.toml")
    assert code == 1
    assert "below_threshold" in out and "REFUSED" in out
    code, out = run("release", "sign", envelope, "--key", site / "keys" / "rm.key")
    assert code == 0 and "2 signature(s)" in out
    code, out = run("release", "verify", envelope, "--policy", site / "policy.toml")
    assert code == 0, out
    assert "VERIFIED release 2012.08.01-rlp" in out and "signed by ci, rm" in out
    code, out = run(
        "release", "verify", envelope, "--policy", site / "policy.toml", "--release", "other"
    )
    assert code == 1 and "not_target_release" in out


def test_same_signer_twice_stays_below_threshold(site: Path) -> None:
    envelope = build_and_sign(site, "ci", "ci")
    code, out = run("release", "verify", envelope, "--policy", site / "policy.toml")
    assert code == 1 and "below_threshold" in out and "1 distinct trusted signer" in out


def test_tampered_envelope_is_refused(site: Path) -> None:
    envelope = build_and_sign(site, "ci", "rm")
    text = envelope.read_text()
    payload = re.search(r'"payload": "([^"]+)"', text)
    assert payload is not None
    edited = payload.group(1)[:-8] + ("A" * 8 if payload.group(1)[-8:] != "A" * 8 else "B" * 8)
    envelope.write_text(text.replace(payload.group(1), edited))
    code, out = run("release", "verify", envelope, "--policy", site / "policy.toml")
    assert code == 1
    assert "manifest_tampered" in out or "manifest_malformed" in out


def test_attest_admits_a_matching_node_and_names_a_modified_file(site: Path) -> None:
    envelope = build_and_sign(site, "ci", "rm")
    common = (
        "release", "attest", "--node", "n1", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
        "--envelope", envelope, "--policy", site / "policy.toml",
    )  # fmt: skip
    code, out = run(*common)
    assert code == 0, out
    assert "ADMITTED node n1 runs release 2012.08.01-rlp" in out
    (site / "release" / "smars" / "router.py").write_text("power_peg()\n")
    (site / "release" / "smars" / "extra.py").write_text("x = 1\n")
    code, out = run(*common)
    assert code == 1
    assert "file_mismatch" in out and "smars/router.py" in out
    assert "file_unexpected" in out and "smars/extra.py" in out


def test_attest_without_release_lists_what_the_node_runs(site: Path) -> None:
    code, out = run(
        "release", "attest", "--node", "n1", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
    )  # fmt: skip
    assert code == 0, out
    assert "smars/router.py" in out and RLP in out and RLP_HASH in out


def test_verify_against_the_registry_refuses_a_retired_flag(site: Path) -> None:
    envelope = build_and_sign(site, "ci", "rm")
    registry = site / "feature-flags.yaml"
    registry.write_text(
        "version: 1\nflags:\n"
        f"  - id: {RLP}\n    description: Retail Liquidity Program routing\n"
        "    safe_default: false\n    trading_behaviour: true\n    lifecycle: retired\n"
        "    created: 2012-06-01\n    owner: smars\n    expires: 2013-01-01\n"
    )
    code, out = run(
        "release", "verify", envelope, "--policy", site / "policy.toml", "--registry", registry
    )
    assert code == 1 and "flag_retired_in_registry" in out and RLP in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("release", "verify", "{site}/missing.json", "--policy", "{site}/policy.toml"),
         "missing.json: no such file"),
        (("release", "verify", "{site}/config.toml", "--policy", "{site}/policy.toml"),
         "not a DSSE envelope"),
        (("release", "verify", "{site}/config.toml", "--policy", "{site}/config.toml"),
         "trust policy"),
        (("release", "sign", "{site}/config.toml", "--key", "{site}/keys/ci.key"),
         "not a manifest JSON document"),
        (("release", "sign", "{site}/flags.yaml", "--key", "{site}/keys/ci.pub"),
         "private key"),
        (("release", "build", "--id", "bad id", "--artifacts", "{site}/release",
          "--config", "{site}/config.toml", "--flags", "{site}/flags.yaml"), "release_id"),
        (("release", "build", "--id", "r1", "--artifacts", "{site}/nope",
          "--config", "{site}/config.toml", "--flags", "{site}/flags.yaml"), "not a directory"),
        (("release", "attest", "--node", "n1", "--artifacts", "{site}/release",
          "--config", "{site}/config.toml", "--flags", "{site}/flags.yaml",
          "--envelope", "{site}/x"), "--policy: required"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_a_message_not_a_traceback(
    site: Path, args: tuple[str, ...], message: str
) -> None:
    code, out = run(*(a.format(site=site) for a in args))
    assert code == 2, out
    assert message in out
    assert "Traceback" not in out


def test_sign_never_overwrites_a_file_that_is_not_an_envelope(site: Path) -> None:
    """`--out` naming a private key (or the manifest) is refused and the file kept intact."""
    build_and_sign(site)
    for victim in (site / "keys" / "rm.key", site / "m.json"):
        before = victim.read_bytes()
        code, out = run(
            "release", "sign", site / "m.json", "--key", site / "keys" / "ci.key", "--out", victim
        )
        assert code == 2, out
        assert f"--out {victim}: exists and is not a release envelope" in "".join(out.split("\n"))
        assert victim.read_bytes() == before


def test_sign_never_drops_the_signatures_an_envelope_holds(site: Path) -> None:
    envelope = build_and_sign(site, "ci")
    before = envelope.read_bytes()
    code, out = run("release", "sign", site / "m.json", "--key", site / "keys" / "rm.key")
    assert code == 2, out
    assert "would drop" in out and "Traceback" not in out
    assert envelope.read_bytes() == before
    code, out = run("release", "sign", envelope, "--key", site / "keys" / "rm.key")
    assert code == 0 and "2 signature(s)" in out  # in place still adds


@pytest.mark.parametrize("victim", ["release/smars/router.py", "config.toml", "flags.yaml"])
def test_build_never_overwrites_an_artifact_or_an_input(site: Path, victim: str) -> None:
    before = (site / victim).read_bytes()
    code, out = run(
        "release", "build", "--id", "r1", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml", "--out", site / victim,
    )  # fmt: skip
    assert code == 2, out
    assert f"--out {site / victim}" in "".join(out.split("\n"))
    assert (site / victim).read_bytes() == before


def test_build_never_overwrites_a_file_that_is_not_a_manifest(site: Path) -> None:
    victim = site / "keys" / "ci.key"
    before = victim.read_bytes()
    code, out = run(
        "release", "build", "--id", "r1", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml", "--out", victim,
    )  # fmt: skip
    assert code == 2 and "not a release manifest" in out, out
    assert victim.read_bytes() == before


def test_build_refuses_a_file_name_that_is_not_utf8(site: Path) -> None:
    (site / "release").joinpath(os.fsdecode(b"bad\xff")).write_bytes(b"x")
    code, out = run(
        "release", "build", "--id", "r1", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml", "--out", site / "m.json",
    )  # fmt: skip
    assert code == 2, out
    assert "b'bad\\xff'" in out and "not UTF-8" in out
    assert not (site / "m.json").exists()


@pytest.mark.parametrize("signer", ['evil"\nthreshold = 0\nx = "', "", 'q"q', "x" * 65])
def test_keys_refuse_a_signer_name_that_would_break_the_policy_entry(
    site: Path, signer: str
) -> None:
    code, out = run("keys", "show", site / "keys" / "rm.pub", "--signer", signer)
    assert code == 2, out
    assert "--signer: signer name must be 1-64 letters" in out
    assert "[[keys]]" not in out and "\nthreshold = 0" not in out


def test_keys_new_refuses_a_name_that_is_not_a_signer_name_and_writes_nothing(
    tmp_path: Path,
) -> None:
    code, out = run("keys", "new", 'q"q', "--dir", tmp_path / "k")
    assert code == 2 and "signer name must be" in out, out
    assert not (tmp_path / "k").exists()


def test_keys_new_says_dir_must_be_a_directory(site: Path) -> None:
    code, out = run("keys", "new", "carol", "--dir", site / "config.toml")
    assert code == 2, out
    assert "must be a directory" in out and "Traceback" not in out


@pytest.mark.parametrize("node", ["", "n1\nADMITTED node n2", "n" * 5000])
def test_attest_refuses_a_node_id_outside_the_node_id_rule(site: Path, node: str) -> None:
    code, out = run(
        "release", "attest", "--node", node, "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
    )  # fmt: skip
    assert code == 2, out
    assert "--node: node id must be 1-64 letters" in out
    assert "ADMITTED" not in out.replace(repr(node)[:80], "")
    assert len(out) < 400


def test_a_public_key_given_as_the_private_key_is_named_as_such(site: Path) -> None:
    build_and_sign(site)
    code, out = run("release", "sign", site / "m.json", "--key", site / "keys" / "ci.pub")
    assert code == 2, out
    assert "holds a public key" in out and "chmod" not in out


def test_a_broken_envelope_is_reported_as_an_envelope(site: Path) -> None:
    envelope = build_and_sign(site, "ci")
    text = envelope.read_text()
    broken = re.sub(r'"signatures": \[.*?\]', '"signatures": "x"', text, flags=re.S)
    assert broken != text
    envelope.write_text(broken)
    code, out = run("release", "sign", envelope, "--key", site / "keys" / "rm.key")
    assert code == 2, out
    assert "not a DSSE envelope" in out and "signatures" in out and "release_id" not in out


def test_an_empty_artifacts_or_release_option_is_refused_not_read_as_this_directory(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--artifacts "$DIR"` with DIR unset must not hash the directory the command runs
    in; `--release ""` or a padded id names no release (exit 2, not a refusal)."""
    monkeypatch.chdir(site / "release")
    code, out = run(
        "release", "build", "--id", "r1", "--artifacts", "", "--config", site / "config.toml",
        "--flags", site / "flags.yaml", "--out", site / "m.json",
    )  # fmt: skip
    assert code == 2 and "'--artifacts': empty path" in out
    assert not (site / "m.json").exists()
    code, out = run(
        "release", "attest", "--node", "n1", "--artifacts", " ", "--config",
        site / "config.toml", "--flags", site / "flags.yaml",
    )  # fmt: skip
    assert code == 2 and "'--artifacts': empty path" in out
    envelope = build_and_sign(site, "ci", "rm")
    for given in ("", " 2012.08.01-rlp"):
        code, out = run(
            "release", "verify", envelope, "--policy", site / "policy.toml", "--release", given
        )
        assert code == 2 and "--release:" in out and "not_target_release" not in out, out


def test_file_names_and_ids_that_look_like_markup_are_shown_as_written(site: Path) -> None:
    """An artifact named "[/x]" (the release tree is whoever built it's), a node id quoted
    back in an error, a key directory or an envelope path with brackets: shown as written,
    never read as console markup (a "[/x]" ended the command with a traceback)."""
    (site / "[").mkdir()
    hostile = site / "[" / "m].dsse.json"  # the path reads ".../[/m].dsse.json"
    build_and_sign(site, "ci", "rm").rename(hostile)
    (site / "release" / "[").mkdir()
    (site / "release" / "[" / "x].py").write_text("x = 1\n")  # the path reads "[/x].py"
    (site / "release" / "[red]y.py").write_text("y = 1\n")
    args = (
        "release", "attest", "--node", "n1", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
    )  # fmt: skip
    result = runner.invoke(app, [str(a) for a in args], env=WIDE)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, result.output
    assert "[/x].py" in result.output and "[red]y.py" in result.output, result.output
    code, out = run(*args, "--envelope", hostile, "--policy", site / "policy.toml")
    assert code == 1 and "file_unexpected" in out, out
    assert "[/x].py" in out and "[red]y.py" in out, out
    code, out = run("release", "verify", hostile, "--policy", site / "policy.toml")
    assert code == 0 and "VERIFIED release 2012.08.01-rlp" in out, out
    code, out = run("release", "attest", "--node", "[/x]", *args[4:])
    assert code == 2 and "--node: node id must be" in out and "'[/x]'" in out, out
    code, out = run("keys", "new", "k", "--dir", site / "[" / "keys]")
    assert code == 0 and f"{site}/[/keys]/k.key" in out, out


@pytest.mark.parametrize("field", ["payload", "sig"])
def test_a_character_outside_ascii_in_the_envelope_is_refused_not_a_traceback(
    site: Path, field: str
) -> None:
    """base64 of a str with a non-ASCII character raises a plain ValueError, not
    binascii.Error: an "é" in the payload or a signature ended verify, attest and sign
    with a traceback. A payload that does not decode is malformed; a signature that does
    not decode is an invalid one (and refuses the release)."""
    envelope = build_and_sign(site, "ci", "rm")
    text = envelope.read_text()
    edited = text.replace(f'"{field}": "', f'"{field}": "\\u00e9', 1)  # JSON for "é"
    assert edited != text
    envelope.write_text(edited)
    attest = (
        "release", "attest", "--node", "n1", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
        "--envelope", envelope, "--policy", site / "policy.toml",
    )  # fmt: skip
    reason = "manifest_malformed" if field == "payload" else "signature_invalid"
    for args in (("release", "verify", envelope, "--policy", site / "policy.toml"), attest):
        result = runner.invoke(app, [str(a) for a in args], env=WIDE)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(
            result.exception
        )
        assert result.exit_code == 1 and "REFUSED" in result.output, result.output
        assert reason in result.output, result.output
    signed = runner.invoke(
        app, ["release", "sign", str(envelope), "--key", str(site / "keys" / "ci.key")], env=WIDE
    )
    assert signed.exception is None or isinstance(signed.exception, SystemExit), repr(
        signed.exception
    )
    if field == "payload":
        assert signed.exit_code == 2 and "envelope payload: not base64" in signed.output


def _limited_run(size: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, where no file it writes may grow past `size` bytes (as a
    full disk would stop it)."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return subprocess.run(
        [sys.executable, "-m", "knightwatch", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limited,
        env={**os.environ, **WIDE},
    )


def test_a_sign_that_cannot_be_written_whole_leaves_the_envelope_byte_for_byte(
    site: Path,
) -> None:
    """`release sign` rewrote the envelope in place: a write that failed partway left a cut
    file, and the signatures it held (the other signer's) were lost with it. Now the
    failure is one line and the envelope is as it was, with no temporary file beside it."""
    envelope = build_and_sign(site, "ci")
    envelope.chmod(0o640)
    before = envelope.read_bytes()
    done = _limited_run(len(before), "release", "sign", envelope, "--key", site / "keys" / "rm.key")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    said = " ".join(done.stderr.split())
    assert f"{envelope}: cannot write: File too large" in said, said
    assert envelope.read_bytes() == before
    assert not [p for p in site.iterdir() if p.name.endswith(".tmp")]
    code, out = run("release", "sign", envelope, "--key", site / "keys" / "rm.key")
    assert code == 0 and "2 signature(s)" in out, out
    assert stat.S_IMODE(envelope.stat().st_mode) == 0o640  # the signed file keeps its mode


def test_keys_new_cut_short_is_one_line_and_leaves_no_key_behind(site: Path) -> None:
    """A key write that failed partway was a traceback that left a cut NAME.key: no command
    could load it, and every later `keys new NAME` refused to overwrite it."""
    done = _limited_run(50, "keys", "new", "dora", "--dir", site / "cut")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    said = " ".join(done.stderr.split())
    assert f"{site}/cut/dora.key: cannot write: File too large" in said, said
    assert list((site / "cut").iterdir()) == []
    code, out = run("keys", "new", "dora", "--dir", site / "cut")
    assert code == 0 and "key id" in out, out


@pytest.mark.parametrize("blank", ["", "  "])
def test_keys_new_refuses_an_empty_dir_and_writes_no_key_where_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blank: str
) -> None:
    """`keys new ci --dir "$DIR"` with DIR unset arrived as "", read as `.`: a release
    signing key was written into whatever directory the command was started in (a checkout
    that gets committed, a shared build directory)."""
    monkeypatch.chdir(tmp_path)
    code, out = run("keys", "new", "ci", "--dir", blank)
    assert code == 2 and "'--dir': empty path" in " ".join(out.split()), out
    assert list(tmp_path.iterdir()) == []
    code, out = run("keys", "new", "ci")  # no --dir at all: this directory, as documented
    assert code == 0 and (tmp_path / "ci.key").exists(), out


def test_control_characters_in_an_envelope_are_shown_escaped_never_sent_to_the_terminal(
    site: Path,
) -> None:
    """A key id is anyone's text: an envelope signed under the key id "\\x1b[2J\\x1b[H..."
    had `release verify` send the ESC sequence to the operator's terminal (clear the screen,
    redraw the refusal as a verdict) and a newline start a line of its own."""
    envelope = build_and_sign(site, "ci")
    forged = json.loads(envelope.read_text())
    keyid = "\x1b[2J\x1b[H\nVERIFIED release 2012.08.01-rlp"
    forged["signatures"] = [{"keyid": keyid, "sig": forged["signatures"][0]["sig"]}]
    forged[keyid] = 1  # an unknown field, named in a message
    envelope.write_text(json.dumps(forged))
    code, out = run("release", "verify", envelope, "--policy", site / "policy.toml")
    assert code == 1 and "signature_untrusted" in out, out
    assert "\x1b" not in out and "\\x1b[2J\\x1b[H\\nVERIFIED" in out, out
    assert not any(line.startswith("VERIFIED") for line in out.splitlines()), out
    (site / "policy.toml").write_text(f"threshold = 1\n{json.dumps(keyid)} = 2\n")
    code, out = run("release", "verify", envelope, "--policy", site / "policy.toml")
    assert code == 2 and "unknown field" in out and "\x1b" not in out, out


def test_build_refuses_an_empty_artifacts_directory_and_writes_no_manifest(site: Path) -> None:
    """A failed build (or a wrong path) gave an empty directory: its manifest was written,
    signed, verified, and admitted a node whose directory was empty too, measuring nothing."""
    (site / "empty").mkdir()
    code, out = run(
        "release", "build", "--id", "r1", "--artifacts", site / "empty",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
        "--out", site / "m.json",
    )  # fmt: skip
    flat = " ".join(out.split())
    assert code == 2, out
    assert f"--artifacts {site / 'empty'}: no files to hash" in flat
    assert "at least one artifact file" in flat and "Traceback" not in out
    assert not (site / "m.json").exists()


def test_build_refuses_a_file_it_cannot_examine_with_exit_2_naming_it(site: Path) -> None:
    """A name the kernel cannot stat by path (longer than PATH_MAX) was a traceback."""
    here = site / "release"
    while len(str(here)) < 3850:
        here = here / ("d" * 200)
        here.mkdir()
    fd = os.open(here, os.O_RDONLY)
    try:
        os.close(os.open("f" * 250, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    code, out = run(
        "release", "build", "--id", "r1", "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
        "--out", site / "m.json",
    )  # fmt: skip
    assert code == 2, out
    assert "cannot examine" in " ".join(out.split()) and "Traceback" not in out
    assert not (site / "m.json").exists()


def test_sign_names_the_envelope_whose_signed_payload_breaks_a_rule(site: Path) -> None:
    """`release sign E` on an envelope whose payload lists `../x` said the rule, not which
    envelope broke it; and a 100,000-character id in `--id` was repeated whole."""
    envelope = build_and_sign(site, "ci")
    doc = json.loads(envelope.read_text())
    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["subject"].append({"digest": {"sha256": "a" * 64}, "name": "smars/../x"})
    payload = json.dumps(statement, separators=(",", ":"), sort_keys=True).encode()
    doc["payload"] = base64.b64encode(payload).decode()
    envelope.write_text(json.dumps(doc))
    before = envelope.read_bytes()
    code, out = run("release", "sign", envelope, "--key", site / "keys" / "rm.key")
    flat = "".join(out.split("\n"))
    assert code == 2, out
    assert f"envelope {envelope} payload: artifacts: artifact path 'smars/../x'" in flat
    assert envelope.read_bytes() == before
    code, out = run(
        "release", "build", "--id", "r" * 100_000, "--artifacts", site / "release",
        "--config", site / "config.toml", "--flags", site / "flags.yaml",
    )  # fmt: skip
    assert code == 2 and "(100000 characters, cut)" in out and len(out) < 1000, out[:300]
