"""Flag files for release tooling: a node's flag table, or the registry file itself.

Kept apart from the schema logic because `knightwatch.flags.registry` depends
on admission; only the CLI and node start-up read these files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from knightwatch.flags.registry import FlagRegistry, RegistryError, parse_registry
from knightwatch.flags.schema import RegistrySchema
from knightwatch.flags.yamlfile import load_yaml
from knightwatch.inputs import YAML_MAX_BYTES, InputFileError, read_text
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.flagschema import FlagSchema, schema_from_table


def load_flag_schema(path: Path) -> FlagSchema:
    """Read a flag table (`{id: hash or meaning}`) or the registry file itself.

    Given the registry (`version` + `flags` list), the schema is its live
    flags: a release built from it understands exactly what the registry means.
    """
    try:
        text = read_text(path, "flags file", YAML_MAX_BYTES)
        data = load_yaml(text, f"flags file {path}")
    except InputFileError as exc:
        raise ReleaseInputError(str(exc)) from None
    if data is None:
        raise ReleaseInputError(
            f"flags file {path}: nothing but comments; an empty file is refused "
            "(write {} for a release that understands no flags)"
        )
    if not isinstance(data, Mapping):
        raise ReleaseInputError(
            f"flags file {path}: top level must be a mapping of flag id to definition, "
            f"got {type(data).__name__}"
        )
    if isinstance(data.get("flags"), list):
        try:
            registry = FlagRegistry(parse_registry(text, str(path)))
        except RegistryError as exc:
            raise ReleaseInputError(f"flags file {path}: {exc}") from exc
        return dict(sorted(registry.schema().items()))
    return schema_from_table(data, where=f"flags file {path}")


def load_registry_schema(path: Path) -> RegistrySchema:
    """Every id the registry ever held, with its meaning and tombstones."""
    try:
        return FlagRegistry.load(path).admission_schema()
    except RegistryError as exc:
        raise ReleaseInputError(f"flag registry {path}: {exc}") from exc
