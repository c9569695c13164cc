"""Every command that takes a file, fed hostile files: one clear line, never a traceback.

For each (command, file option) a fixed set of hostile files is handed over,
with every other argument valid so the hostile file is what the command meets:
missing, a directory, empty, comments only, not UTF-8, NUL bytes, nesting
100 000 deep (JSON arrays and objects, TOML, YAML flow and block), a YAML alias
bomb, impossible dates, a 900 KB id, a 64 MB file, /dev/zero and a symlink
loop. Each run must end with exit 1 or 2 (or 0 where the file is only hashed or
shown), no exception escaping, a bounded message that names the file, and
within the test timeout (the bound on time; tests never assert durations).

`test_the_table_covers_every_file_option` walks the CLI so a new file option
cannot be added without joining this table.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from knightwatch.audit import AuditContext, FlightRecorder
from knightwatch.audit.log import MappedLog
from knightwatch.cli.app import app
from knightwatch.clock import SimClock
from knightwatch.console.users import UserStore
from knightwatch.release.contents import contents_from_directory
from knightwatch.release.dsse import encode_envelope
from knightwatch.release.keys import SigningKey, write_key_pair
from knightwatch.release.manifest import Manifest, encode_manifest
from knightwatch.release.signing import release_envelope, sign_release
from knightwatch.trust.roster import roster_envelope, sign_roster

from ..identities import KIT
from .conftest import command_params

pytestmark = pytest.mark.timeout(60)

runner = CliRunner()
NOWHERE = "nats://127.0.0.1:1"
REGISTRY = Path(__file__).parents[1] / "flags" / "fixtures" / "clean_repo" / "feature-flags.yaml"
MAX_OUTPUT = 20_000
"""No message may repeat a hostile file back at length."""

# ---------------------------------------------------------------- hostile files

_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)

HOSTILE: dict[str, bytes | None] = {
    "missing": None,
    "directory": None,
    "symlink-loop": None,
    "dev-zero": None,
    "oversized": None,
    "empty": b"",
    "comments": b"# nothing here\n",
    "not-utf8": b"\xff\xfe\xfd garbage \x80\n",
    "nul-bytes": b"\x00" * 1000,
    "deep-json-array": b"[" * 100_000 + b"]" * 100_000,
    "deep-json-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "deep-toml": b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "deep-yaml-flow": b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "deep-yaml-block": "\n".join(" " * i + "k:" for i in range(800)).encode() + b" 1\n",
    "yaml-alias-bomb": _BOMB.encode(),
    "impossible-date-yaml": (
        b"version: 1\nflags:\n  - id: a.b\n    description: x\n    safe_default: false\n"
        b"    trading_behaviour: false\n    lifecycle: active\n    created: 2023-02-29\n"
    ),
    "impossible-date-toml": b"when = 2023-02-29\n",
    "huge-id": b"id: " + b"x" * 900_000 + b"\n",
}


def make_hostile(where: Path, name: str, ext: str) -> Path:
    path = where / f"hostile-{name}{ext}"
    content = HOSTILE[name]
    if name == "missing":
        return path
    if name == "directory":
        path.mkdir()
    elif name == "symlink-loop":
        path.symlink_to(path)
    elif name == "dev-zero":
        path.symlink_to("/dev/zero")
    elif name == "oversized":
        with path.open("wb") as f:
            f.truncate(64 * 1024 * 1024)  # sparse: costs nothing on disk
    else:
        assert content is not None
        path.write_bytes(content)
    if path.is_file() and not path.is_symlink():
        path.chmod(0o600)  # so a key loader gets past its permission check to the parsing
    return path


# ---------------------------------------------------------------- a valid site


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        key, self.key, self.pub = write_key_pair(root / "keys", "ci")
        self.registry = root / "feature-flags.yaml"
        shutil.copy(REGISTRY, self.registry)
        self.policy = root / "policy.toml"
        self.policy.write_text(
            f'threshold = 1\n[[keys]]\nsigner = "ci"\nid = "{key.key_id}"\n'
            f'public_key = "{key.public.to_base64()}"\n'
        )
        self.artifacts = root / "app"
        self.artifacts.mkdir()
        (self.artifacts / "router.py").write_text("print('route')\n")
        self.config = root / "config.toml"
        self.config.write_text("venue = 'x'\n")
        self.flags = root / "flags.json"
        self.flags.write_text("{}")
        manifest = Manifest(
            release_id="r1", contents=contents_from_directory(self.artifacts, self.config, {})
        )
        self.manifest = root / "r1.manifest.json"
        self.manifest.write_bytes(encode_manifest(manifest))
        self.envelope = root / "r1.dsse.json"
        self.envelope.write_bytes(encode_envelope(sign_release(release_envelope(manifest), key)))
        self.audit = root / "n1.jsonl"
        with FlightRecorder(self.audit, clock=SimClock(10**18)) as rec:
            rec.record_event("arm", AuditContext(node="n1"), actor="ops")
        self.src = root / "src"
        self.src.mkdir()
        self.state = root / "state"
        self.out = root / "out"
        self.out.mkdir()
        KIT.write(root / "trust", private=["n1", "alice"])
        self.node_key = root / "trust" / "keys" / "n1.key"
        self.alice_key = root / "trust" / "keys" / "alice.key"
        self.anchor = root / "trust" / "anchor.toml"
        proposal = msgspec.structs.replace(KIT.roster, version=KIT.roster.version + 1)
        self.proposal = root / "proposal.json"
        self.proposal.write_bytes(
            encode_envelope(sign_roster(roster_envelope(proposal), KIT.signer("admin1").key))
        )


Args = Callable[[Site, str], list[str]]
"""The argv for one case, given the site and the hostile file's path."""

RELEASE_IN = ["--artifacts", "{a}", "--config", "{c}", "--flags", "{fl}"]


def _node(option: str, command: str = "node") -> Args:
    def args(s: Site, f: str) -> list[str]:
        inputs = {
            "--artifacts": str(s.artifacts),
            "--config": str(s.config),
            "--flags": str(s.flags),
        }
        release = [] if option == "--limits" else [x for kv in inputs.items() for x in kv]
        argv = [command, "--id", "n1", "--nats-url", NOWHERE, "--state-dir", str(s.state)]
        argv += ["--key", str(s.node_key), "--anchor", str(s.anchor), *release]
        inputs |= {"--key": str(s.node_key), "--anchor": str(s.anchor)}
        if option in inputs:
            argv[argv.index(option) + 1] = f
        else:
            argv += [option, f]
        return argv

    return args


def _gateway(option: str) -> Args:
    """`knightwatch gateway` with a valid config, key, anchor and release inputs, one file
    hostile."""

    def args(s: Site, f: str) -> list[str]:
        cfg = s.root / "gateway.toml"
        cfg.write_text(
            'listen_port = 1\nassume_flat = true\n[venue]\nport = 2\n[[clients]]\ncomp_id = "OMS"\n'
        )
        inputs = {
            "--artifacts": str(s.artifacts),
            "--release-config": str(s.config),
            "--flags": str(s.flags),
        }
        release = (
            []
            if option in ("--limits", "config_file")
            else [x for kv in inputs.items() for x in kv]
        )
        argv = [
            "gateway",
            f if option == "config_file" else str(cfg),
            "--nats-url",
            NOWHERE,
            "--state-dir",
            str(s.state),
            "--key",
            str(s.node_key),
            "--anchor",
            str(s.anchor),
            *release,
        ]
        inputs |= {"--key": str(s.node_key), "--anchor": str(s.anchor)}
        if option in inputs:
            argv[argv.index(option) + 1] = f
        elif option == "--limits":
            argv += [option, f]
        return argv

    return args


IDENTIFIED: dict[str, list[str]] = {
    "kill": ["kill", "--reason", "r"],
    "resume": ["resume", "--reason", "r"],
    "approve": ["approve", "r1"],
    "requests": ["requests"],
    "status": ["status"],
    "supervisor": ["supervisor"],
    "admission serve": ["admission", "serve", "--policy", "{policy}", "--registry", "{registry}"],
    "admission target": ["admission", "target", "{envelope}", "--reason", "r"],
    "admission approve": [
        "admission",
        "approve",
        "{envelope}",
        "--for",
        "bob",
        "--reason",
        "r",
        "--out",
        "{out}",
    ],
    "flags set": ["flags", "set", "ops.x", "on", "--reason", "r", "--registry", "{registry}"],
    "flags show": ["flags", "show", "ops.dashboard.dark_mode", "--registry", "{registry}"],
    "rollout start": ["rollout", "start", "ops.x", "--registry", "{registry}"],
    "rollout status": ["rollout", "status"],
    "rollout abort": ["rollout", "abort", "ops.x", "--reason", "r", "--registry", "{registry}"],
    "incident preflight": ["incident", "preflight"],
    "incident snapshot": ["incident", "snapshot"],
    "flags approve": [
        "flags",
        "approve",
        "ops.x",
        "on",
        "--for",
        "bob",
        "--reason",
        "r",
        "--out",
        "{out}",
    ],
    "identity show": ["identity", "show"],
    "identity add": [
        "identity",
        "add",
        "x",
        "--public",
        "{pub}",
        "--role",
        "viewer",
        "--out",
        "{out}",
    ],
    "identity revoke": ["identity", "revoke", "alice", "--out", "{out}"],
    "identity rotate": ["identity", "rotate", "alice", "--public", "{pub}", "--out", "{out}"],
    "identity sign": ["identity", "sign", "{proposal}"],
    "identity publish": ["identity", "publish", "{proposal}"],
    "identity name": ["identity", "name", "staging", "--out", "{out}"],
}
"""Commands that log in with a key and verify the roster from an anchor (hostile either one:
one line naming it, before anything connects)."""


def _identity(command: str, option: str) -> Args:
    def args(s: Site, f: str) -> list[str]:
        paths = {
            "{policy}": s.policy,
            "{registry}": s.registry,
            "{envelope}": s.envelope,
            "{pub}": s.pub,
            "{out}": s.out / "proposal.json",
            "{proposal}": s.proposal,
        }
        argv = [str(paths.get(a, a)) for a in IDENTIFIED[command]]
        given = {"--key": str(s.alice_key), "--anchor": str(s.anchor)} | {option: f}
        return [*argv, *(x for kv in given.items() for x in kv), "--nats-url", NOWHERE,
                "--state-dir", str(s.state)]  # fmt: skip

    return args


# (command, option) -> (argv builder, file extension, how strict)
#   strict: fail with exit 1 or 2 and name the file;  soft: only hashed or shown, any exit;
#   unhashable: only hashed, and a node would go on to connect: just the files that cannot be
#   hashed at all, each of which must stop it (exit 2, naming the file)
UNHASHABLE = ("missing", "directory", "symlink-loop", "dev-zero")


def _console_users(s: Site) -> str:
    """A users file holding alice (made once per site), for commands whose other file is hostile."""
    path = s.root / "console-users.toml"
    if not path.exists():
        UserStore(path).add("alice", "correct horse battery", SigningKey.generate())
    return str(path)


def _serve(option: str) -> Args:
    """`console serve` with one hostile file and every other input sound (refused before
    anything connects or listens)."""

    def args(s: Site, f: str) -> list[str]:
        sound = {
            "--key": str(s.key), "--anchor": str(s.policy), "--users": _console_users(s),
            "--registry": str(s.registry), "--policy": str(s.root / "activation.toml"),
            "--config": str(s.root / "incident.toml"), "--tls-cert": str(s.root / "tls.crt"),
            "--tls-key": str(s.root / "tls.key"),
        }  # fmt: skip
        (s.root / "activation.toml").write_text('second_approver = "never"\n')
        (s.root / "incident.toml").write_text("[preflight]\nlisten_s = 0.5\n")
        if not (s.root / "tls.crt").exists():
            (s.root / "tls.crt").write_text("not a certificate\n")
            (s.root / "tls.key").write_text("not a key\n")
            (s.root / "tls.key").chmod(0o600)
        sound[option] = f
        if option not in ("--tls-cert", "--tls-key"):
            del sound["--tls-cert"], sound["--tls-key"]
        out = ["console", "serve", "--nats-url", NOWHERE, "--port", "1"]
        for name, value in sound.items():
            out += [name, value]
        return out

    return args


def _console(command: str, *extra: str) -> Args:
    return lambda s, f: ["console", "user", command, "alice", *extra, "--users", f]


CASES: dict[tuple[str, str], tuple[Args, str, str]] = {
    ("limits check", "file"): (lambda s, f: ["limits", "check", f], ".toml", "strict"),
    ("replay", "scenario"): (lambda s, f: ["replay", f], ".toml", "strict"),
    ("flags lint", "--registry"): (
        lambda s, f: ["flags", "lint", "--registry", f, "--src", str(s.src),
                      "--today", "2012-08-01"],
        ".yaml",
        "strict",
    ),
    ("flags list", "--registry"): (
        lambda s, f: ["flags", "list", "--registry", f], ".yaml", "strict"
    ),
    ("flags show", "--registry"): (
        lambda s, f: ["flags", "show", "a.b", "--registry", f, "--nats-url", NOWHERE],
        ".yaml",
        "strict",
    ),
    ("flags set", "--registry"): (
        lambda s, f: ["flags", "set", "a.b", "on", "--reason", "r", "--registry", f,
                      "--nats-url", NOWHERE],
        ".yaml",
        "strict",
    ),
    ("flags set", "--policy"): (
        lambda s, f: ["flags", "set", "a.b", "on", "--reason", "r", "--registry",
                      str(s.registry), "--policy", f, "--nats-url", NOWHERE],
        ".toml",
        "strict",
    ),
    ("rollout start", "--plan"): (
        lambda s, f: ["rollout", "start", "a.b", "--plan", f, "--registry", str(s.registry),
                      "--nats-url", NOWHERE],
        ".toml",
        "strict",
    ),
    ("rollout start", "--registry"): (
        lambda s, f: ["rollout", "start", "a.b", "--registry", f, "--nats-url", NOWHERE],
        ".yaml",
        "strict",
    ),
    ("rollout start", "--policy"): (
        lambda s, f: ["rollout", "start", "a.b", "--registry", str(s.registry), "--policy", f,
                      "--nats-url", NOWHERE],
        ".toml",
        "strict",
    ),
    ("rollout start", "--supervisor-config"): (
        lambda s, f: ["rollout", "start", "a.b", "--registry", str(s.registry),
                      "--supervisor-config", f, "--nats-url", NOWHERE],
        ".toml",
        "strict",
    ),
    ("rollout abort", "--registry"): (
        lambda s, f: ["rollout", "abort", "a.b", "--reason", "r", "--registry", f,
                      "--nats-url", NOWHERE],
        ".yaml",
        "strict",
    ),
    ("rollout abort", "--policy"): (
        lambda s, f: ["rollout", "abort", "a.b", "--reason", "r", "--registry", str(s.registry),
                      "--policy", f, "--nats-url", NOWHERE],
        ".toml",
        "strict",
    ),
    ("audit verify", "file"): (lambda s, f: ["audit", "verify", f], ".jsonl", "strict"),
    ("audit verify", "--checkpoints"): (
        lambda s, f: ["audit", "verify", str(s.audit), "--checkpoints", f], ".jsonl", "soft"
    ),
    ("audit verify", "--key"): (
        lambda s, f: ["audit", "verify", str(s.audit), "--key", f], ".pub", "strict"
    ),
    ("audit why", "file"): (lambda s, f: ["audit", "why", "o1", f], ".jsonl", "strict"),
    ("audit tail", "file"): (lambda s, f: ["audit", "tail", f], ".jsonl", "soft"),
    ("keys show", "public"): (lambda s, f: ["keys", "show", f, "--signer", "x"], ".pub", "strict"),
    ("release build", "--flags"): (
        lambda s, f: ["release", "build", "--id", "r2", "--artifacts", str(s.artifacts),
                      "--config", str(s.config), "--flags", f, "--out", str(s.out / "m.json")],
        ".yaml",
        "strict",
    ),
    ("release build", "--config"): (
        lambda s, f: ["release", "build", "--id", "r2", "--artifacts", str(s.artifacts),
                      "--config", f, "--flags", str(s.flags), "--out", str(s.out / "m.json")],
        ".toml",
        "soft",
    ),
    ("release sign", "source"): (
        lambda s, f: ["release", "sign", f, "--key", str(s.key), "--out", str(s.out / "e.json")],
        ".json",
        "strict",
    ),
    ("release sign", "--key"): (
        lambda s, f: ["release", "sign", str(s.manifest), "--key", f, "--out",
                      str(s.out / "e.json")],
        ".key",
        "strict",
    ),
    ("release verify", "envelope_path"): (
        lambda s, f: ["release", "verify", f, "--policy", str(s.policy)], ".json", "strict"
    ),
    ("release verify", "--policy"): (
        lambda s, f: ["release", "verify", str(s.envelope), "--policy", f], ".toml", "strict"
    ),
    ("release verify", "--registry"): (
        lambda s, f: ["release", "verify", str(s.envelope), "--policy", str(s.policy),
                      "--registry", f],
        ".yaml",
        "strict",
    ),
    ("release attest", "--flags"): (
        lambda s, f: ["release", "attest", "--node", "n1", "--artifacts", str(s.artifacts),
                      "--config", str(s.config), "--flags", f],
        ".yaml",
        "strict",
    ),
    ("release attest", "--config"): (
        lambda s, f: ["release", "attest", "--node", "n1", "--artifacts", str(s.artifacts),
                      "--config", f, "--flags", str(s.flags)],
        ".toml",
        "soft",
    ),
    ("release attest", "--envelope"): (
        lambda s, f: ["release", "attest", "--node", "n1", "--artifacts", str(s.artifacts),
                      "--config", str(s.config), "--flags", str(s.flags), "--envelope", f,
                      "--policy", str(s.policy)],
        ".json",
        "strict",
    ),
    ("release attest", "--policy"): (
        lambda s, f: ["release", "attest", "--node", "n1", "--artifacts", str(s.artifacts),
                      "--config", str(s.config), "--flags", str(s.flags), "--envelope",
                      str(s.envelope), "--policy", f],
        ".toml",
        "strict",
    ),
    ("release attest", "--registry"): (
        lambda s, f: ["release", "attest", "--node", "n1", "--artifacts", str(s.artifacts),
                      "--config", str(s.config), "--flags", str(s.flags), "--envelope",
                      str(s.envelope), "--policy", str(s.policy), "--registry", f],
        ".yaml",
        "strict",
    ),
    ("release attest", "--node-key"): (
        lambda s, f: ["release", "attest", "--node", "n1", "--artifacts", str(s.artifacts),
                      "--config", str(s.config), "--flags", str(s.flags), "--envelope",
                      str(s.envelope), "--policy", str(s.policy), "--node-key", f],
        ".key",
        "strict",
    ),
    ("node", "--limits"): (_node("--limits"), ".toml", "strict"),
    ("node", "--flags"): (_node("--flags"), ".yaml", "strict"),
    ("node", "--config"): (_node("--config"), ".toml", "unhashable"),
    ("node", "--key"): (_node("--key"), ".key", "strict"),
    ("node", "--anchor"): (_node("--anchor"), ".toml", "strict"),
    ("drill-node", "--limits"): (_node("--limits", "drill-node"), ".toml", "strict"),
    ("drill-node", "--flags"): (_node("--flags", "drill-node"), ".yaml", "strict"),
    ("drill-node", "--config"): (_node("--config", "drill-node"), ".toml", "unhashable"),
    ("gateway", "config_file"): (_gateway("config_file"), ".toml", "strict"),
    ("gateway", "--limits"): (_gateway("--limits"), ".toml", "strict"),
    ("gateway", "--flags"): (_gateway("--flags"), ".yaml", "strict"),
    ("gateway", "--release-config"): (_gateway("--release-config"), ".toml", "unhashable"),
    ("gateway", "--key"): (_gateway("--key"), ".key", "strict"),
    ("gateway", "--anchor"): (_gateway("--anchor"), ".toml", "strict"),
    ("drill-node", "--key"): (_node("--key", "drill-node"), ".key", "strict"),
    ("drill-node", "--anchor"): (_node("--anchor", "drill-node"), ".toml", "strict"),
    ("supervisor", "--config"): (
        lambda s, f: ["supervisor", "--config", f, "--nats-url", NOWHERE], ".toml", "strict"
    ),
    ("up", "--supervisor-config"): (
        lambda s, f: ["up", "--supervisor-config", f, "--nats-url", NOWHERE,
                      "--state-dir", str(s.state)],
        ".toml",
        "strict",
    ),
    ("up", "--registry"): (
        lambda s, f: ["up", "--registry", f, "--nats-url", NOWHERE, "--state-dir", str(s.state)],
        ".yaml",
        "strict",
    ),
    ("drill", "--registry"): (
        lambda s, f: ["drill", "--registry", f, "--nats-url", NOWHERE, "--state-dir",
                      str(s.state)],
        ".yaml",
        "strict",
    ),
    ("admission serve", "--policy"): (
        lambda s, f: ["admission", "serve", "--policy", f, "--registry", str(s.registry),
                      "--nats-url", NOWHERE],
        ".toml",
        "strict",
    ),
    ("admission serve", "--registry"): (
        lambda s, f: ["admission", "serve", "--policy", str(s.policy), "--registry", f,
                      "--nats-url", NOWHERE],
        ".yaml",
        "strict",
    ),
    ("admission target", "envelope"): (
        lambda s, f: ["admission", "target", f, "--reason", "r", "--nats-url", NOWHERE],
        ".json",
        "strict",
    ),
    ("admission target", "--approval"): (
        lambda s, f: ["admission", "target", str(s.envelope), "--reason", "r", "--approval", f,
                      "--nats-url", NOWHERE],
        ".json",
        "strict",
    ),
    ("flags approve", "--plan"): (
        lambda s, f: ["flags", "approve", "ops.x", "on", "--rollout", "--plan", f, "--for", "bob",
                      "--reason", "r", "--out", str(s.out / "a.json"), "--nats-url", NOWHERE],
        ".toml",
        "strict",
    ),
    ("admission approve", "envelope"): (
        lambda s, f: ["admission", "approve", f, "--for", "bob", "--reason", "r", "--out",
                      str(s.out / "a.json"), "--nats-url", NOWHERE],
        ".json",
        "strict",
    ),
    **{
        (command, option): (_identity(command, option), ext, "strict")
        for command in IDENTIFIED
        for option, ext in (("--key", ".key"), ("--anchor", ".toml"))
    },
    ("audit verify", "--identity"): (
        lambda s, f: ["audit", "verify", str(s.audit), "--nats-url", NOWHERE, "--identity", f,
                      "--trust-anchor", str(s.anchor)],
        ".key",
        "strict",
    ),
    ("audit verify", "--trust-anchor"): (
        lambda s, f: ["audit", "verify", str(s.audit), "--nats-url", NOWHERE, "--identity",
                      str(s.alice_key), "--trust-anchor", f],
        ".toml",
        "strict",
    ),
    ("resume", "--config"): (
        lambda s, f: ["resume", "--reason", "r", "--config", f, "--nats-url", NOWHERE],
        ".toml",
        "strict",
    ),
    ("incident preflight", "--config"): (
        lambda s, f: ["incident", "preflight", "--config", f, "--nats-url", NOWHERE],
        ".toml",
        "strict",
    ),
    **{
        (f"identity {verb}", "--public"): (
            lambda s, f, verb=verb: ["identity", verb, "alice", "--public", f, "--role", "viewer",
                                     "--out", str(s.out / "p.json"), "--nats-url", NOWHERE]
            if verb == "add" else ["identity", verb, "alice", "--public", f,
                                   "--out", str(s.out / "p.json"), "--nats-url", NOWHERE],
            ".pub",
            "strict",
        )
        for verb in ("add", "rotate")
    },
    **{
        (f"identity {verb}", "proposal"): (
            lambda s, f, verb=verb: ["identity", verb, f, "--nats-url", NOWHERE], ".json", "strict"
        )
        for verb in ("sign", "publish")
    },
    ("flags set", "--approval"): (
        lambda s, f: ["flags", "set", "ops.x", "on", "--reason", "r", "--registry",
                      str(s.registry), "--approval", f, "--nats-url", NOWHERE],
        ".json",
        "strict",
    ),
    ("rollout start", "--approval"): (
        lambda s, f: ["rollout", "start", "ops.x", "--registry", str(s.registry),
                      "--approval", f, "--nats-url", NOWHERE],
        ".json",
        "strict",
    ),
    ("identity show", "--proposal"): (
        lambda s, f: ["identity", "show", "--proposal", f, "--nats-url", NOWHERE],
        ".json",
        "strict",
    ),
    ("approve", "--config"): (
        lambda s, f: ["approve", "r1", "--config", f, "--nats-url", NOWHERE],
        ".toml",
        "strict",
    ),
    ("incident verify", "archive"): (lambda s, f: ["incident", "verify", f], ".tar", "strict"),
    ("console user add", "--key"): (
        lambda s, f: ["console", "user", "add", "bob", "--key", f, "--users", _console_users(s)],
        ".key",
        "strict",
    ),
    ("console user passwd", "--key"): (
        lambda s, f: ["console", "user", "passwd", "alice", "--key", f,
                      "--users", _console_users(s)],
        ".key",
        "strict",
    ),
    # a missing users file is no users: `add` creates it (after a password), `list` says so
    ("console user add", "--users"): (
        _console("add", "--key", "/nonexistent.key"), ".toml", "soft"
    ),
    ("console user passwd", "--users"): (_console("passwd"), ".toml", "strict"),
    ("console user disable", "--users"): (_console("disable"), ".toml", "strict"),
    ("console user enable", "--users"): (_console("enable"), ".toml", "strict"),
    ("console user token", "--users"): (_console("token", "--list"), ".toml", "strict"),
    ("console user list", "--users"): (
        lambda s, f: ["console", "user", "list", "--users", f], ".toml", "soft"
    ),
    ("console serve", "--key"): (_serve("--key"), ".key", "strict"),
    ("console serve", "--anchor"): (_serve("--anchor"), ".toml", "strict"),
    ("console serve", "--users"): (_serve("--users"), ".toml", "soft"),
    ("console serve", "--registry"): (_serve("--registry"), ".yaml", "strict"),
    ("console serve", "--policy"): (_serve("--policy"), ".toml", "strict"),
    ("console serve", "--config"): (_serve("--config"), ".toml", "strict"),
    ("console serve", "--tls-cert"): (_serve("--tls-cert"), ".pem", "strict"),
    ("console serve", "--tls-key"): (_serve("--tls-key"), ".pem", "strict"),
}  # fmt: skip

NOT_INPUT_FILES = {
    "--state-dir", "--report", "--json", "--out", "--dir", "--src", "--artifacts", "--recorder",
}  # fmt: skip
"""Directories and outputs; `--recorder` is an append target, fuzzed on its own below."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return Site(tmp_path_factory.mktemp("site"))


def run(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, args, env={"COLUMNS": "250", "KNIGHTWATCH_LOG": "CRITICAL"})
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"{args[:3]}: {type(exc).__name__}: {exc}"  # an exception escaped: a traceback
    )
    return result.exit_code, result.output


@pytest.mark.parametrize("case", list(CASES), ids=[" ".join(c) for c in CASES])
def test_hostile_files_get_one_clear_error(
    case: tuple[str, str], site: Site, tmp_path: Path
) -> None:
    args, ext, strictness = CASES[case]
    for name in UNHASHABLE if strictness == "unhashable" else HOSTILE:
        path = make_hostile(tmp_path, name, ext)
        code, out = run(args(site, str(path)))
        where = f"{' '.join(case)} with {name}: exit {code}\n{out[:2000]}"
        assert "Traceback" not in out, where
        assert len(out) < MAX_OUTPUT, where
        if strictness in ("strict", "unhashable"):
            assert code in (1, 2), where
            assert path.name in "".join(out.split()), where
        else:
            assert code in (0, 1, 2), where


@pytest.mark.parametrize("name", ["directory", "deep-json-object", "not-utf8", "locked"])
def test_hostile_recorder_files_stop_the_node_with_one_line(
    name: str, site: Site, tmp_path: Path
) -> None:
    """`--recorder` is appended to, so only files that cannot be appended to are refused
    (a missing one is created); each before any connection is tried."""
    if name == "locked":
        path = tmp_path / "held.jsonl"
        holder = MappedLog(path)  # another node appends to it (it holds the file's lock)
    else:
        holder = None
        path = make_hostile(tmp_path, name, ".jsonl")
        if name != "directory":
            path.write_bytes(HOSTILE[name] + b"\n")  # type: ignore[operator]
    try:
        code, out = run(
            ["node", "--id", "n1", "--nats-url", NOWHERE, "--state-dir", str(site.state),
             "--key", str(site.node_key), "--anchor", str(site.anchor), "--recorder", str(path)]
        )  # fmt: skip
    finally:
        if holder is not None:
            holder.close()
    assert code == 2, out
    assert "--recorder" in out and path.name in "".join(out.split()), out


def _file_options() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for prefix, p in command_params():
        descriptor = getattr(p, "type_descriptor", None)
        if getattr(descriptor, "annotation", None) is Path:
            opts: list[str] = getattr(p, "opts", [])
            name = opts[0] if opts[0].startswith("-") else str(getattr(p, "name", ""))
            found.add((" ".join(prefix), name))
    return found


def test_the_table_covers_every_file_option() -> None:
    options = {c for c in _file_options() if c[1] not in NOT_INPUT_FILES}
    assert options, "found no file options: the introspection broke"
    missing = options - set(CASES)
    assert not missing, f"file options with no hostile-input case: {sorted(missing)}"


def test_hostile_files_are_cheap_to_build() -> None:
    """The 64 MB file is sparse and /dev/zero is never read whole (guards the guard)."""
    assert msgspec.json.encode(sorted(HOSTILE)) and os.path.exists("/dev/zero")
