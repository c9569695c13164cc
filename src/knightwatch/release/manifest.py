"""Manifest: the signed description of one release.

A release id names a set of hashes, never the other way round: the id is only
a label, and what nodes are checked against is the artifact hashes, config
checksum and flag schema. The signed form is an in-toto Statement v1 whose
subjects are the artifact files, so standard in-toto tooling can read it.
"""

from __future__ import annotations

import json
import re

import msgspec

from knightwatch.errors import quoted
from knightwatch.inputs import UNDECODABLE, InputFileError, check_json_depth
from knightwatch.release.canonical import canonical_bytes, sha256_hex
from knightwatch.release.contents import ReleaseContents
from knightwatch.release.dsse import Statement, Subject
from knightwatch.release.errors import ReleaseInputError

PREDICATE_TYPE = "https://knightwatch.dev/release-manifest/v1"
_RELEASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_release_id(release_id: str, *, where: str = "release_id") -> str:
    if not _RELEASE_ID.fullmatch(release_id):
        raise ReleaseInputError(
            f"{where}: {quoted(release_id)} must be 1-128 characters of letters, digits and ._+- "
            "starting with a letter or digit"
        )
    return release_id


class _Predicate(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    release_id: str
    config_sha256: str
    flag_schema: dict[str, str]
    executables: tuple[str, ...] | None = None
    """Absent from a release signed before the execute bit was measured (its statement
    keeps its bytes, so its signatures still verify)."""
    environment: dict[str, str] | None = None
    """Absent from a release built without its Python environment measured."""


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    release_id: str
    contents: ReleaseContents

    def __post_init__(self) -> None:
        check_release_id(self.release_id)
        if not self.contents.artifacts:
            # nothing measured: an empty build directory (a failed build, a wrong path) was
            # signed, verified and admitted a node whose artifact directory was empty too,
            # whatever code it ran
            raise ReleaseInputError(
                f"release {self.release_id}: artifacts: a release must list at least one "
                "artifact file (an empty release measures nothing a node runs)"
            )

    def statement(self) -> Statement:
        subjects = tuple(
            Subject(path, {"sha256": digest})
            for path, digest in sorted(self.contents.artifacts.items())
        )
        predicate = _Predicate(
            release_id=self.release_id,
            config_sha256=self.contents.config_sha256,
            flag_schema=dict(sorted(self.contents.flag_schema.items())),
            executables=self.contents.executables,
            environment=self.contents.environment,
        )
        return Statement(subjects, PREDICATE_TYPE, msgspec.Raw(canonical_bytes(predicate)))

    def statement_bytes(self) -> bytes:
        """The exact payload that is signed; reproducible from the manifest alone."""
        return canonical_bytes(self.statement())

    def digest(self) -> str:
        return sha256_hex(self.statement_bytes())

    @classmethod
    def from_statement_bytes(cls, data: bytes, *, source: str) -> Manifest:
        try:
            check_json_depth(data, source)
            statement = msgspec.json.decode(data, type=Statement)
            if statement.predicate_type != PREDICATE_TYPE:
                raise ReleaseInputError(
                    f"{source}: predicateType {quoted(statement.predicate_type)} is not "
                    f"{PREDICATE_TYPE}"
                )
            predicate = msgspec.json.decode(statement.predicate, type=_Predicate)
        except InputFileError as exc:
            raise ReleaseInputError(str(exc)) from None
        except (*UNDECODABLE, UnicodeDecodeError) as exc:
            raise ReleaseInputError(f"{source}: not a release statement: {exc}") from None
        artifacts: dict[str, str] = {}
        try:  # a rule the signed payload breaks is named with the payload it is in
            for subject in statement.subject:
                if subject.name in artifacts:
                    raise ReleaseInputError(f"subject {quoted(subject.name)} listed twice")
                artifacts[subject.name] = subject.sha256()
            manifest = cls(
                release_id=predicate.release_id,
                contents=ReleaseContents(
                    artifacts=artifacts,
                    config_sha256=predicate.config_sha256,
                    flag_schema=predicate.flag_schema,
                    executables=predicate.executables,
                    environment=predicate.environment,
                ),
            )
        except ReleaseInputError as exc:
            raise ReleaseInputError(f"{source}: {exc}") from None
        if manifest.statement_bytes() != data:
            # JSON readers disagree on a duplicated key (first or last wins), so what a
            # signer reviewed and what is checked could differ; signed bytes have one reading
            raise ReleaseInputError(
                f"{source}: not the canonical release statement (a duplicated or unknown key, "
                "another _type, key order or spacing); sign the bytes `release build` makes"
            )
        return manifest


class _ContentsFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    artifacts: dict[str, str]
    config_sha256: str
    flag_schema: dict[str, str]
    executables: list[str] | None = None
    environment: dict[str, str] | None = None


class _ManifestFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The manifest file's exact fields: one a reviewer reads but nobody signs is refused."""

    release_id: str
    contents: _ContentsFile


_DECODER = msgspec.json.Decoder(Manifest)
_STRICT = msgspec.json.Decoder(_ManifestFile)
_ENCODER = msgspec.json.Encoder(order="sorted")


def encode_manifest(manifest: Manifest) -> bytes:
    return msgspec.json.format(_ENCODER.encode(manifest), indent=2) + b"\n"


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ReleaseInputError(f"key {key!r} appears twice in one object")
        seen.add(key)
    return dict(pairs)


def decode_manifest(data: bytes, *, source: str) -> Manifest:
    """The manifest a signer signs; refused unless it has exactly one reading.

    A duplicated key (`artifacts` twice: JSON readers take the first or the last) or a
    field the manifest does not have (`extra_artifacts`) let the file a signer reviewed
    list files the signed release does not, or leave out files it does.
    """
    try:
        check_json_depth(data, source)
        manifest = _DECODER.decode(data)
        _STRICT.decode(data)
        json.loads(data, object_pairs_hook=_unique_keys)
    except InputFileError as exc:
        raise ReleaseInputError(str(exc)) from None
    except ReleaseInputError as exc:
        raise ReleaseInputError(
            f"{source}: {exc}: a manifest must have one reading (rebuild it with `release build`)"
        ) from None
    except msgspec.ValidationError as exc:
        raise ReleaseInputError(f"{source}: invalid manifest: {exc}") from None
    except (*UNDECODABLE, UnicodeDecodeError, ValueError) as exc:
        raise ReleaseInputError(f"{source}: not a manifest JSON document: {exc}") from None
    return manifest
