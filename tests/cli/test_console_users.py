"""`knightwatch console user ...`: passwords only from prompts (here: stdin), the users file in
the state directory, one red line on every refusal."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knightwatch.cli.app import app
from knightwatch.console.users import ConsoleUserError, LoginFailed, UserStore
from knightwatch.release.keys import write_key_pair

runner = CliRunner()
PW = "correct horse battery"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    _, private, _ = write_key_pair(tmp_path / "keys", "alice")
    return private


def run(state: Path, *args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["console", "user", *args, "--state-dir", str(state)], input=input)
    return result.exit_code, result.output


def add_alice(state: Path, keyfile: Path) -> None:
    code, out = run(state, "add", "alice", "--key", str(keyfile), input=f"{PW}\n{PW}\n")
    assert code == 0, out


def test_add_writes_a_0600_users_file_in_the_state_dir(state: Path, keyfile: Path) -> None:
    add_alice(state, keyfile)
    path = state / "console-users.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PW.encode() not in path.read_bytes()
    assert UserStore(path).unlock("alice", PW).name == "alice"
    code, out = run(state, "list")
    assert code == 0 and "alice" in out and "no" in out


def test_add_refusals_are_one_red_line(state: Path, keyfile: Path) -> None:
    code, out = run(state, "add", "alice", "--key", str(keyfile), input="short\nshort\n")
    assert code == 2 and "at least 12 characters" in out and "Traceback" not in out
    add_alice(state, keyfile)
    code, out = run(state, "add", "alice", "--key", str(keyfile))  # refused before any prompt
    assert code == 2 and "already exists" in out and "password" not in out
    os.chmod(keyfile, 0o644)
    code, out = run(state, "add", "bob", "--key", str(keyfile), input=f"{PW}\n{PW}\n")
    assert code == 2 and "chmod 600" in out
    code, out = run(state, "add", "bad name", "--key", str(keyfile.parent / "none.key"))
    assert code == 2 and "error:" in out


def test_list_without_a_file_says_every_login_is_refused(state: Path) -> None:
    code, out = run(state, "list")
    assert code == 0 and "refuses every login" in out


def test_passwd_and_reset(state: Path, keyfile: Path, tmp_path: Path) -> None:
    add_alice(state, keyfile)
    path = state / "console-users.toml"
    code, out = run(state, "passwd", "alice", input=f"wrong password\n{PW}2\n{PW}2\n")
    assert code == 2 and "wrong name or password" in out
    code, out = run(state, "passwd", "alice", input=f"{PW}\n{PW}2\n{PW}2\n")
    assert code == 0, out
    assert UserStore(path).unlock("alice", PW + "2").name == "alice"
    _, other, _ = write_key_pair(tmp_path / "keys", "other")
    code, out = run(state, "passwd", "alice", "--key", str(other), input=f"{PW}3\n{PW}3\n")
    assert code == 2 and "is not the key stored for user alice" in out
    code, out = run(state, "passwd", "alice", "--key", str(keyfile), input=f"{PW}3\n{PW}3\n")
    assert code == 0, out
    assert UserStore(path).unlock("alice", PW + "3").name == "alice"
    code, out = run(state, "passwd", "nobody", input=f"{PW}\n")
    assert code == 2 and "no such user" in out


def test_disable_and_enable(state: Path, keyfile: Path) -> None:
    add_alice(state, keyfile)
    store = UserStore(state / "console-users.toml")
    assert run(state, "disable", "alice")[0] == 0
    with pytest.raises(LoginFailed) as exc:
        store.verify("alice", PW)
    assert exc.value.why == "disabled"
    assert run(state, "enable", "alice")[0] == 0
    assert store.verify("alice", PW).name == "alice"
    code, out = run(state, "disable", "nobody")
    assert code == 2 and "no such user" in out


def test_tokens_issue_list_revoke(state: Path, keyfile: Path) -> None:
    add_alice(state, keyfile)
    store = UserStore(state / "console-users.toml")
    code, out = run(
        state, "token", "alice", "--role", "operator", "--ttl-days", "7", input=f"{PW}\n"
    )
    assert code == 0, out
    secret = re.search(r"kw_[A-Za-z0-9_-]{43}", out)
    assert secret is not None and "shown once" in out
    user, token, signer = store.authenticate_token(secret.group(), time.time_ns())
    assert signer is not None and signer.key.key_id == user.key_id and token.roles == ("operator",)

    code, out = run(state, "token", "alice", "--role", "viewer", "--service")  # no password asked
    assert code == 0 and "password" not in out, out

    code, out = run(state, "token", "alice", "--list")
    assert code == 0 and token.id in out and "operator" in out
    assert secret.group() not in out and token.sha256 not in out and "kw_" not in out

    assert run(state, "token", "alice", "--revoke", token.id)[0] == 0
    with pytest.raises(LoginFailed) as exc:
        store.authenticate_token(secret.group(), time.time_ns())
    assert exc.value.why == "token_revoked"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--role", "root"), "not a role"),
        ((), "at least one role"),
        (("--role", "approver", "--service"), "can never approve"),
        (("--role", "viewer", "--ttl-days", "91"), "less than or equal to 90"),
        (("--list", "--revoke", "t_0000000000"), "nor each other"),
        (("--revoke", "t_0000000000"), "no such token"),
    ],
)
def test_token_refusals(state: Path, keyfile: Path, args: tuple[str, ...], words: str) -> None:
    add_alice(state, keyfile)
    code, out = run(state, "token", "alice", *args, input=f"{PW}\n")
    assert code == 2 and words in out, out


def test_console_is_registered() -> None:
    result = runner.invoke(app, ["console", "user", "--help"])
    assert result.exit_code == 0
    for command in ("add", "passwd", "disable", "enable", "token", "list"):
        assert command in result.output


def test_token_list_shows_a_time_no_calendar_holds_and_a_path_like_markup(
    tmp_path: Path, keyfile: Path
) -> None:
    """The users file is a file an admin (or an editor) writes: a token expiring in the
    year 33,000 is listed as out of range, and a file named "[/x]" is named as written,
    not a traceback."""
    (tmp_path / "[").mkdir()
    WIDE = {"COLUMNS": "300"}
    users = tmp_path / "[" / "users].toml"  # the path reads ".../[/users].toml"
    result = runner.invoke(app, ["console", "user", "list", "--users", str(users)], env=WIDE)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0 and f"no users file at {tmp_path}/[/users].toml" in result.output
    args = ["console", "user", "add", "alice", "--key", str(keyfile), "--users", str(users)]
    result = runner.invoke(app, args, input=f"{PW}\n{PW}\n", env=WIDE)
    assert result.exit_code == 0 and f"{tmp_path}/[/users].toml" in result.output, result.output
    args = ["console", "user", "token", "alice", "--role", "viewer", "--users", str(users)]
    assert runner.invoke(app, args, env=WIDE).exit_code == 0
    text = users.read_text()
    expires = re.search(r"expires_ns = (\d+)", text)
    assert expires is not None, text
    # as a file written before the users file was sealed (hand edits of a sealed one are refused)
    text = re.sub(r'(?m)^(generation = \d+|mac = "[0-9a-f]{64}")\n', "", text)
    users.with_name(users.name + ".seal").unlink()
    users.write_text(text.replace(expires.group(0), f"expires_ns = {10**22}"))
    result = runner.invoke(
        app, ["console", "user", "token", "alice", "--list", "--users", str(users)], env=WIDE
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0 and "? (out of range)" in result.output, result.output


def test_a_users_file_put_back_after_a_disable_is_one_red_line_not_trusted(
    state: Path, keyfile: Path
) -> None:
    """An older copy of the file (before `disable alice`) put back by whoever can write it:
    every command refuses it naming the file and the rule, and `enable` writes nothing."""
    add_alice(state, keyfile)
    path = state / "console-users.toml"
    before = path.read_bytes()
    assert run(state, "disable", "alice")[0] == 0
    path.write_bytes(before)
    for args in (("list",), ("enable", "alice")):
        code, out = run(state, *args)
        assert code == 2 and "Traceback" not in out, out
        assert f"console users file {path}: generation: 1 is older" in out.replace("\n", "")
        assert "rollback" in out
    assert path.read_bytes() == before
    with pytest.raises(ConsoleUserError, match="rollback"):
        UserStore(path).verify("alice", PW)


@pytest.mark.parametrize("host", ["[/x]", "[red]lo", "0.0.0.0[/]"])
def test_serve_prints_a_host_as_text_never_markup(tmp_path: Path, host: str) -> None:
    """`--host` goes into the no-TLS warning: as rich markup, `[/x]` raised a MarkupError
    traceback before anything was checked. It is shown as given and the run goes on to its
    next check (here: no control plane recorded, one line, exit 2)."""
    result = CliRunner().invoke(
        app, ["console", "serve", "--host", host, "--state-dir", str(tmp_path / "st")]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, result.output
    assert f"serving on {host} without TLS" in " ".join(result.output.split()), result.output
    assert "no control plane given" in result.output
