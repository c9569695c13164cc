"""The console users file: passwords, wrapped keys, tokens, and a file that is checked field by
field (cheap argon2 parameters: the rules, not the cost, are under test)."""

from __future__ import annotations

import base64
import os
import re
import stat
import tomllib
from pathlib import Path

import argon2
import msgspec
import pytest
from argon2.profiles import CHEAPEST
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.console.users import (
    MAX_TOKEN_TTL_S,
    ConsoleUserError,
    LoginFailed,
    Token,
    User,
    UserStore,
    WrappedKey,
    dump_users,
    file_mac,
    parse_users,
    toml_string,
)
from knightwatch.release.keys import SigningKey
from knightwatch.trust.roster import Role

PW = "correct horse battery"
NOW = 1_700_000_000_000_000_000
DAY = 86400
S = 1_000_000_000


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "console-users.toml"


@pytest.fixture
def store(path: Path) -> UserStore:
    return UserStore(path, profile=CHEAPEST)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def alice(store: UserStore, key: SigningKey) -> User:
    return store.add("alice", PW, key)


def test_add_then_unlock_gives_the_same_key(store: UserStore, key: SigningKey, alice: User) -> None:
    assert alice.key_id == key.key_id and store.names() == ["alice"]
    signer = store.unlock("alice", PW)
    assert signer.name == "alice" and signer.key.key_id == key.key_id
    assert key.public.verify(signer.key.sign(b"kill fleet"), b"kill fleet")


def test_wrong_password_and_unknown_user_fail_alike(store: UserStore, alice: User) -> None:
    with pytest.raises(LoginFailed) as wrong:
        store.verify("alice", PW + "x")
    with pytest.raises(LoginFailed) as unknown:
        store.verify("mallory", PW)
    assert wrong.value.why == "bad_password" and unknown.value.why == "unknown_user"
    assert str(wrong.value) == str(unknown.value) == "wrong name or password"
    assert isinstance(wrong.value, PermissionError)


@pytest.mark.parametrize("name", ["mallory", "../etc/passwd", "", "x" * 65])
def test_unknown_user_is_verified_against_a_dummy_hash(
    store: UserStore, alice: User, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    seen: list[str] = []
    real = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, hash: str, password: str) -> bool:
        seen.append(hash)
        return real(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)
    with pytest.raises(LoginFailed):
        store.verify(name, PW)
    with pytest.raises(LoginFailed):
        store.verify("alice", "not the password!")
    assert len(seen) == 2  # one argon2 verification on either path
    assert seen[0].startswith("$argon2id$") and seen[0] != alice.password_hash
    assert seen[1] == alice.password_hash


def test_disabled_user_cannot_log_in_until_enabled(store: UserStore, alice: User) -> None:
    store.disable("alice")
    with pytest.raises(LoginFailed) as exc:
        store.unlock("alice", PW)
    assert exc.value.why == "disabled" and str(exc.value) == "wrong name or password"
    with pytest.raises(LoginFailed) as wrong:
        store.verify("alice", "a wrong password")
    assert wrong.value.why == "bad_password"  # a disabled account tells nothing more
    store.enable("alice")
    assert store.unlock("alice", PW).name == "alice"


def test_every_disable_is_counted_so_an_enable_does_not_revive_old_sessions(
    path: Path, store: UserStore, alice: User
) -> None:
    """A session remembers the count from its login (`console.app`): an `enable` after a
    `disable` must not bring back what the disable ended."""
    assert alice.disables == 0
    store.disable("alice")
    store.enable("alice")
    after = store.get("alice")
    assert after is not None and after.disables == 1 and not after.disabled
    path.write_text(path.read_text().replace("disables = 1", "disables = -1"))
    with pytest.raises(ConsoleUserError, match="user alice: disables: must be 0 or more"):
        store.get("alice")


@pytest.mark.parametrize(
    ("name", "password", "rule"),
    [
        ("alice", "short", "at least 12 characters"),
        ("alice", "x" * 1025, "at most 1024"),
        ("bad name", PW, "1-64 letters"),
        ("a" * 65, PW, "1-64 letters"),
        ("", PW, "1-64 letters"),
    ],
)
def test_add_refuses_bad_names_and_passwords(
    store: UserStore, key: SigningKey, name: str, password: str, rule: str
) -> None:
    with pytest.raises(ConsoleUserError, match=rule):
        store.add(name, password, key)
    assert not store.exists


def test_add_refuses_an_existing_name_and_a_key_held_by_another(
    store: UserStore, key: SigningKey, alice: User
) -> None:
    with pytest.raises(ConsoleUserError, match="already exists"):
        store.add("alice", PW, SigningKey.generate())
    with pytest.raises(ConsoleUserError, match="already stored for user alice"):
        store.add("bob", PW, key)


def test_passwd_rewraps_under_the_new_password(
    store: UserStore, key: SigningKey, alice: User
) -> None:
    with pytest.raises(LoginFailed):
        store.passwd("alice", "not the old one", "a brand new password")
    store.passwd("alice", PW, "a brand new password")
    with pytest.raises(LoginFailed):
        store.unlock("alice", PW)
    assert store.unlock("alice", "a brand new password").key.key_id == key.key_id
    with pytest.raises(ConsoleUserError, match="new password: at least 12"):
        store.passwd("alice", "a brand new password", "short")


def test_reset_takes_only_the_stored_key(store: UserStore, key: SigningKey, alice: User) -> None:
    with pytest.raises(
        ConsoleUserError, match=r"--key: key .* is not the key stored for user alice"
    ):
        store.reset("alice", "reset password 1", SigningKey.generate())
    store.reset("alice", "reset password 1", key)
    assert store.unlock("alice", "reset password 1").key.key_id == key.key_id
    with pytest.raises(ConsoleUserError, match="no such user"):
        store.reset("nobody", "reset password 1", key)


def _edit(path: Path, change: dict[str, object], user: str = "alice") -> None:
    data = tomllib.loads(path.read_text())
    record = data["users"][user]
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = record
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[last] = value
    _reseal(path, parse_users(data, "x"))


def _reseal(path: Path, users: dict[str, User]) -> None:
    """Writes `users` sealed with the file's own seal key (as one holding that key could):
    what these tests edit is held by the records' own checks even then."""
    state = msgspec.json.decode(path.with_name(path.name + ".seal").read_bytes())
    generation = state["generation"] + 1
    mac = file_mac(base64.b64decode(state["key"]), generation, users.values())
    path.write_text(dump_users(users.values(), generation=generation, mac=mac))


def _flip(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_tampered_ciphertext_is_an_error_naming_the_field(
    path: Path, store: UserStore, alice: User
) -> None:
    _edit(path, {"key.ciphertext": _flip(alice.key.ciphertext)})
    with pytest.raises(ConsoleUserError) as exc:
        store.unlock("alice", PW)
    assert f"console users file {path}: user alice: key: does not decrypt" in str(exc.value)


def test_a_wrapped_key_moved_to_another_user_does_not_decrypt(
    path: Path, store: UserStore, alice: User
) -> None:
    store.add("bob", PW, SigningKey.generate())
    data = tomllib.loads(path.read_text())
    data["users"]["bob"]["key"] = data["users"]["alice"]["key"]  # same password, alice's key
    _reseal(path, parse_users(data, "x"))
    with pytest.raises(ConsoleUserError, match="user bob: key: does not decrypt"):
        store.unlock("bob", PW)


def test_file_is_0600_and_written_atomically(path: Path, store: UserStore, alice: User) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.disable("alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "console-users.toml",
        "console-users.toml.lock",
        "console-users.toml.seal",
    ]
    assert stat.S_IMODE(path.with_name(path.name + ".seal").stat().st_mode) == 0o600


def test_a_file_others_can_read_is_refused(path: Path, store: UserStore, alice: User) -> None:
    path.chmod(0o644)
    with pytest.raises(ConsoleUserError, match=r"permissions 0644 .* run chmod 600"):
        UserStore(path, profile=CHEAPEST).get("alice")
    with pytest.raises(ConsoleUserError, match="permissions 0644"):
        store.verify("alice", PW)  # a running console refuses too (the file changed)
    path.chmod(0o600)
    assert store.verify("alice", PW).name == "alice"


def test_no_file_means_no_users(store: UserStore) -> None:
    assert not store.exists and store.names() == [] and store.get("alice") is None
    with pytest.raises(LoginFailed) as exc:
        store.verify("alice", PW)
    assert exc.value.why == "unknown_user"


def test_a_change_by_another_process_is_seen_without_a_restart(
    path: Path, store: UserStore, alice: User
) -> None:
    other = UserStore(path, profile=CHEAPEST)  # the CLI, while the console runs
    assert store.unlock("alice", PW)
    other.disable("alice")
    with pytest.raises(LoginFailed) as exc:
        store.verify("alice", PW)
    assert exc.value.why == "disabled"
    other.add("bob", PW, SigningKey.generate())
    assert store.names() == ["alice", "bob"]
    path.unlink()
    assert store.names() == []


def test_a_file_gone_bad_is_refused_not_served_from_memory(
    path: Path, store: UserStore, alice: User
) -> None:
    assert store.get("alice") is not None
    path.write_text(path.read_text().replace("disabled = false", 'disabled = "no"'))
    with pytest.raises(ConsoleUserError, match="user alice: disabled: expected `bool`"):
        store.get("alice")
    with pytest.raises(ConsoleUserError):  # still refused on the next lookup
        store.get("alice")


def _valid_text(store: UserStore) -> str:
    store.add("alice", PW, SigningKey.generate())
    store.issue_token("alice", PW, ["operator"], DAY, now_ns=NOW)
    return store.path.read_text()


MALFORMED = [
    # (description, edit of the valid text: (old, new), field named, rule words)
    (
        "plain hash",
        (r'password_hash = "[^"]*"', 'password_hash = "hunter2"'),
        "password_hash",
        "argon2id",
    ),
    (
        "broken hash",
        (r'password_hash = "\$argon2id\$[^"]*"', 'password_hash = "$argon2id$v=19$junk"'),
        "password_hash",
        "well-formed",
    ),
    ("missing hash", (r'password_hash = "[^"]*"\n', ""), "password_hash", "missing"),
    (
        "unknown role",
        (r'roles = \["operator"\]', 'roles = ["operator", "root"]'),
        "tokens[0].roles[1]",
        "invalid enum value 'root'",
    ),
    ("no roles", (r'roles = \["operator"\]', "roles = []"), "tokens[0].roles", "at least one role"),
    (
        "bad base64",
        (
            r'(\[users.alice\][^\[]*key = \{ kdf = "argon2id", )salt = "[^"]*"',
            r'\1salt = "!!notbase64"',
        ),
        "key.salt",
        "not base64",
    ),
    (
        "short nonce",
        (r'(\[users.alice\][^\[]*key = \{[^}]*)nonce = "[^"]*"', r'\1nonce = "AAAA"'),
        "key.nonce",
        "12 bytes",
    ),
    ("huge memory", (r"m = \d+", "m = 99999999999"), "key.m", "outside"),
    ("zero time", (r"t = \d+, m", "t = 0, m"), "key.t", "outside"),
    ("bool as text", ("disabled = false", 'disabled = "no"'), "disabled", "expected `bool`"),
    (
        "unknown field",
        ("disabled = false", "disabled = false\nadmin = true"),
        "admin",
        "unknown field",
    ),
    ("bad key id", (r'key_id = "[0-9a-f]*"', 'key_id = "abc"'), "key_id", "64 lowercase hex"),
    ("bad token id", (r'id = "t_[0-9a-f]*"', 'id = "token1"'), "tokens[0].id", "t_ and 10"),
    (
        "bad digest",
        (r'sha256 = "[0-9a-f]*"', 'sha256 = "XYZ"'),
        "tokens[0].sha256",
        "64 lowercase hex",
    ),
    (
        "expiry first",
        (r"expires_ns = \d+", "expires_ns = 1"),
        "tokens[0].expires_ns",
        "after created_ns",
    ),
    (
        "argon2 token key",
        (r'kdf = "hkdf-sha256"', 'kdf = "argon2id"'),
        "tokens[0].key.kdf",
        "hkdf-sha256",
    ),
    (
        "kdf unknown",
        (r'kdf = "hkdf-sha256"', 'kdf = "md5"'),
        "tokens[0].key.kdf",
        "invalid enum value",
    ),
    (
        "operator without key",
        (r"\nkey = \{ kdf = \"hkdf[^\n]*", ""),
        "tokens[0].key",
        "beyond viewer",
    ),
]


@pytest.mark.parametrize(
    ("what", "edit", "field", "rule"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_a_malformed_file_is_one_line_naming_file_user_field_and_rule(
    path: Path, store: UserStore, what: str, edit: tuple[str, str], field: str, rule: str
) -> None:
    text = _valid_text(store)
    bad = re.sub(edit[0], edit[1], text, count=1)
    assert bad != text, what
    path.write_text(bad)
    with pytest.raises(ConsoleUserError) as exc:
        UserStore(path, profile=CHEAPEST).get("alice")
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"console users file {path}: user alice: {field}: "), message
    assert rule in message.lower(), message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("version = 2\n", "version: must be 1"),
        ("version = 1\n[users.'a b']\n", "name: 1-64 letters"),
        ("version = 1\nextra = 1\n", "extra: unknown setting"),
        ('version = 1\n[users]\nalice = "x"\n', "user alice: (table): must be a table"),
        ('version = 1\nusers = "x"\n', "users: must be a table of users"),
        ("# nothing\n", "refused as empty"),
        ("version = [\n", "not valid TOML"),
    ],
)
def test_a_malformed_file_outside_a_user_names_the_file(path: Path, text: str, words: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConsoleUserError) as exc:
        UserStore(path, profile=CHEAPEST).names()
    assert str(path) in str(exc.value) and words in str(exc.value)


# --- tokens -----------------------------------------------------------------------------------


def test_an_operator_token_signs_as_its_owner(
    store: UserStore, key: SigningKey, alice: User
) -> None:
    secret, token = store.issue_token("alice", PW, ["operator"], 7 * DAY, now_ns=NOW)
    assert re.fullmatch(r"kw_[A-Za-z0-9_-]{43}", secret)
    assert re.fullmatch(r"t_[0-9a-f]{10}", token.id) and token.key is not None
    assert token.expires_ns == NOW + 7 * DAY * S and not token.service
    user, found, signer = store.authenticate_token(secret, NOW + S)
    assert user.name == "alice" and found == token
    assert signer is not None and signer.name == "alice" and signer.key.key_id == key.key_id
    assert store.tokens("alice") == (token,)


def test_a_token_beyond_viewer_needs_the_right_password(store: UserStore, alice: User) -> None:
    with pytest.raises(ConsoleUserError, match="password: needed"):
        store.issue_token("alice", None, ["operator"], DAY, now_ns=NOW)
    with pytest.raises(LoginFailed):
        store.issue_token("alice", "the wrong password", ["operator"], DAY, now_ns=NOW)
    assert store.tokens("alice") == ()


def test_a_viewer_token_holds_no_key(path: Path, store: UserStore, alice: User) -> None:
    secret, token = store.issue_token("alice", None, [Role.VIEWER], DAY, now_ns=NOW)
    assert token.key is None
    assert "hkdf" not in path.read_text()
    _, _, signer = store.authenticate_token(secret, NOW)
    assert signer is None


def test_service_tokens_are_marked_and_never_approve(store: UserStore, alice: User) -> None:
    secret, token = store.issue_token("alice", PW, ["supervisor"], DAY, service=True, now_ns=NOW)
    assert token.service and store.authenticate_token(secret, NOW)[1].service
    with pytest.raises(ConsoleUserError, match="can never approve"):
        store.issue_token("alice", PW, ["operator", "approver"], DAY, service=True, now_ns=NOW)


@pytest.mark.parametrize(
    ("roles", "ttl", "rule"),
    [
        ([], DAY, "at least one role"),
        (["root"], DAY, "not a role"),
        (["viewer"], 0, "outside"),
        (["viewer"], MAX_TOKEN_TTL_S + 1, "outside"),
    ],
)
def test_token_requests_out_of_the_rules_are_refused(
    store: UserStore, alice: User, roles: list[str], ttl: int, rule: str
) -> None:
    with pytest.raises(ConsoleUserError, match=rule):
        store.issue_token("alice", PW, roles, ttl, now_ns=NOW)


def test_tokens_expire_are_revoked_and_follow_their_owner(store: UserStore, alice: User) -> None:
    secret, token = store.issue_token("alice", PW, ["operator", "viewer"], DAY, now_ns=NOW)
    assert token.roles == (Role.OPERATOR, Role.VIEWER)
    assert store.authenticate_token(secret, NOW + DAY * S - 1)[2] is not None
    with pytest.raises(LoginFailed) as exc:
        store.authenticate_token(secret, NOW + DAY * S)
    assert exc.value.why == "token_expired"
    revoked = store.revoke_token("alice", token.id, NOW + 5)
    assert revoked.revoked_ns == NOW + 5
    assert store.revoke_token("alice", token.id, NOW + 9).revoked_ns == NOW + 5  # first one stays
    with pytest.raises(LoginFailed) as exc:
        store.authenticate_token(secret, NOW + 6)
    assert exc.value.why == "token_revoked"
    with pytest.raises(ConsoleUserError, match="no such token"):
        store.revoke_token("alice", "t_0000000000", NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"tokens.0.expires_ns": NOW + 10 * 365 * DAY * S},  # ten years, written by hand
        # an expired token pushed on, its creation moved with it: no longer than the most
        # from its (forged) creation, but longer than any token issued by now could run
        {
            "tokens.0.created_ns": NOW + 100 * DAY * S,
            "tokens.0.expires_ns": NOW + (100 + MAX_TOKEN_TTL_S // DAY) * DAY * S,
        },
    ],
)
def test_a_token_whose_expiry_is_beyond_the_longest_issued_is_refused(
    path: Path, store: UserStore, alice: User, change: dict[str, object]
) -> None:
    """The file's writer can move an expiry, and a token with more life than `issue_token`
    ever gave is refused (the seal no longer matches), never honoured."""
    secret, _ = store.issue_token("alice", PW, ["operator"], MAX_TOKEN_TTL_S, now_ns=NOW)
    assert store.authenticate_token(secret, NOW + S)[2] is not None  # as issued: accepted
    _edit(path, change)
    with pytest.raises(LoginFailed) as exc:
        store.authenticate_token(secret, NOW + S)
    assert exc.value.why == "token_tampered"


@pytest.mark.parametrize(
    "change",
    [
        {"tokens.0.expires_ns": NOW + 2 * DAY * S},  # a day more: within the longest issued
        {"tokens.0.roles": ["operator", "admin"]},  # widened
        {"tokens.0.service": False},  # a service token made able to approve
    ],
)
def test_an_edited_token_record_is_refused(
    path: Path, store: UserStore, alice: User, change: dict[str, object]
) -> None:
    """Expiry, roles and the service mark are sealed with the token's secret: an edit the
    ttl bound could not see (a token lengthened by a day, or widened) was honoured."""
    secret, _ = store.issue_token("alice", PW, ["operator"], DAY, service=True, now_ns=NOW)
    assert store.authenticate_token(secret, NOW + S)[2] is not None
    _edit(path, change)
    with pytest.raises(LoginFailed) as exc:
        store.authenticate_token(secret, NOW + DAY * S + S)
    assert exc.value.why == "token_tampered"


def test_a_revoked_token_cannot_be_revived_by_editing_the_file(
    path: Path, store: UserStore, alice: User
) -> None:
    secret, token = store.issue_token("alice", PW, ["operator"], DAY, now_ns=NOW)
    store.revoke_token("alice", token.id, NOW + S)
    _edit(path, {"tokens.0.revoked_ns": 0})
    assert store.tokens("alice")[0].revoked_ns == 0  # the edit took
    with pytest.raises(LoginFailed) as exc:
        store.authenticate_token(secret, NOW + 2 * S)
    assert exc.value.why == "token_revoked"


def test_a_token_from_a_file_without_seals_loads_but_is_refused(
    path: Path, store: UserStore, alice: User
) -> None:
    """A users file written before seals still loads (logins work); its tokens cannot be
    verified, so they are refused with their own reason, never trusted."""
    secret, _ = store.issue_token("alice", PW, ["operator"], DAY, now_ns=NOW)
    text = re.sub(r'(?m)^(seal|mac) = "[0-9a-f]{64}"\n', "", path.read_text())
    text = re.sub(r"(?m)^generation = \d+\n", "", text)
    assert "seal" not in text and "generation" not in text
    path.write_text(text)
    path.with_name(path.name + ".seal").unlink()  # as that version left it
    store = UserStore(path, profile=CHEAPEST)  # the console started after the upgrade
    assert store.tokens("alice")[0].seal == ""
    assert store.unlock("alice", PW).name == "alice"
    with pytest.raises(LoginFailed) as exc:
        store.authenticate_token(secret, NOW + S)
    assert exc.value.why == "token_unsealed"


@pytest.mark.parametrize("change", ["passwd", "reset", "disable_enable"])
def test_a_password_change_reset_or_disable_revokes_the_users_tokens(
    store: UserStore, key: SigningKey, alice: User, change: str
) -> None:
    """Sessions end on these; tokens went on working (one issued by whoever learnt the old
    password outlived the change that was meant to shut them out)."""
    secrets_ = [
        store.issue_token("alice", PW, ["operator"], DAY, now_ns=NOW)[0],
        store.issue_token("alice", None, ["viewer"], DAY, now_ns=NOW)[0],
    ]
    for secret in secrets_:
        store.authenticate_token(secret, NOW + S)
    if change == "passwd":
        store.passwd("alice", PW, "second password!")
    elif change == "reset":
        store.reset("alice", "second password!", key)
    else:
        store.disable("alice")
        store.enable("alice")
    for secret in secrets_:
        with pytest.raises(LoginFailed) as exc:
            store.authenticate_token(secret, NOW + S)
        assert exc.value.why == "token_revoked"
    assert all(t.revoked_ns for t in store.tokens("alice"))
    # a token issued after the change works
    fresh, _ = store.issue_token("alice", None, ["viewer"], DAY, now_ns=NOW)
    assert store.authenticate_token(fresh, NOW + S)[0].name == "alice"


@pytest.mark.parametrize(
    "secret", ["", "kw_", "kw_" + "A" * 43, "Bearer kw_x", "kw_" + "!" * 43, "x" * 10_000]
)
def test_unknown_tokens_are_refused(store: UserStore, alice: User, secret: str) -> None:
    store.issue_token("alice", None, ["viewer"], DAY, now_ns=NOW)
    with pytest.raises(LoginFailed) as exc:
        store.authenticate_token(secret, NOW)
    assert exc.value.why == "unknown_token"


def test_a_tampered_token_key_is_an_error_naming_the_field(
    path: Path, store: UserStore, alice: User
) -> None:
    secret, token = store.issue_token("alice", PW, ["operator"], DAY, now_ns=NOW)
    assert token.key is not None
    _edit(
        path,
        {
            "tokens.0.key": {
                **msgspec.to_builtins(token.key),
                "ciphertext": _flip(token.key.ciphertext),
            }
        },
    )
    with pytest.raises(ConsoleUserError, match=r"user alice: tokens\[0\]\.key: does not decrypt"):
        store.authenticate_token(secret, NOW)


def test_no_secret_ever_reaches_the_file(path: Path, store: UserStore, key: SigningKey) -> None:
    store.add("alice", PW, key)
    secret, _ = store.issue_token("alice", PW, ["operator"], DAY, now_ns=NOW)
    store.passwd("alice", PW, "second password!")
    data = path.read_bytes()
    pem_body = b"".join(key.private_pem().splitlines()[1:-1])
    for needle in (PW, "second password!", secret, secret[3:]):
        assert needle.encode() not in data
    assert pem_body not in data and pem_body[:20] not in data
    assert key.public.to_base64().encode() not in data  # only the key id is in plain


# --- the file format --------------------------------------------------------------------------


@given(st.text(max_size=200))
def test_toml_strings_round_trip(text: str) -> None:
    assert tomllib.loads(f"x = {toml_string(text)}")["x"] == text


def _b64(n: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=n, max_size=n).map(lambda b: base64.b64encode(b).decode())


def _hash() -> st.SearchStrategy[str]:
    def build(salt: bytes, digest: bytes, t: int, m: int) -> str:
        enc = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
        return f"$argon2id$v=19$m={m},t={t},p=1${enc(salt)}${enc(digest)}"

    return st.builds(
        build,
        st.binary(min_size=8, max_size=32),
        st.binary(min_size=4, max_size=64),
        st.integers(1, 10),
        st.integers(8, 100_000),
    )


_names = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
_wrapped_pw = st.builds(
    WrappedKey,
    kdf=st.just("argon2id"),
    salt=_b64(16),
    nonce=_b64(12),
    ciphertext=_b64(135),
    t=st.integers(1, 64),
    m=st.integers(8, 1024 * 1024),
    p=st.integers(1, 64),
)
_wrapped_token = st.builds(
    WrappedKey, kdf=st.just("hkdf-sha256"), salt=_b64(16), nonce=_b64(12), ciphertext=_b64(135)
)


@st.composite
def _tokens(draw: st.DrawFn, i: int) -> Token:
    roles = draw(st.lists(st.sampled_from(list(Role)), min_size=1, max_size=4, unique=True))
    service = draw(st.booleans()) and Role.APPROVER not in roles
    created = draw(st.integers(1, 2**62))
    return Token(
        id=f"t_{i:010x}",
        sha256=draw(st.binary(min_size=32, max_size=32)).hex(),
        roles=tuple(roles),
        service=service,
        created_ns=created,
        expires_ns=created + draw(st.integers(1, 2**62)),
        revoked_ns=draw(st.integers(0, 2**63 - 1)),
        key=None if set(roles) <= {Role.VIEWER} else draw(_wrapped_token),
    )


@st.composite
def _users(draw: st.DrawFn) -> list[User]:
    names = draw(st.lists(_names, max_size=4, unique=True))
    out = []
    n = 0
    for name in names:
        tokens = []
        for _ in range(draw(st.integers(0, 3))):
            tokens.append(draw(_tokens(n)))
            n += 1
        out.append(
            User(
                name=name,
                key_id=os.urandom(32).hex(),
                password_hash=draw(_hash()),
                key=draw(_wrapped_pw),
                disabled=draw(st.booleans()),
                tokens=tuple(tokens),
            )
        )
    return out


@settings(max_examples=150)
@given(_users())
def test_the_writer_and_the_reader_agree(users: list[User]) -> None:
    text = dump_users(users)
    back = parse_users(tomllib.loads(text), "f")
    assert back == {u.name: u for u in users}
    assert dump_users(back.values()) == text


def test_a_wrapped_key_of_an_unknown_algorithm_is_a_one_line_error(
    path: Path, store: UserStore, alice: User, key: SigningKey
) -> None:
    """Sealed properly (someone who knew the password rewrapped it), but a PKCS#8 key whose
    algorithm no library knows: cryptography raises UnsupportedAlgorithm, not ValueError,
    and unlocking ended in a traceback."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from knightwatch.console import users as users_mod

    der = serialization.load_pem_private_key(key.private_pem(), None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    oid = bytes([0x06, 0x03, 0x2B, 0x65, 0x70])  # Ed25519, 1.3.101.112 -> 1.3.101.99
    at = der.index(oid)
    odd = der[: at + 4] + bytes([0x63]) + der[at + 5 :]
    pem = (
        b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(odd) + b"-----END PRIVATE KEY-----\n"
    )
    w = alice.key
    kek = users_mod._password_kek(PW, base64.b64decode(w.salt), w.t, w.m, w.p)
    nonce = os.urandom(12)
    sealed = ChaCha20Poly1305(kek).encrypt(nonce, pem, users_mod._aad("alice", alice.key_id, "pw"))
    _edit(
        path,
        {
            "key.nonce": base64.b64encode(nonce).decode(),
            "key.ciphertext": base64.b64encode(sealed).decode(),
        },
    )
    with pytest.raises(ConsoleUserError) as exc:
        store.unlock("alice", PW)
    assert str(exc.value) == (
        f"console users file {path}: user alice: key: decrypts to no private key"
    )


# --- the whole file: sealed and numbered, never put back -------------------------------------


@pytest.mark.parametrize("change", ["revoke_token", "passwd", "disable"])
def test_an_older_copy_of_the_file_put_back_is_refused_at_load(
    path: Path, store: UserStore, alice: User, change: str
) -> None:
    """Whoever could write the file could put back an older copy of it, and a revoked token,
    an old password or a disabled user was trusted again: the copy's generation is below the
    last one written, and it is refused with one line naming the file and the rule."""
    secret, token = store.issue_token("alice", PW, ["operator"], DAY, now_ns=NOW)
    before = path.read_bytes()
    if change == "revoke_token":
        store.revoke_token("alice", token.id, NOW + S)
    elif change == "passwd":
        store.passwd("alice", PW, "second password!")
    else:
        store.disable("alice")
    path.write_bytes(before)  # the older copy, its seal intact
    for reader in (store, UserStore(path, profile=CHEAPEST)):  # running, and restarted
        with pytest.raises(ConsoleUserError) as exc:
            reader.unlock("alice", PW)
        message = str(exc.value)
        assert "\n" not in message
        assert message.startswith(f"console users file {path}: generation: "), message
        assert "older copy was put back (rollback)" in message
        with pytest.raises(ConsoleUserError, match="rollback"):
            reader.authenticate_token(secret, NOW + 2 * S)


def test_a_running_console_refuses_an_older_copy_even_with_its_seal_file_put_back(
    path: Path, store: UserStore, alice: User
) -> None:
    seal = path.with_name(path.name + ".seal")
    old_file, old_seal = path.read_bytes(), seal.read_bytes()
    store.disable("alice")
    path.write_bytes(old_file)
    seal.write_bytes(old_seal)
    with pytest.raises(ConsoleUserError, match=r"generation: 1 is older .* \(2\)"):
        store.unlock("alice", PW)


def test_a_sealed_file_edited_by_hand_or_unsealed_is_refused(
    path: Path, store: UserStore, alice: User
) -> None:
    store.disable("alice")
    text = path.read_text()
    path.write_text(text.replace("disabled = true", "disabled = false"))
    with pytest.raises(ConsoleUserError, match=r"toml: mac: does not match the file"):
        UserStore(path, profile=CHEAPEST).verify("alice", PW)
    unsealed = re.sub(r'(?m)^(generation = \d+|mac = "[0-9a-f]{64}")\n', "", text)
    path.write_text(unsealed.replace("disabled = true", "disabled = false"))
    with pytest.raises(ConsoleUserError, match=r"toml: mac: missing, but generation 2 was"):
        UserStore(path, profile=CHEAPEST).verify("alice", PW)
    path.write_text(text)
    path.with_name(path.name + ".seal").unlink()
    with pytest.raises(ConsoleUserError, match=r"mac: its seal file .*\.seal is missing"):
        UserStore(path, profile=CHEAPEST).verify("alice", PW)


def test_a_file_from_before_seals_loads_and_is_sealed_at_its_next_write(
    path: Path, key: SigningKey
) -> None:
    """An upgrade: the previous version wrote no generation, no mac and no seal file."""
    UserStore(path, profile=CHEAPEST).add("alice", PW, key)
    text = re.sub(r'(?m)^(generation = \d+|mac = "[0-9a-f]{64}")\n', "", path.read_text())
    path.write_text(text)
    path.with_name(path.name + ".seal").unlink()
    store = UserStore(path, profile=CHEAPEST)
    assert store.unlock("alice", PW).name == "alice"
    store.disable("alice")
    assert re.search(r'(?m)^generation = 1\nmac = "[0-9a-f]{64}"$', path.read_text())
    path.write_text(text)  # the unsealed copy from before the disable
    with pytest.raises(ConsoleUserError, match="mac: missing, but generation 1 was written"):
        UserStore(path, profile=CHEAPEST).get("alice")
