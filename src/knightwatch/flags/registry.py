"""`FlagRegistry`: the file of record, `feature-flags.yaml`.

An id is bound to one meaning forever. Retired flags stay in the file as
tombstones so that nobody can bring an old id back with a new meaning (the
Knight mechanism); a changed meaning needs a new id. The same validator checks
one version of the file (`identity_findings`) and a sequence of versions
(`RegistryLedger`, fed by edits or by the file's git history).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import yaml

from knightwatch.errors import KnightwatchError, quoted
from knightwatch.flags.definition import MAX_FLAG_ID, FlagDefinition, HistoryEntry, Lifecycle
from knightwatch.flags.findings import Finding, FindingCode, Severity
from knightwatch.flags.schema import RegistrySchema
from knightwatch.flags.yamlfile import compose_yaml, construct_yaml
from knightwatch.inputs import YAML_MAX_BYTES, InputFileError, read_text

REGISTRY_FILENAME = "feature-flags.yaml"
SCHEMA_VERSION = 1
KEY_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
"""What a loaded registry's ids may hold: each is a control-plane key (`state.<id>`) and
must look like no other id; lint's `not_namespaced` asks for more (lower-case segments)."""


class RegistryError(KnightwatchError, ValueError):
    """The registry cannot be used; the message names the key and the rule.

    `line`: the file's line the problem is on, where known (the flag's entry for a
    field of a flag), else 1; lint reports the finding there."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.line = line


_LINE = re.compile(r"(?:^|: )line (\d+)\b")


class _RegistryFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    flags: tuple[FlagDefinition, ...] = ()


def read_registry(path: Path) -> str:
    """The registry file's text: size, encoding and emptiness checked before parsing."""
    try:
        return read_text(path, "flag registry", YAML_MAX_BYTES)
    except InputFileError as exc:
        raise RegistryError(str(exc)) from None


class RegistryDocument(msgspec.Struct, frozen=True):
    """One parsed version of the file, with the line of each flag entry."""

    source: str
    flags: tuple[FlagDefinition, ...]
    lines: tuple[int, ...]

    def line_of(self, index: int) -> int:
        return self.lines[index] if index < len(self.lines) else 1


def parse_registry(text: str, source: str) -> RegistryDocument:
    """Strict structural parse: unknown keys, wrong types and bad enums are refused.

    Size, aliases, nesting depth, duplicate keys and impossible dates are
    refused first (`knightwatch.inputs`), each naming its line.
    """
    if len(text) > YAML_MAX_BYTES:
        raise RegistryError(f"{source}: {len(text)} characters is over the {YAML_MAX_BYTES} limit")
    try:
        root = compose_yaml(text, source)
        data = construct_yaml(root, source)
    except InputFileError as exc:
        found = _LINE.search(str(exc).removeprefix(f"{source}: "))
        raise RegistryError(str(exc), int(found.group(1)) if found else 1) from None
    if not isinstance(data, dict):
        raise RegistryError(f"{source}: top level must be a mapping with `version` and `flags`")
    try:
        parsed = msgspec.convert(data, _RegistryFile)
    except msgspec.ValidationError as exc:
        message = str(exc)
        index = message.split("$.flags[", 1)[1].split("]", 1)[0] if "$.flags[" in message else ""
        lines = _flag_lines(root)
        line = lines[int(index)] if index.isdigit() and int(index) < len(lines) else 1
        raise RegistryError(f"{source}: {_explain(message, data)}", line) from None
    if parsed.version != SCHEMA_VERSION:
        raise RegistryError(f"{source}: `version` must be {SCHEMA_VERSION}, got {parsed.version}")
    return RegistryDocument(source=source, flags=parsed.flags, lines=_flag_lines(root))


def _explain(message: str, data: Mapping[str, Any]) -> str:
    """Turn msgspec's `$.flags[2].owner` into a message that also names the flag id."""
    marker = "$.flags["
    if marker in message:
        index_text = message.split(marker, 1)[1].split("]", 1)[0]
        flags = data.get("flags")
        if index_text.isdigit() and isinstance(flags, list) and int(index_text) < len(flags):
            entry = flags[int(index_text)]
            if isinstance(entry, dict) and "id" in entry:
                hint = " (quote hashes: YAML reads bare digits as numbers)"
                quote = hint if "definition_hash" in message else ""
                return f"flag {quoted(entry['id'])}: {message}{quote}"
    return message


def _flag_lines(root: yaml.Node | None) -> tuple[int, ...]:
    if not isinstance(root, yaml.MappingNode):
        return ()
    for key_node, value_node in root.value:
        if key_node.value == "flags" and isinstance(value_node, yaml.SequenceNode):
            return tuple(item.start_mark.line + 1 for item in value_node.value)
    return ()


def id_identity(flag_id: str) -> str:
    """What makes two ids the same id to a reader: Unicode form, case, whitespace and
    invisible format characters are not (`Trading.smars.power_peg `, a full-width
    letter, a zero-width space or soft hyphen that renders as nothing), and neither is
    the separator between words (`power_peg`, `power-peg`, `power.peg`, `power__peg`:
    one run of '.', '_', '-' or another dash or connector is one separator), nor is a
    separator before the first word or after the last (`trading.power_peg_`,
    `_trading.power_peg`), so a tombstone cannot be brought back by spelling its id
    another way."""
    folded = unicodedata.normalize("NFKC", flag_id).casefold()
    out: list[str] = []
    for c in folded:
        if c.isspace() or unicodedata.category(c) == "Cf":
            continue
        if c == "." or unicodedata.category(c) in ("Pd", "Pc"):  # '-', '_', U+2010 ...
            if out and out[-1] == ".":
                continue
            c = "."
        out.append(c)
    return "".join(out).strip(".")


def lookalike_of(flag_id: str, identities: Iterable[str]) -> str | None:
    """The identity (`id_identity`) that `flag_id` copies with look-alike letters, if any.

    Registry ids are ASCII, so a key with another script's letter in it (a Cyrillic 'е'
    in `power_pеg`, a Greek 'ο', an accent) is no registry id; it reads as the id whose
    letters it stands in for: same length, every ASCII character equal, each other one in
    place of an ASCII letter or digit, and at least as many letters equal as stood in for
    (so a word in another script is not taken for an id of the same shape)."""
    key = id_identity(flag_id)
    if key.isascii():
        return None
    for identity in identities:
        if len(identity) != len(key):
            continue
        same = stood_in = 0
        for mine, theirs in zip(key, identity, strict=True):
            if mine == theirs:
                same += theirs.isalnum()
            elif not mine.isascii() and theirs.isalnum():
                stood_in += 1
            else:
                break
        else:
            if stood_in <= same:
                return identity
    return None


def identity_findings(doc: RegistryDocument) -> list[Finding]:
    """Errors that make one version of the file unusable as a record of meaning."""
    findings: list[Finding] = []
    first_index: dict[str, int] = {}
    for index, flag in enumerate(doc.flags):
        line = doc.line_of(index)
        identity = id_identity(flag.id)
        if identity in first_index:
            earlier = doc.flags[first_index[identity]]
            what = "a retired tombstone" if earlier.retired else "an existing flag"
            spelled = (
                ""
                if earlier.id == flag.id
                else f" {earlier.id!r} (spelled with another case, Unicode form, whitespace, "
                "separator or an invisible character)"
            )
            findings.append(
                Finding(
                    FindingCode.REUSED_ID,
                    Severity.ERROR,
                    doc.source,
                    line,
                    f"flag id {flag.id!r} reuses {what}{spelled} defined at line "
                    f"{doc.line_of(first_index[identity])}; ids are never reused, "
                    "a new meaning needs a new id",
                    flag.id,
                )
            )
        else:
            first_index[identity] = index
        if flag.definition_hash is not None and flag.definition_hash != flag.meaning_hash:
            findings.append(
                Finding(
                    FindingCode.HASH_MISMATCH,
                    Severity.ERROR,
                    doc.source,
                    line,
                    f"flag {flag.id!r}: recorded definition_hash {flag.definition_hash} "
                    f"does not match the meaning-bearing fields ({flag.meaning_hash}); "
                    "a changed meaning needs a new id",
                    flag.id,
                )
            )
        for entry in flag.history:
            if entry.definition_hash is not None and entry.definition_hash != flag.meaning_hash:
                findings.append(
                    Finding(
                        FindingCode.REDEFINED_ID,
                        Severity.ERROR,
                        doc.source,
                        line,
                        f"flag {flag.id!r}: history entry of {entry.at.isoformat()} "
                        f"({entry.action}) recorded meaning {entry.definition_hash}, "
                        f"now {flag.meaning_hash}",
                        flag.id,
                    )
                )
    return findings


class _LedgerEntry(msgspec.Struct, frozen=True):
    meaning_hash: str
    lifecycle: Lifecycle
    since: str
    history: tuple[HistoryEntry, ...] = ()


class RegistryLedger:
    """Every id ever accepted, with its one meaning and furthest lifecycle.

    Versions are admitted in order. The first meaning of every id is recorded
    from the first version that holds it, even a version that has errors (a
    flag introduced in a broken commit is still introduced: a later change of
    its meaning must be reported). A known id's entry never changes meaning;
    its lifecycle moves forward only from a version with no error for that id.
    A flag's `history` is append-only: a later version keeps every entry the last
    accepted one held, unchanged and in order (`history_rewritten` otherwise: who
    retired or approved a flag is the record, and was lost when an entry was edited
    or dropped).
    """

    def __init__(self) -> None:
        self._entries: dict[str, _LedgerEntry] = {}

    def admit(self, doc: RegistryDocument, label: str) -> list[Finding]:
        findings = identity_findings(doc)
        present: dict[str, tuple[FlagDefinition, int]] = {}
        for index, flag in enumerate(doc.flags):
            present.setdefault(flag.id, (flag, doc.line_of(index)))
        for flag_id, entry in self._entries.items():
            if flag_id not in present:
                findings.append(
                    Finding(
                        FindingCode.TOMBSTONE_REMOVED,
                        Severity.ERROR,
                        doc.source,
                        1,
                        f"{label}: flag id {flag_id!r} (known since {entry.since}) was "
                        "removed; ids stay in the registry forever so they cannot be reused",
                        flag_id,
                    )
                )
        for flag_id, (flag, line) in present.items():
            known = self._entries.get(flag_id)
            if known is None:
                continue
            if known.meaning_hash != flag.meaning_hash:
                findings.append(
                    Finding(
                        FindingCode.REDEFINED_ID,
                        Severity.ERROR,
                        doc.source,
                        line,
                        f"{label}: flag id {flag_id!r} changed meaning "
                        f"({known.meaning_hash} since {known.since} -> {flag.meaning_hash}); "
                        "a changed meaning needs a new id",
                        flag_id,
                    )
                )
            kept = known.history
            if flag.history[: len(kept)] != kept:
                # the first entry the last accepted version held that is not kept as it was
                changed = next(
                    i for i, e in enumerate(kept) if i >= len(flag.history) or flag.history[i] != e
                )
                lost = kept[changed]
                findings.append(
                    Finding(
                        FindingCode.HISTORY_REWRITTEN,
                        Severity.ERROR,
                        doc.source,
                        line,
                        f"{label}: flag {flag_id!r}: history entry {changed + 1} "
                        f"({lost.at.isoformat()} {lost.action} by {quoted(lost.actor)}) was "
                        f"{'removed' if changed >= len(flag.history) else 'changed'}; "
                        "a flag's history is append-only",
                        flag_id,
                    )
                )
            if flag.lifecycle.rank < known.lifecycle.rank:
                findings.append(
                    Finding(
                        FindingCode.LIFECYCLE_REGRESSED,
                        Severity.ERROR,
                        doc.source,
                        line,
                        f"{label}: flag {flag_id!r} went from {known.lifecycle} back to "
                        f"{flag.lifecycle}; a retired id is a tombstone and never returns",
                        flag_id,
                    )
                )
        erroneous = {f.flag_id for f in findings if f.severity is Severity.ERROR}
        for flag_id, (flag, _) in present.items():
            known = self._entries.get(flag_id)
            if known is None:
                self._entries[flag_id] = _LedgerEntry(
                    flag.meaning_hash, flag.lifecycle, label, flag.history
                )
            elif flag_id not in erroneous:
                lifecycle = max(known.lifecycle, flag.lifecycle, key=lambda c: c.rank)
                self._entries[flag_id] = _LedgerEntry(
                    known.meaning_hash, lifecycle, known.since, flag.history
                )
        return findings


class FlagRegistry:
    """A validated registry: unique ids, each with one recorded meaning."""

    def __init__(self, doc: RegistryDocument) -> None:
        errors = [f for f in identity_findings(doc) if f.severity is Severity.ERROR]
        if errors:
            raise RegistryError("; ".join(f.render() for f in errors))
        for index, flag in enumerate(doc.flags):
            # an id is the key of its state in the control plane and must read as one id to
            # every reader: a Cyrillic letter, a space or a NUL loaded here, looked like a
            # tombstone's id in `flags list`, and failed at the store as "did not answer"
            if KEY_SAFE_ID.fullmatch(flag.id) is None:
                line = doc.line_of(index)
                raise RegistryError(
                    f"{doc.source}:{line}: flag id {quoted(flag.id)}: only ASCII letters, "
                    "digits, '_' and '-' in non-empty segments joined by single dots "
                    "(lint asks for lower-case dotted segments)",
                    line,
                )
        self._doc = doc
        self._by_id = {flag.id: flag for flag in doc.flags}
        self._by_identity = {id_identity(flag.id): flag for flag in doc.flags}

    @classmethod
    def load(cls, path: Path) -> FlagRegistry:
        return cls(parse_registry(read_registry(path), str(path)))

    @classmethod
    def from_definitions(cls, flags: Iterable[FlagDefinition], source: str) -> FlagRegistry:
        flags = tuple(flags)
        return cls(RegistryDocument(source=source, flags=flags, lines=(1,) * len(flags)))

    @property
    def source(self) -> str:
        return self._doc.source

    @property
    def document(self) -> RegistryDocument:
        return self._doc

    def get(self, flag_id: str) -> FlagDefinition | None:
        return self._by_id.get(flag_id)

    def same_id(self, flag_id: str) -> FlagDefinition | None:
        """The flag whose id `flag_id` spells another way (case, Unicode form, whitespace:
        `id_identity`; or look-alike letters of another script: `lookalike_of`), if any;
        ids are unique by that identity, so there is at most one."""
        flag = self._by_identity.get(id_identity(flag_id))
        if flag is None and len(flag_id) <= 4 * MAX_FLAG_ID and not flag_id.isascii():
            # `trading.smars.power_pеg` with a Cyrillic 'е' was "not found": the client
            # answered with the caller's default (on), waking the retired flag's code
            copied = lookalike_of(flag_id, self._by_identity)
            flag = self._by_identity.get(copied) if copied is not None else None
        return flag

    def flags(self) -> Sequence[FlagDefinition]:
        return self._doc.flags

    def schema(self) -> dict[str, str]:
        """id -> definition hash of every live (not retired) flag: what a release embeds."""
        return {f.id: f.meaning_hash for f in self._doc.flags if not f.retired}

    def admission_schema(self) -> RegistrySchema:
        """Every id ever held, with its meaning, and the tombstones: what admission checks."""
        return RegistrySchema(
            definitions={f.id: f.meaning_hash for f in self._doc.flags},
            retired=frozenset(f.id for f in self._doc.flags if f.retired),
        )

    def namespaces(self) -> frozenset[str]:
        return frozenset(f.id.split(".", 1)[0] for f in self._doc.flags if f.namespaced)
