"""`knightwatch keys` and `knightwatch release`: build, sign, verify, attest.

Exit codes: 0 verified / admitted, 1 refused (the findings say why), 2 the
input could not be used (the message names the file and the rule).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from knightwatch.cli.options import nonempty_path
from knightwatch.clock import SystemClock
from knightwatch.errors import escaped, quoted
from knightwatch.flags.schema import RegistrySchema
from knightwatch.inputs import (
    JSON_MAX_BYTES,
    NAME_RULE,
    UNDECODABLE,
    InputFileError,
    is_name,
    read_bytes,
)
from knightwatch.release.admission import (
    Admitter,
    random_nonce,
    registry_findings,
    target_findings,
)
from knightwatch.release.attestation import attest, sign_attestation
from knightwatch.release.contents import PYTHON, ReleaseContents, contents_from_directory
from knightwatch.release.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    Envelope,
    decode_envelope,
    encode_envelope,
)
from knightwatch.release.environment import EnvironmentMeasure
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.flagfiles import load_flag_schema, load_registry_schema
from knightwatch.release.keys import (
    SigningKey,
    VerifyKey,
    load_signing_key,
    load_verify_key,
    write_key_pair,
)
from knightwatch.release.manifest import (
    Manifest,
    check_release_id,
    decode_manifest,
    encode_manifest,
)
from knightwatch.release.reasons import Finding
from knightwatch.release.signing import (
    TrustPolicy,
    load_trust_policy,
    release_envelope,
    sign_release,
    verify_release,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2

keys_app = typer.Typer(help="Ed25519 signing keys for releases and nodes.", no_args_is_help=True)
app = typer.Typer(
    help="Signed release manifests and node attestation (what admission would say).",
    no_args_is_help=True,
)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

ArtifactsOpt = Annotated[
    Path,
    typer.Option(
        "--artifacts",
        help="Directory of release artifacts (every file hashed).",
        parser=nonempty_path,
    ),
]
ConfigOpt = Annotated[Path, typer.Option("--config", help="The config file (checksummed).")]
FlagsOpt = Annotated[
    Path,
    typer.Option(
        "--flags",
        help="Flag table (YAML/JSON: id -> definition hash or meaning) or feature-flags.yaml.",
    ),
]
PolicyOpt = Annotated[
    Path, typer.Option("--policy", help="Trust policy TOML: trusted keys and threshold.")
]
RegistryOpt = Annotated[
    Path | None,
    typer.Option("--registry", help="feature-flags.yaml to check the release's flag schema."),
]


@contextmanager
def _input_errors() -> Iterator[None]:
    """Bad input ends the command with its message and exit 2, never a traceback."""
    try:
        yield
    except ReleaseInputError as exc:  # it quotes input: not markup, and no control characters
        err.print(f"[red]error:[/red] {escape(escaped(str(exc)))}")
        raise typer.Exit(EXIT_BAD_INPUT) from exc


def _findings_table(findings: tuple[Finding, ...]) -> Table:
    table = Table("reason", "subject", "detail", title="findings")
    for finding in findings:  # file names, flag ids, key ids: shown as written, but visibly
        table.add_row(
            escape(str(finding.reason)),
            escape(escaped(finding.subject)),
            escape(escaped(finding.detail)),
        )
    return table


EnvironmentOpt = Annotated[
    bool,
    typer.Option(
        "--environment",
        help="Measure this interpreter's Python environment too (its binary, standard "
        "library and site-packages): nodes then run with --measure-environment.",
    ),
]


MeasureEnvironmentOpt = typer.Option(
    False,
    "--measure-environment",
    help="attest this process's Python environment too (for releases built with "
    "--environment; measured at start, then again at most once a minute)",
)


def _hash_with_progress(
    artifacts: Path, config: Path, flags: Path, *, environment: bool = False
) -> ReleaseContents:
    schema = load_flag_schema(flags)
    with Progress(
        TextColumn("hashing artifacts"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("hash", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return contents_from_directory(
            artifacts,
            config,
            schema,
            advance,
            environment=EnvironmentMeasure() if environment else None,
        )


def _read_json(path: Path, what: str) -> bytes:
    try:
        return read_bytes(path, what, JSON_MAX_BYTES)
    except InputFileError as exc:
        raise ReleaseInputError(str(exc)) from None


def _read_envelope(path: Path) -> Envelope:
    return decode_envelope(_read_json(path, "envelope"), source=f"envelope {path}")


def _looks_like_envelope(data: bytes) -> bool:
    """A JSON object with an envelope's own fields: its errors are the envelope's, not a
    manifest's (a broken `signatures` must not be reported as a missing `release_id`)."""
    try:
        fields = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    except UNDECODABLE:
        return False
    return bool({"payload", "payloadType", "signatures"} & fields.keys())


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file; a path that cannot be resolved (a symlink loop) names
    no file, and reading it fails later with its own message."""
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.exists() and a.samefile(b))
    except (OSError, RuntimeError):
        return False


def _refuse_if_lost(target: Path, signed: Envelope, label: str) -> None:
    """Overwrite `target` only with an envelope that keeps everything it held.

    An existing file that is not a DSSE envelope (a key, a manifest, a config)
    is refused; so is an envelope whose signatures the new one would drop (a
    different release, or a signer missing from the new envelope). Signing an
    envelope in place only ever adds a signature, so it always passes.
    """
    if not os.path.lexists(target):
        return
    try:
        data = read_bytes(target, label, JSON_MAX_BYTES)
        existing = decode_envelope(data, source=f"{label} {target}")
    except (InputFileError, ReleaseInputError):
        raise ReleaseInputError(
            f"{label} {target}: exists and is not a release envelope; refusing to overwrite it "
            "(choose another --out)"
        ) from None
    kept = {s.keyid for s in signed.signatures}
    lost = [
        s.keyid
        for s in existing.signatures
        if existing.payload != signed.payload
        or existing.payload_type != signed.payload_type
        or s.keyid not in kept
    ]
    if lost:
        raise ReleaseInputError(
            f"{label} {target}: holds {len(lost)} signature(s) this envelope would drop "
            f"(key {lost[0][:16]}); refusing to overwrite it: sign {target} itself to add a "
            "signature, or choose another --out"
        )


def _refuse_build_target(
    target: Path, label: str, artifacts: Path, inputs: dict[str, Path]
) -> None:
    """The manifest never lands inside the tree it describes, on an input, or on a file
    that is not a manifest (a key, a config): each would be destroyed or change the hashes."""
    try:
        resolved = target.resolve()
        root = artifacts.resolve()
    except (OSError, RuntimeError):
        raise ReleaseInputError(f"{label} {target}: cannot resolve the path") from None
    if resolved == root or root in resolved.parents:
        raise ReleaseInputError(
            f"{label} {target}: inside the --artifacts directory {artifacts}; the manifest must "
            "not overwrite or join the files it hashes"
        )
    for option, path in inputs.items():
        if _same_file(target, path):
            raise ReleaseInputError(
                f"{label} {target}: is the {option} file; refusing to overwrite an input"
            )
    if os.path.lexists(target):
        try:
            decode_manifest(read_bytes(target, label, JSON_MAX_BYTES), source=f"{label} {target}")
        except (InputFileError, ReleaseInputError):
            raise ReleaseInputError(
                f"{label} {target}: exists and is not a release manifest; refusing to overwrite "
                "it (choose another --out)"
            ) from None


def _write(path: Path, data: bytes) -> None:
    """Put `data` at `path` whole or not at all: written to a new file beside it, fsynced,
    renamed over it. Written in place, a write that failed partway (a full disk, a file size
    limit) left a cut envelope, and the signatures it held were lost with it."""
    target = path.resolve() if path.is_symlink() else path  # the file, not the link
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    created = False
    try:
        fd = os.open(tmp, flags, 0o666)  # the umask applies, as it did to a plain write
        created = True
        with os.fdopen(fd, "wb") as out:
            with contextlib.suppress(FileNotFoundError):  # a file replaced keeps its mode
                os.fchmod(out.fileno(), stat.S_IMODE(target.stat().st_mode))
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise ReleaseInputError(
            f"{path}: cannot write: {exc.strerror or exc}; nothing was changed"
        ) from None


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(help="Key name: writes NAME.key (0600) and NAME.pub.")],
    directory: Annotated[
        Path,
        typer.Option(
            "--dir",
            help="Where to write the key pair.",
            parser=nonempty_path,  # `--dir "$DIR"` with DIR unset: not the directory it ran in
        ),
    ] = Path("."),
    signer: Annotated[
        str | None, typer.Option(help="Signer name for the policy entry (default: NAME).")
    ] = None,
) -> None:
    """Create an Ed25519 key pair and print its trust-policy entry."""
    with _input_errors():
        _check_signer(signer or name, "--signer" if signer is not None else "NAME (the signer)")
        key, private, public = write_key_pair(directory, name)
    # paths are the caller's: printed as text (a directory named "[/x]" is no markup)
    console.print(f"private key  {private}  (mode 0600, keep it off shared disks)", markup=False)
    console.print(f"public key   {public}", markup=False)
    console.print(f"key id       {key.key_id}", markup=False)
    console.print("\ntrust-policy entry:\n")
    _print_policy_entry(signer or name, key.public)


@keys_app.command("show")
def keys_show(
    public: Annotated[Path, typer.Argument(help="A public key file (NAME.pub).")],
    signer: Annotated[str, typer.Option(help="Signer name for the policy entry.")],
) -> None:
    """Print the trust-policy entry for a public key someone handed you."""
    with _input_errors():
        _check_signer(signer, "--signer")
        key = load_verify_key(public)
    _print_policy_entry(signer, key)


def _check_signer(signer: str, option: str) -> None:
    """A signer is a person or component: the roster's name rule, so the printed entry is
    one plain TOML string and the name matches the one they sign commands with."""
    if not is_name(signer):
        raise ReleaseInputError(f"{option}: signer name must be {NAME_RULE} (got {quoted(signer)})")


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escaping is valid TOML, so no value can end the string."""
    return json.dumps(value)


def _print_policy_entry(signer: str, key: VerifyKey) -> None:
    console.print(
        f"[[keys]]\nsigner = {_toml_string(signer)}\nid = {_toml_string(key.key_id)}\n"
        f"public_key = {_toml_string(key.to_base64())}",
        markup=False,
        soft_wrap=True,
    )


@app.command("build")
def build(
    release_id: Annotated[str, typer.Option("--id", help="Release id, e.g. 2012.08.01-rlp.")],
    artifacts: ArtifactsOpt,
    config: ConfigOpt,
    flags: FlagsOpt,
    out: Annotated[
        Path | None, typer.Option("--out", help="Manifest file (default: ID.manifest.json).")
    ] = None,
    environment: EnvironmentOpt = False,
) -> None:
    """Hash a release into a manifest: artifact hashes, config checksum, flag schema and,
    with --environment, the Python environment this command runs in."""
    with _input_errors():
        check_release_id(release_id)  # before it names a file
        target = out or Path(f"{release_id}.manifest.json")
        _refuse_build_target(
            target,
            "--out" if out else "manifest",
            artifacts,
            {"--config": config, "--flags": flags},
        )
        contents = _hash_with_progress(artifacts, config, flags, environment=environment)
        if not contents.artifacts:
            raise ReleaseInputError(
                f"--artifacts {artifacts}: no files to hash; a release must list at least one "
                "artifact file (an empty directory is a failed build or a wrong path)"
            )
        manifest = Manifest(release_id=release_id, contents=contents)
        _write(target, encode_manifest(manifest))
    measured = contents.environment
    console.print(
        f"manifest {target}: release {release_id}, {len(contents.artifacts)} artifact(s), "
        f"{len(contents.flag_schema)} flag(s)"
        + (f", environment {measured[PYTHON]} ({len(measured)} entries)" if measured else "")
        + f", digest {manifest.digest()}",
        markup=False,
    )


@app.command("sign")
def sign(
    source: Annotated[
        Path, typer.Argument(help="A manifest (starts a new envelope) or an envelope to add to.")
    ],
    key: Annotated[Path, typer.Option("--key", help="Private key file (NAME.key).")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Envelope file (default: the envelope itself, or MANIFEST.dsse.json)."
        ),
    ] = None,
) -> None:
    """Add one Ed25519 signature; signers sign the same envelope in turn."""
    with _input_errors():
        signing_key: SigningKey = load_signing_key(key)
        data = _read_json(source, "manifest or envelope")
        try:
            envelope = decode_envelope(data, source=f"envelope {source}")
            target = out or source
        except ReleaseInputError:
            if _looks_like_envelope(data):
                raise
            envelope = release_envelope(decode_manifest(data, source=f"manifest {source}"))
            target = out or source.with_name(f"{source.name.removesuffix('.json')}.dsse.json")
        signed = sign_release(envelope, signing_key, source=f"envelope {source}")
        manifest = Manifest.from_statement_bytes(signed.payload_bytes(), source=str(source))
        _refuse_if_lost(target, signed, "--out" if out else "envelope")
        _write(target, encode_envelope(signed))
    console.print(
        f"signed release {manifest.release_id} (digest {manifest.digest()}) with key "
        f"{signing_key.key_id[:16]}; {len(signed.signatures)} signature(s) in {target}",
        markup=False,
    )


@app.command("verify")
def verify(
    envelope_path: Annotated[Path, typer.Argument(help="The signed envelope.")],
    policy: PolicyOpt,
    release: Annotated[
        str | None, typer.Option("--release", help="Refuse unless this is the release id.")
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Check signatures against the trust policy (threshold of distinct signers, tamper)."""
    with _input_errors():
        if release is not None:  # an empty or padded id names no release: exit 2, not a refusal
            check_release_id(release, where="--release")
        trust = load_trust_policy(policy)
        envelope = _read_envelope(envelope_path)
        schema = load_registry_schema(registry) if registry else None
    result = verify_release(envelope, trust)
    findings = list(result.findings)
    manifest = result.manifest
    if manifest is not None and release is not None:
        findings.extend(target_findings(manifest, release))
    if manifest is not None and schema is not None:
        findings.extend(registry_findings(manifest, schema))
    if manifest is None or findings:
        console.print(_findings_table(tuple(findings)))
        console.print(f"[red]REFUSED[/red] {escape(str(envelope_path))}")
        raise typer.Exit(EXIT_REFUSED)
    console.print(
        "[green]VERIFIED[/green] "
        + escape(
            f"release {manifest.release_id} digest {result.manifest_digest} "
            f"signed by {', '.join(result.signers)} (threshold {trust.threshold})"
        )
        + ("" if schema else "; flag registry not checked (no --registry)")
    )


def _target_of(envelope: Envelope, release: str | None) -> str:
    """The release to judge against: given, else the one the envelope claims."""
    if release is not None:
        return release
    try:
        return Manifest.from_statement_bytes(envelope.payload_bytes(), source="envelope").release_id
    except ReleaseInputError:
        return ""


@app.command("attest")
def attest_cmd(
    node: Annotated[str, typer.Option("--node", help="Node id, as enrolled.")],
    artifacts: ArtifactsOpt,
    config: ConfigOpt,
    flags: FlagsOpt,
    envelope_path: Annotated[
        Path | None,
        typer.Option("--envelope", help="Signed release to judge the node against."),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Trust policy (needed with --envelope).")
    ] = None,
    registry: RegistryOpt = None,
    release: Annotated[
        str | None,
        typer.Option("--release", help="The fleet's target release (default: the envelope's)."),
    ] = None,
    node_key: Annotated[
        Path | None,
        typer.Option("--node-key", help="The node's private key (default: a one-off key)."),
    ] = None,
    environment: EnvironmentOpt = False,
) -> None:
    """Compute what this node runs and, given a release, what admission would say."""
    with _input_errors():
        if not is_name(node):  # it is printed next to ADMITTED: no newline may forge a line
            raise ReleaseInputError(f"--node: node id must be {NAME_RULE} (got {quoted(node)})")
        if envelope_path is None:
            # each judges the node against a release: dropped without one, the command
            # listed what the node runs and exited 0, read as "admission would say yes"
            judging = (
                ("--policy", policy),
                ("--release", release),
                ("--registry", registry),
                ("--node-key", node_key),
            )
            if given := [option for option, value in judging if value is not None]:
                raise ReleaseInputError(
                    f"{', '.join(given)}: used only to judge the node against a signed release; "
                    "give --envelope too (without it attest only lists what the node runs)"
                )
        if release is not None:
            check_release_id(release, where="--release")
        contents = _hash_with_progress(artifacts, config, flags, environment=environment)
        if envelope_path is None:
            _print_contents(node, contents)
            return
        if policy is None:
            raise ReleaseInputError("--policy: required with --envelope")
        trust: TrustPolicy = load_trust_policy(policy)
        envelope = _read_envelope(envelope_path)
        schema = load_registry_schema(registry) if registry else None
        key = load_signing_key(node_key) if node_key else SigningKey.generate()
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        err.print(
            f"[red]error:[/red] {escape(f'envelope {envelope_path}: not a release envelope')}"
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    clock = SystemClock()
    admitter = Admitter(trust, {node: key.public}, clock=clock, nonce_source=random_nonce)
    nonce = admitter.challenge(node)
    attestation = sign_attestation(attest(node, nonce, contents, clock=clock), key)
    verification = verify_release(envelope, trust)
    own = verification.manifest
    registry_schema = schema or RegistrySchema(dict(own.contents.flag_schema) if own else {})
    verdict = admitter.admit(
        attestation, envelope, registry_schema, target_release=_target_of(envelope, release)
    )
    note = "" if schema else " (flag registry not checked: no --registry)"
    if verdict.admitted:
        console.print(
            "[green]ADMITTED[/green] "
            + escape(f"node {node} runs release {verdict.target_release} exactly{note}")
        )
        return
    console.print(_findings_table(verdict.findings))
    shown = escape(f"node {node} for release {verdict.target_release}{note}")
    console.print(f"[red]REFUSED[/red] {shown}")
    raise typer.Exit(EXIT_REFUSED)


def _print_contents(node: str, contents: ReleaseContents) -> None:
    table = Table("kind", "name", "sha256", title=escape(f"node {node} runs"))
    for path, digest in contents.artifacts.items():  # a file named "[/x]" is shown so
        table.add_row("file", escape(escaped(path)), digest)
    table.add_row("config", "", contents.config_sha256)
    for flag_id, digest in contents.flag_schema.items():
        table.add_row("flag", escape(escaped(flag_id)), escape(digest))
    for entry, value in (contents.environment or {}).items():
        table.add_row("environment", escape(escaped(entry)), escape(value))
    console.print(table)
