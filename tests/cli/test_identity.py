"""`knightwatch identity` on a live local fleet: a person's own key, a roster change signed by
two admins and followed by every process without a restart, revocation, rotation."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.cli.identity import revoked_members, rotated_members
from knightwatch.trust.roster import Member, Role

runner = CliRunner()
KEYS = ("admin1", "admin2")
pytestmark = pytest.mark.timeout(90)


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def until_ok(*args: str, timeout_s: float = 30.0) -> str:
    """Run a command until it exits 0: a roster version reaches the server's users and the
    nodes a moment after it is stored (a moment that can be seconds on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, out = invoke(*args)
        if code == 0 or time.monotonic() > deadline:
            assert code == 0, out
            return out
        time.sleep(0.2)


def change(fleet: Path, tmp_path: Path, verb: str, *args: str) -> str:
    """One roster change: admin1 proposes, admin2 signs, admin1 publishes."""
    proposal = tmp_path / f"{verb}-{time.monotonic_ns()}.json"
    keys = fleet / "trust" / "keys"
    who = {
        n: ["--state-dir", str(fleet), "--key", str(keys / f"{n}.key")]
        for n in ("admin1", "admin2")
    }
    code, out = invoke("identity", verb, *args, "--out", str(proposal), *who["admin1"])
    assert code == 0 and "2 admin signature(s) needed" in out, out
    code, out = invoke("identity", "sign", str(proposal), *who["admin2"])
    assert code == 0 and "admin1, admin2" in " ".join(out.split()), out  # wherever it wraps
    code, out = invoke("identity", "publish", str(proposal), *who["admin1"])
    assert code == 0 and "published" in out, out
    return out


def test_enrol_revoke_rotate_without_a_restart(fleet_up: Path, tmp_path: Path) -> None:
    state = str(fleet_up)
    keys = fleet_up / "trust" / "keys"

    def as_(name: str) -> list[str]:
        return ["--state-dir", state, "--key", str(keys / f"{name}.key")]

    # dave makes his own key on his machine: the private half 0600, never overwritten
    code, out = invoke("identity", "new", "dave", "--dir", str(tmp_path / "dave"))
    assert code == 0 and "0600" in out, out
    dave_key, dave_pub = tmp_path / "dave" / "dave.key", tmp_path / "dave" / "dave.pub"
    assert stat.S_IMODE(dave_key.stat().st_mode) == 0o600
    code, out = invoke("identity", "new", "dave", "--dir", str(tmp_path / "dave"))
    assert code == 2 and "refusing to overwrite" in out, out
    dave = ["--state-dir", state, "--key", str(dave_key)]
    code, out = invoke("status", *dave)
    assert code == 2, out  # not on the roster: the server does not even let him log in

    # an operator cannot change the roster; one admin's signature is not enough
    proposal = tmp_path / "add-dave.json"
    add = ["identity", "add", "dave", "--public", str(dave_pub), "--role", "operator",
           "--role", "approver", "--out", str(proposal)]  # fmt: skip
    code, out = invoke(*add, *as_("alice"))
    assert code == 2 and "alice is not an admin" in out, out
    code, out = invoke(*add, *as_("admin1"))
    assert code == 0, out
    code, out = invoke("identity", "publish", str(proposal), *as_("admin1"))
    assert code == 2 and "signed by 1 admin(s)" in out and "of 2 required" in out, out
    code, out = invoke("identity", "show", "--proposal", str(proposal), *as_("carol"))
    assert code == 0 and "PROPOSED roster version" in out and "dave" in out, out
    assert "signed by admin1" in out, out
    code, out = invoke("identity", "sign", str(proposal), *as_("admin2"))
    assert code == 0 and "admin1, admin2" in " ".join(out.split()), out  # wherever it wraps
    code, out = invoke("identity", "publish", str(proposal), *as_("admin1"))
    assert code == 0 and "published" in out, out

    # nothing restarted: the server lets dave in, and the nodes confirm his signed kill
    # (--timeout: both nodes must confirm, and the default 2 s is thin on a loaded machine)
    out = until_ok("kill", "--reason", "dave was enrolled", "--timeout", "20", *dave)
    assert "n1" in out and "n2" in out and "stored at revision" in out, out
    code, out = invoke("identity", "show", *as_("carol"))
    assert code == 0 and "dave" in out and "operator," in out, out
    code, out = invoke("status", *as_("carol"))
    assert "HALTED" in out and "dave" in out, out

    # a new node adds risk: its enrolment is refused while the kill is in force
    code, out = invoke("identity", "new", "n3", "--dir", str(tmp_path / "n3"))
    assert code == 0, out
    node = tmp_path / "node.json"
    code, out = invoke("identity", "add", "n3", "--public", str(tmp_path / "n3" / "n3.pub"),
                       "--role", "node", "--out", str(node), *as_("admin1"))  # fmt: skip
    assert code == 0, out
    code, out = invoke("identity", "sign", str(node), *as_("admin2"))
    assert code == 0, out
    code, out = invoke("identity", "publish", str(node), *as_("admin1"))
    assert code == 2 and "enrolment of node(s) n3: refused while the fleet kill" in out, out

    # revoked: dave's key no longer logs in, nor would anything he signs count
    change(fleet_up, tmp_path, "revoke", "dave")
    deadline = time.monotonic() + 30
    while (code := invoke("status", *dave)[0]) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert code == 2
    code, out = invoke("identity", "show", *as_("carol"))
    assert "dave" in out and "revoked" in out, out

    # rotated: alice's new key works, the old one is out
    code, out = invoke("identity", "new", "alice", "--dir", str(tmp_path / "alice"))
    assert code == 0, out
    change(fleet_up, tmp_path, "rotate", "alice", "--public", str(tmp_path / "alice" / "alice.pub"))
    new_alice = ["--state-dir", state, "--key", str(tmp_path / "alice" / "alice.key")]
    out = until_ok("status", *new_alice)
    assert "HALTED" in out, out
    code, out = invoke("kill", "--reason", "old key", *as_("alice"))
    assert code == 2, out


def test_identity_new_says_dir_must_be_a_directory(tmp_path: Path) -> None:
    """Not `[Errno 17] File exists`: the option and what it needs."""
    afile = tmp_path / "alice.pub"
    afile.write_text("not a directory\n")
    code, out = invoke("identity", "new", "carol", "--dir", str(afile))
    assert code == 2, out
    assert f"--dir {afile}: must be a directory" in " ".join(out.split())
    assert "Errno" not in out and afile.read_text() == "not a directory\n"


@pytest.mark.parametrize("name", ['q"q', "a\nb", "x" * 65, "caf\u00e9"])
def test_identity_new_refuses_a_name_the_roster_would_refuse_and_writes_nothing(
    tmp_path: Path, name: str
) -> None:
    code, out = invoke("identity", "new", name, "--dir", str(tmp_path))
    assert code != 0 and "NAME: a roster name must be" in " ".join(out.split()), out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("blank", ["", "  "])
def test_identity_new_refuses_an_empty_dir_and_writes_no_key_where_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blank: str
) -> None:
    """`--dir "$DIR"` with DIR unset arrived as "", read as `.`: a private key was written
    into whatever directory the command was started in (a shared or checked-in one)."""
    monkeypatch.chdir(tmp_path)
    code, out = invoke("identity", "new", "carol", "--dir", blank)
    assert code == 2 and "--dir" in out and "empty path" in " ".join(out.split()), out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("verb", ["add", "revoke", "rotate"])
def test_a_proposal_out_path_that_cannot_be_written_is_refused_naming_out_before_connecting(
    tmp_path: Path, verb: str
) -> None:
    """A missing directory for --out was `[Errno 2] No such file or directory` once the
    roster had been read and the version signed, naming no option; a path that exists is
    never overwritten. Both are said before anything connects (no server here)."""
    code, out = invoke("identity", "new", "dave", "--dir", str(tmp_path))
    assert code == 0, out
    extra = {
        "add": ["--public", str(tmp_path / "dave.pub"), "--role", "operator"],
        "revoke": [],
        "rotate": ["--public", str(tmp_path / "dave.pub")],
    }[verb]
    taken = tmp_path / "taken.json"
    taken.write_text("another admin's proposal\n")
    for target, rule in (
        (tmp_path / "no" / "such" / "p.json", "is not a directory"),
        (taken, "already exists; refusing to overwrite"),
    ):
        code, out = invoke(
            "identity", verb, "dave", *extra, "--out", str(target),
            "--nats-url", "nats://127.0.0.1:1", "--key", str(tmp_path / "dave.key"),
        )  # fmt: skip
        flat = "".join(out.split())
        assert code == 2 and f"--out{target}:" in flat and "".join(rule.split()) in flat, out
        assert "Errno" not in out and "127.0.0.1:1" not in out, out
    assert taken.read_text() == "another admin's proposal\n"
    assert not (tmp_path / "no").exists()


def test_a_sign_that_cannot_be_written_whole_leaves_the_proposal_byte_for_byte(
    fleet_up: Path, tmp_path: Path
) -> None:
    """`identity sign` rewrote the proposal in place: a write that failed partway (here a
    file size limit, as a full disk would) left a cut file, and the signatures the other
    admins had put on it were lost. Now the failure is one line and the file is as it was."""
    keys = fleet_up / "trust" / "keys"

    def as_(name: str) -> list[str]:
        return ["--state-dir", str(fleet_up), "--key", str(keys / f"{name}.key")]

    code, out = invoke("identity", "new", "erin", "--dir", str(tmp_path / "erin"))
    assert code == 0, out
    proposal = tmp_path / "props" / "add-erin.json"
    proposal.parent.mkdir()
    code, out = invoke("identity", "add", "erin", "--public", str(tmp_path / "erin" / "erin.pub"),
                       "--role", "viewer", "--out", str(proposal), *as_("admin1"))  # fmt: skip
    assert code == 0, out
    proposal.chmod(0o644)  # shared with the other admins: the signed file keeps its mode
    before = proposal.read_bytes()
    size = len(before)

    def limited() -> None:  # no file this process writes may grow past the proposal's size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    done = subprocess.run(
        [sys.executable, "-m", "knightwatch", "identity", "sign", str(proposal), *as_("admin2")],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limited,
        env={**os.environ, "COLUMNS": "300"},
    )
    out = done.stdout.strip()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(out.splitlines()) == 1, out
    assert str(proposal) in out and "cannot write the signed proposal" in out, out
    assert proposal.read_bytes() == before
    assert sorted(p.name for p in proposal.parent.iterdir()) == [proposal.name]  # no temp left
    code, out = invoke("identity", "sign", str(proposal), *as_("admin2"))
    assert code == 0 and "admin1, admin2" in " ".join(out.split()), out  # wherever it wraps
    assert proposal.read_bytes() != before and stat.S_IMODE(proposal.stat().st_mode) == 0o644


def _member(name: str, key: str, **validity: int) -> Member:
    return Member(name, key, "pub-" + key, (Role.OPERATOR,), **validity)


NOW = 1_700_000_000_000_000_000


@pytest.mark.parametrize(
    ("validity", "until"),
    [
        ({}, NOW),  # no end: ends now
        ({"valid_until_ns": NOW + 10**15}, NOW),  # a later end of its own: ends now too
        ({"valid_until_ns": NOW - 5}, NOW - 5),  # already ended: kept as it was
    ],
)
def test_a_rotation_ends_every_old_key_of_the_person_at_the_latest_now(
    validity: dict[str, int], until: int
) -> None:
    """A key left valid past the rotation would still sign as the person beside the new one."""
    old = _member("alice", "k-old", **validity)
    other = _member("bob", "k-bob", valid_until_ns=NOW + 10**15)
    new = _member("alice", "k-new")
    out = rotated_members((old, other), new, NOW)
    assert [m.key_id for m in out] == ["k-old", "k-bob", "k-new"]
    assert out[0].valid_until_ns == until and not out[0].valid_at(NOW)
    assert out[1] == other and out[2] == new and out[2].valid_at(NOW)


@pytest.mark.parametrize(
    ("revoked", "expected"),
    [(0, NOW), (NOW + 10**15, NOW), (NOW - 5, NOW - 5)],
    ids=["not revoked", "revoked later", "revoked earlier"],
)
def test_a_revocation_revokes_every_key_of_the_person_at_the_latest_now(
    revoked: int, expected: int
) -> None:
    """Before, a key whose own revocation lay in the future (a roster built by other
    tooling) kept that later date: `identity revoke` left it valid until then."""
    keys = (_member("dave", "k1", revoked_ns=revoked), _member("dave", "k2"), _member("eve", "k3"))
    out = revoked_members(keys, "dave", NOW)
    assert [m.revoked_ns for m in out] == [expected, NOW, 0]
    assert not out[0].valid_at(NOW) and not out[1].valid_at(NOW) and out[2].valid_at(NOW)
