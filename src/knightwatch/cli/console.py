"""`knightwatch console ...`: the operator console's users and tokens (and, later, the server).

Passwords are only ever prompted for (hidden, typed twice when new), never taken
from the command line where `ps` and shell history would keep them; a script
may pipe them on stdin. The users file lives in the state directory next to the
fleet's other state and is changed only through these commands, so a running
console follows a `disable` at its next request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from knightwatch.cli import memory
from knightwatch.cli.fleet import AnchorOpt, NatsUrl, StateDir
from knightwatch.cli.options import TIMEOUT_MAX, nonempty_path, when
from knightwatch.console.users import DEFAULT_USERS_FILE, MAX_TOKEN_TTL_S, UserStore
from knightwatch.errors import KnightwatchError
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.keys import SigningKey, load_signing_key
from knightwatch.trust.roster import Role

console = Console()
console_app = typer.Typer(
    help="The operator console: users and API tokens (the kill works without it).",
    no_args_is_help=True,
)
user_app = typer.Typer(
    help="Console users: roster people with a password and their key, wrapped.",
    no_args_is_help=True,
)
console_app.add_typer(user_app, name="user")
# `console serve` (the web server) is registered on `console_app` below the user commands.

UsersOpt = typer.Option(
    None,
    "--users",
    envvar="KNIGHTWATCH_CONSOLE_USERS",
    help=f"the users file (default STATE_DIR/{DEFAULT_USERS_FILE})",
    # `--users "$USERS"` with USERS unset is `.`, the directory it ran in: refused naming
    # the option (it ended "PosixPath('.') has an empty name", naming neither)
    parser=nonempty_path,
)
UserKeyOpt = typer.Option(
    ...,
    "--key",
    help="the person's private key file (0600): the key their roster entry holds",
)


def users_path(users: Path | None, state_dir: Path) -> Path:
    return users if users is not None else state_dir / DEFAULT_USERS_FILE


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Expected failures become one red line and exit code 2, never a traceback."""
    try:
        yield
    except (KnightwatchError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _store(users: Path | None, state_dir: Path) -> UserStore:
    return UserStore(users_path(users, state_dir))


def _key(path: Path) -> SigningKey:
    try:
        return load_signing_key(path)  # refuses a key file others can read
    except ReleaseInputError as exc:
        raise ReleaseInputError(f"--key: {exc}") from None


def _new_password(label: str = "password") -> str:
    return str(typer.prompt(f"new {label}", hide_input=True, confirmation_prompt=True))


def _password(label: str = "password") -> str:
    return str(typer.prompt(label, hide_input=True))


@user_app.command("add")
def add(
    name: str = typer.Argument(..., help="the person's roster name"),
    key: Path = UserKeyOpt,
    users: Path | None = UsersOpt,
    state_dir: Path = StateDir,
) -> None:
    """Add a roster person: a password (prompted twice) and their key, wrapped under it."""
    with _errors():
        store = _store(users, state_dir)
        signing_key = _key(key)
        if store.get(name) is not None:  # before asking for a password
            raise KnightwatchError(f"user {name}: already exists in {store.path}")
        user = store.add(name, _new_password(), signing_key)
    console.print(  # a path is the caller's text, not markup
        f"user {name} added to {store.path} (key {user.key_id[:16]}); their roles come from "
        "the roster",
        highlight=False,
        markup=False,
    )


@user_app.command("passwd")
def passwd(
    name: str = typer.Argument(...),
    key: Path | None = typer.Option(
        None, "--key", help="reset from the person's key file instead of the old password"
    ),
    users: Path | None = UsersOpt,
    state_dir: Path = StateDir,
) -> None:
    """Change a password (old one prompted), or reset it with --key (an admin's reset)."""
    with _errors():
        store = _store(users, state_dir)
        if store.get(name) is None:
            raise KnightwatchError(f"user {name}: no such user in {store.path}")
        if key is not None:
            signing_key = _key(key)  # a bad key file is refused before any prompt
            store.reset(name, _new_password(), signing_key)
        else:
            store.passwd(name, _password("old password"), _new_password())
    console.print(f"password of {name} changed", highlight=False)


@user_app.command("disable")
def disable(
    name: str = typer.Argument(...), users: Path | None = UsersOpt, state_dir: Path = StateDir
) -> None:
    """Refuse the user's logins and tokens (a running console follows at its next request)."""
    with _errors():
        _store(users, state_dir).disable(name)
    console.print(f"user {name} disabled", highlight=False)


@user_app.command("enable")
def enable(
    name: str = typer.Argument(...), users: Path | None = UsersOpt, state_dir: Path = StateDir
) -> None:
    """Allow a disabled user again."""
    with _errors():
        _store(users, state_dir).enable(name)
    console.print(f"user {name} enabled", highlight=False)


@user_app.command("list")
def list_users(users: Path | None = UsersOpt, state_dir: Path = StateDir) -> None:
    """The users: name, key id, disabled, live tokens."""
    with _errors():
        store = _store(users, state_dir)
        if not store.exists:
            console.print(
                f"no users file at {store.path}: the console refuses every login",
                highlight=False,
                markup=False,
            )
            return
        now = time.time_ns()
        table = Table("name", "key", "disabled", "live tokens")
        for name in store.names():
            user = store.get(name)
            assert user is not None
            live = sum(1 for t in user.tokens if t.revoked_ns == 0 and t.expires_ns > now)
            table.add_row(name, user.key_id[:16], "yes" if user.disabled else "no", str(live))
    console.print(table)


@user_app.command("token")
def token(
    name: str = typer.Argument(...),
    role: list[str] = typer.Option(
        [], "--role", help="a role for the token (repeat): viewer, operator, approver, ..."
    ),
    ttl_days: int = typer.Option(
        30, "--ttl-days", min=1, max=MAX_TOKEN_TTL_S // 86400, help="days until it expires"
    ),
    service: bool = typer.Option(
        False, "--service", help="a service's token (a supervisor, CI): can never approve"
    ),
    revoke: str | None = typer.Option(None, "--revoke", help="revoke the token with this id"),
    list_: bool = typer.Option(False, "--list", help="list the user's tokens"),
    users: Path | None = UsersOpt,
    state_dir: Path = StateDir,
) -> None:
    """Issue an API token (shown once), or --revoke ID, or --list."""
    with _errors():
        store = _store(users, state_dir)
        now = time.time_ns()
        if list_ or revoke is not None:
            if role or service or (list_ and revoke is not None):
                raise KnightwatchError(
                    "--list and --revoke take no --role/--service, nor each other"
                )
            if revoke is not None:
                store.revoke_token(name, revoke, now)
                console.print(f"token {revoke} of {name} revoked", highlight=False)
                return
            _token_table(store, name)
            return
        if not role:
            raise KnightwatchError("--role: a token needs at least one role (repeat --role)")
        if store.get(name) is None:
            raise KnightwatchError(f"user {name}: no such user in {store.path}")
        viewer_only = set(role) <= {Role.VIEWER.value}
        password = None if viewer_only else _password(f"password of {name}")
        secret, issued = store.issue_token(
            name, password, role, ttl_days * 86400, service=service, now_ns=now
        )
    console.print(
        f"token {issued.id} for {name} ({', '.join(issued.roles)}), expires "
        f"{when(issued.expires_ns)} UTC",
        highlight=False,
    )
    console.print("[yellow]the secret is shown once and never again; store it now:[/yellow]")
    typer.echo(secret)


def _token_table(store: UserStore, name: str) -> None:
    table = Table("id", "roles", "service", "created", "expires", "revoked")
    for t in store.tokens(name):
        table.add_row(
            escape(t.id),
            escape(", ".join(t.roles)),
            "yes" if t.service else "no",
            when(t.created_ns),
            when(t.expires_ns),
            when(t.revoked_ns),
        )
    console.print(table)


def check_tls(cert: Path, key: Path) -> None:
    """Both files readable, bounded, and a certificate with its key, before anything starts."""
    import ssl

    from knightwatch.inputs import read_bytes

    read_bytes(cert, "--tls-cert", 1024 * 1024)
    read_bytes(key, "--tls-key", 1024 * 1024)
    if key.stat().st_mode & 0o077:
        raise KnightwatchError(f"--tls-key {key}: readable by others; chmod 600 it")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise KnightwatchError(
            f"--tls-cert {cert}, --tls-key {key}: not a PEM certificate and its key ({exc})"
        ) from None


@console_app.command("serve")
def serve(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="address to bind (loopback by default; put TLS in front)"
    ),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    key: Path | None = typer.Option(
        None,
        "--key",
        envvar="KNIGHTWATCH_CONSOLE_KEY",
        help="the console's own identity: a viewer-only key (default STATE_DIR/trust/keys/"
        "console.key)",
    ),
    anchor: Path | None = AnchorOpt,
    users: Path | None = UsersOpt,
    registry: Path | None = typer.Option(
        None, "--registry", help="flag registry (enables safe default and rollout abort)"
    ),
    policy: Path | None = typer.Option(None, "--policy", help="flag activation policy TOML"),
    config: Path | None = typer.Option(
        None, "--config", help="TOML with \\[preflight] bounds and the \\[ramp] approvals use"
    ),
    heartbeat: float = typer.Option(
        1.0, "--heartbeat", min=0.05, max=10.0, help="seconds between stream beats"
    ),
    kill_timeout: float = typer.Option(
        2.0,
        "--kill-timeout",
        min=0.05,
        # unbounded, `inf` had every console kill wait for a dead node for good, its result
        # (who did not confirm, whether it was stored) never shown
        max=TIMEOUT_MAX,
        help=f"seconds a kill waits for confirmations (at most {TIMEOUT_MAX:g})",
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="serve HTTPS with this cert"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="and this key (0600)"),
    nats_url: str = NatsUrl,
    state_dir: Path = StateDir,
) -> None:
    """Serve the operator console (pages, API, live stream) until Ctrl-C.

    People log in with the password `console user add` set; every change they
    make is signed with their own key, and every request is recorded."""
    import asyncio

    from knightwatch.cli.fleet import _urls
    from knightwatch.cli.incident import incident_config
    from knightwatch.console.serve import run, settings_for
    from knightwatch.control.plane.connect import recorded_url
    from knightwatch.flags.activation import ActivationPolicy
    from knightwatch.flags.registry import FlagRegistry
    from knightwatch.trust.identity import load_signer
    from knightwatch.trust.store import TrustStore, load_anchor

    with _errors():
        if (tls_cert is None) != (tls_key is None):
            raise KnightwatchError("--tls-cert, --tls-key: give both or neither")
        if tls_cert is not None and tls_key is not None:
            check_tls(tls_cert, tls_key)
        if host not in ("127.0.0.1", "::1", "localhost") and tls_cert is None:
            console.print(
                f"[yellow]warning:[/yellow] serving on {escape(host)} without TLS: passwords "
                "and session cookies cross the network in clear; use --tls-cert/--tls-key or a "
                "TLS proxy",
                highlight=False,
            )
        urls = _urls(nats_url) if nats_url else recorded_url(state_dir)
        if not urls:
            raise KnightwatchError(
                f"--nats-url: no control plane given and none recorded in {state_dir} "
                "(start one with `knightwatch up`)"
            )
        plan, preflight_cfg = incident_config(config)
        settings = settings_for(state_dir, urls, users=users)
        settings.plan, settings.preflight = plan, preflight_cfg
        settings.heartbeat_s, settings.kill_timeout_s = heartbeat, kill_timeout
        settings.secure_cookies = tls_cert is not None
        settings.tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
        if registry is not None:
            settings.registry = FlagRegistry.load(registry)
        settings.flag_policy = ActivationPolicy.load(policy) if policy else ActivationPolicy()
        signer = load_signer(key or state_dir / "trust" / "keys" / "console.key")
        trust = TrustStore(load_anchor(anchor or state_dir / "trust" / "anchor.toml"))
        store = UserStore(settings.users)
        if not store.names():
            console.print(
                f"[yellow]no console users in {escape(str(settings.users))}[/yellow]: every "
                "login is refused until `knightwatch console user add NAME --key KEYFILE`",
                highlight=False,
            )
        scheme = "https" if tls_cert else "http"
        console.print(
            escape(f"console on {scheme}://{host}:{port}/ (Ctrl-C to stop)"), highlight=False
        )
        memory.serve_reads_from_heap()
        memory.freeze_startup_objects()
        asyncio.run(run(settings, signer, trust, store, host=host, port=port))
