"""YAML files (the flag registry, flag tables): parsed strictly, checked before loading.

libyaml's parser where installed (PyYAML's pure-Python one parses about 1 MB/s).
The node tree is checked before any Python object is built: aliases are
refused (a tree of shared nodes expands exponentially when walked) and so is
nesting deeper than `MAX_DEPTH`. Duplicate keys and impossible dates
(2023-02-29) and merge keys (`<<`) are refused naming their line, and so is an
integer too long for Python to convert (over 4300 digits: a ValueError, not a YAML
error, that ended `flags lint` and every `flags` command with a traceback). Kept apart from
`knightwatch.inputs` so that the Guard never imports PyYAML.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from knightwatch.inputs import MAX_DEPTH, InputFileError

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictYamlLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe YAML (libyaml's parser where installed) that refuses duplicate keys.

    Use `load_yaml`, which also refuses aliases and deep nesting before any
    Python object is built, and names the line of an impossible date.
    """


def _construct_mapping(loader: StrictYamlLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key (a list): no YAML file of ours has one
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} in one mapping", key_node.start_mark
            )
    mapping: dict[Any, Any] = loader.construct_mapping(node)
    return mapping


def _construct_timestamp(loader: StrictYamlLoader, node: yaml.ScalarNode) -> object:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except ValueError as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value} is not a real date or time ({exc})", node.start_mark
        ) from None


def _construct_int(loader: StrictYamlLoader, node: yaml.ScalarNode) -> object:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    except ValueError:  # past sys.get_int_max_str_digits(): 4300 digits by default
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"an integer of {len(node.value)} characters is too long to read "
            f"(at most {sys.get_int_max_str_digits()} digits)",
            node.start_mark,
        ) from None


def _refuse_merge(loader: StrictYamlLoader, node: yaml.Node) -> object:
    # a `<<` key merges another mapping's keys in, under the keys written beside it: one
    # flag's fields would come from somewhere else in the file (libyaml's own error named
    # only a missing constructor for 'tag:yaml.org,2002:merge')
    raise yaml.constructor.ConstructorError(
        None, None, "YAML merge keys (<<) are not allowed: write every key out", node.start_mark
    )


StrictYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictYamlLoader.add_constructor("tag:yaml.org,2002:merge", _refuse_merge)
StrictYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
StrictYamlLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _check_nodes(root: yaml.Node, source: str) -> None:
    """Refuse aliases (a billion-laughs tree of shared nodes) and nesting past MAX_DEPTH."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        line = node.start_mark.line + 1
        if id(node) in seen:
            raise InputFileError(f"{source}: line {line}: YAML aliases (*name) are not allowed")
        seen.add(id(node))
        if depth > MAX_DEPTH:
            raise InputFileError(
                f"{source}: line {line}: nested deeper than {MAX_DEPTH} levels "
                "(refused before loading)"
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))


def compose_yaml(text: str, source: str) -> yaml.Node | None:
    """The node tree of one YAML document, checked (no aliases, bounded depth)."""
    loader = StrictYamlLoader(text)
    try:
        root: yaml.Node | None = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise InputFileError(f"{source}: not valid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise InputFileError(f"{source}: nested too deeply to parse") from None
    finally:
        loader.dispose()
    if root is not None:
        _check_nodes(root, source)
    return root


def construct_yaml(root: yaml.Node | None, source: str) -> Any:
    """Python objects from a checked node tree (duplicate keys and bad dates refused)."""
    if root is None:
        return None
    loader = StrictYamlLoader("")
    try:
        return loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise InputFileError(f"{source}: {_one_line(exc)}") from None
    finally:
        loader.dispose()


def load_yaml(text: str, source: str) -> Any:
    return construct_yaml(compose_yaml(text, source), source)


def _one_line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{' '.join(str(problem).split())}"
