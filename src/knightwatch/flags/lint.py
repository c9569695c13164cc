"""`knightwatch flags lint`: the CI gate for flag identity and dead code.

Knight's failure needed three things to line up: an id reused with a new
meaning, old code still reachable behind it, and nobody noticing. Lint fails
the build on each: reused or re-defined ids (in the file and across its git
history), hygiene gaps that let flags live forever, and code that still
references a retired or unknown flag, reported as dead code with file:line.
"""

from __future__ import annotations

import ast
import os
import re
import string
import subprocess
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from pathlib import Path

import msgspec

from knightwatch.errors import quoted
from knightwatch.flags.definition import MAX_FLAG_ID, NAMESPACED_ID, FlagDefinition, Lifecycle
from knightwatch.flags.findings import Finding, FindingCode, Severity, has_errors
from knightwatch.flags.registry import (
    RegistryDocument,
    RegistryError,
    RegistryLedger,
    id_identity,
    lookalike_of,
    parse_registry,
    read_registry,
)
from knightwatch.inputs import MIB, InputFileError, decode_utf8, read_bytes

SOURCE_MAX_BYTES = 8 * MIB
"""A Python source file larger than this is not scanned (reported as a warning)."""

DEFAULT_ACCESSORS = (
    "is_enabled",
    "get_boolean_value",
    "get_boolean_details",
    "get_boolean_value_async",
    "get_boolean_details_async",
)
TYPED_ACCESSORS = frozenset(
    f"get_{kind}_{form}{suffix}"
    for kind in ("string", "integer", "float", "object")
    for form in ("value", "details")
    for suffix in ("", "_async")
)
"""OpenFeature's non-boolean evaluations. Registry flags are boolean, so the provider answers
these with a type mismatch and the client hands back the caller's default: never the flag's
state, its kill or its safe default (`flag_type_mismatch` when one names a registry flag)."""
BOOLEAN_EVALUATIONS = frozenset(
    f"get_boolean_{form}{suffix}" for form in ("value", "details") for suffix in ("", "_async")
)
"""OpenFeature's boolean evaluations: their second argument (`default_value`) is what the
client answers with no provider set, or one not ready or failed: not the registry's safe
default (`unsafe_caller_default` when a literal one differs from it)."""
DEFAULT_EXCLUDED_DIRS = frozenset(
    {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".tox"}
)


class LintConfig(msgspec.Struct, frozen=True):
    """What counts as a flag reference in code.

    `accessors` are call names whose first argument (or `flag_key=`) is a flag
    id, whatever the receiver (`flags.is_enabled`, `client.get_boolean_value`).
    String literals elsewhere, and strings the file alone builds from them (`+`,
    f-strings, `.join`, `.format`, `%s`), count when they look like an id in a
    namespace the registry uses, so a flag read through a constant is still found.
    """

    accessors: tuple[str, ...] = DEFAULT_ACCESSORS
    excluded_dirs: frozenset[str] = DEFAULT_EXCLUDED_DIRS


class LintReport(msgspec.Struct, frozen=True):
    findings: tuple[Finding, ...]
    files_scanned: int
    versions_checked: int

    @property
    def failed(self) -> bool:
        return has_errors(list(self.findings))


class CodeReference(msgspec.Struct, frozen=True):
    path: str
    line: int
    flag_id: str
    via_accessor: bool
    guarded_lines: tuple[int, int] | None
    typed_accessor: str = ""
    """The non-boolean OpenFeature call (`get_integer_value`) the id is evaluated with."""
    caller_default: bool | None = None
    """The literal `default_value` of an OpenFeature boolean evaluation of the id."""


def hygiene_findings(doc: RegistryDocument, today: date) -> list[Finding]:
    """Rules that keep a flag from becoming permanent, unowned infrastructure."""
    findings: list[Finding] = []
    for index, flag in enumerate(doc.flags):
        line = doc.line_of(index)

        def add(
            code: FindingCode, message: str, flag: FlagDefinition = flag, line: int = line
        ) -> None:
            findings.append(Finding(code, Severity.ERROR, doc.source, line, message, flag.id))

        if not flag.namespaced:
            add(
                FindingCode.NOT_NAMESPACED,
                f"flag id {flag.id!r} is not namespaced: use lower-case dotted segments "
                "such as 'trading.smars.rlp_enabled'",
            )
        if flag.retired:
            continue
        if not flag.owner.strip():
            add(FindingCode.MISSING_OWNER, f"flag {flag.id!r} has no owner")
        if flag.expires is None:
            add(FindingCode.MISSING_EXPIRY, f"flag {flag.id!r} has no expiry date")
        elif flag.lifecycle is Lifecycle.ACTIVE and flag.expires < today:
            add(
                FindingCode.EXPIRED_ACTIVE,
                f"flag {flag.id!r} expired on {flag.expires.isoformat()} and is still active: "
                "remove its code and retire it, or extend the expiry deliberately",
            )
    return findings


def collect_sources(roots: Iterable[Path], config: LintConfig) -> list[Path]:
    """Every `.py` file under the roots, symlinked directories followed.

    `Path.rglob` does not enter a symlinked directory, so code linked into the tree (a
    shared or vendored package) was never scanned and its dead flag code passed unsaid.
    A link back to a directory on its own path is not entered again: its files are
    scanned where they are, and the walk ends."""
    files: set[Path] = set()
    for root in roots:
        if root.is_file() and root.suffix == ".py":
            files.add(root)
            continue
        files.update(_walk_sources(root, config))
    return sorted(files)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk_sources(root: Path, config: LintConfig) -> list[Path]:
    found: list[Path] = []
    top = _identity(str(root))
    if top is None:
        return found
    above: dict[str, frozenset[tuple[int, int]]] = {str(root): frozenset({top})}
    for here, dirs, names in os.walk(root, followlinks=True):
        path_to_here = above.pop(here, frozenset())
        kept: list[str] = []
        for name in sorted(dirs):
            child = os.path.join(here, name)
            key = _identity(child)
            if name in config.excluded_dirs or key is None or key in path_to_here:
                continue
            above[child] = path_to_here | {key}
            kept.append(name)
        dirs[:] = kept
        found.extend(Path(here, name) for name in names if name.endswith(".py"))
    return found


def find_references(
    path: Path,
    source: str | bytes,
    namespaces: frozenset[str],
    known_ids: frozenset[str],
    config: LintConfig,
    retired_identities: frozenset[str] = frozenset(),
) -> list[CodeReference]:
    """Flag ids used in one Python file (raises SyntaxError if it does not parse).

    Give the file's bytes: Python decodes them as it would to run them (a PEP 263
    `# -*- coding: latin-1 -*-` line, a UTF-8 byte-order mark), so old code that runs
    is scanned, not skipped as "not UTF-8".

    `retired_identities`: `id_identity` of each retired id; a string literal spelling one
    of them another way is a reference to it."""
    tree = ast.parse(source, filename=str(path))
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    names = _module_strings(tree)
    accessor_args: set[int] = set()
    refs: list[CodeReference] = []

    def looks_like_id(value: str) -> bool:
        if NAMESPACED_ID.fullmatch(value) is not None and (
            value in known_ids or value.split(".", 1)[0] in namespaces
        ):
            return True
        # "TRADING.SMARS.POWER_PEG", a zero-width space: the provider takes it as the
        # retired flag, so code holding it is that flag's dead code
        return bool(retired_identities) and _spells_retired(value, retired_identities)

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        typed = name not in config.accessors and name in TYPED_ACCESSORS
        if name not in config.accessors and not typed:
            continue
        candidates = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "flag_key")]
        for arg in candidates:
            # `NS + "power_peg"`, `f"trading.smars.{NAME}"`, `PEG.lower()`: the id the call
            # asks for, as far as the file alone says (only literals were read: the retired
            # flag's dead code behind a concatenated id passed lint)
            value = _static_str(arg, names)
            # a non-boolean evaluation of a flag (`get_integer_value(RLP, 1)`) answers the
            # caller's default whatever the flag's state: it passed lint as a known id
            if value is not None and (not typed or looks_like_id(value)):
                accessor_args.update(id(n) for n in ast.walk(arg))
                ref = _reference(path, arg, value, True, parents)
                if typed:
                    ref = msgspec.structs.replace(ref, typed_accessor=name)
                elif name in BOOLEAN_EVALUATIONS:
                    ref = msgspec.structs.replace(ref, caller_default=_caller_default(node))
                refs.append(ref)

    # an id built from pieces the file fixes (`PEG = NS + "power_peg"`, `".".join(...)`)
    # is an id wherever it is built, as a literal is: read through a constant by the
    # desk's own accessor (`flags.on(PEG)`), it hid the retired flag's dead code
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if id(node) not in accessor_args and isinstance(node, _COMPOSITE):
            value = _static_str(node, names)
            if value is not None and looks_like_id(value):
                accessor_args.update(id(n) for n in ast.walk(node))
                refs.append(_reference(path, node, value, False, parents))
                continue
        stack.extend(ast.iter_child_nodes(node))
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if id(node) in accessor_args:
            continue
        if looks_like_id(node.value):
            refs.append(_reference(path, node, node.value, False, parents))
    return sorted(refs, key=lambda r: (r.line, r.flag_id))


_FOLD_DEPTH = 64
"""How deep a concatenation is followed; deeper ones are left unresolved (not an error)."""
_FOLD_CHARS = 4 * MAX_FLAG_ID
_FOLD_METHODS = frozenset({"lower", "casefold", "strip", "lstrip", "rstrip"})
_COMPOSITE = (ast.BinOp, ast.JoinedStr, ast.Call)
"""Expressions that may build a string from pieces (`_static_str` says whether they do)."""
_PERCENT = re.compile(r"%[^%s]")
"""A `%` directive other than `%s` and `%%` (a width could build a string of any size)."""


def _caller_default(call: ast.Call) -> bool | None:
    """`get_boolean_value(FLAG, True)` / `default_value=True`: the literal default, if any."""
    given = [*call.args[1:2], *(k.value for k in call.keywords if k.arg == "default_value")]
    if given and isinstance(given[0], ast.Constant) and isinstance(given[0].value, bool):
        return given[0].value
    return None


def _spells_retired(value: str, retired_identities: frozenset[str]) -> bool:
    # a full-width or one-dot-leader dot is a '.' to `id_identity` (NFKC), and so is
    # any other separator ('power-peg', 'trading_smars_power_peg')
    if len(value) > _FOLD_CHARS or (value.isascii() and not any(c in value for c in "._-")):
        return False
    if id_identity(value) in retired_identities:
        return True
    # "trading.smars.power_pеg" with a Cyrillic 'е': the provider takes it as the retired
    # flag (`FlagRegistry.same_id`), so a constant holding it is that flag's dead code
    return not value.isascii() and lookalike_of(value, retired_identities) is not None


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level names bound exactly once to a string the file alone determines."""
    values: dict[str, str] = {}
    rebound: set[str] = set()
    top: set[int] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Name):
                continue
            top.add(id(target))
            folded = _static_str(value, values)
            if target.id in values or target.id in rebound or folded is None:
                values.pop(target.id, None)
                rebound.add(target.id)
            else:
                values[target.id] = folded
    # a name also bound elsewhere (a function's global, a loop) is not known
    for node in ast.walk(tree):
        if not isinstance(node, ast.Name) or isinstance(node.ctx, ast.Load):
            continue
        if node.id in values and id(node) not in top:
            del values[node.id]
    return values


def _static_str(node: ast.expr, names: dict[str, str], depth: int = 0) -> str | None:
    """The string `node` evaluates to when the file alone determines it, else None."""
    if depth > _FOLD_DEPTH:
        return None
    result: str | None = None
    if isinstance(node, ast.Constant):
        result = node.value if isinstance(node.value, str) else None
    elif isinstance(node, ast.Name):
        result = names.get(node.id)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _static_str(node.left, names, depth + 1)
        right = _static_str(node.right, names, depth + 1) if left is not None else None
        result = left + right if left is not None and right is not None else None
    elif isinstance(node, ast.JoinedStr):
        parts: list[str] = []
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                if part.conversion not in (-1, ord("s")) or part.format_spec is not None:
                    return None
                part = part.value
            text = _static_str(part, names, depth + 1)
            if text is None:
                return None
            parts.append(text)
        result = "".join(parts)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        result = _percent(node, names, depth)
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _FOLD_METHODS
        and not node.args
        and not node.keywords
    ):
        inner = _static_str(node.func.value, names, depth + 1)
        result = getattr(inner, node.func.attr)() if inner is not None else None
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "join":
            result = _join(node, names, depth)
        elif node.func.attr == "format":
            result = _format(node, names, depth)
    if result is not None and len(result) > _FOLD_CHARS:
        return None
    return result


def _join(node: ast.Call, names: dict[str, str], depth: int) -> str | None:
    """`".".join(["trading", "smars", NAME])`: a literal list or tuple of fixed strings."""
    if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.List | ast.Tuple):
        return None
    assert isinstance(node.func, ast.Attribute)
    sep = _static_str(node.func.value, names, depth + 1)
    if sep is None:
        return None
    parts = [_static_str(e, names, depth + 1) for e in node.args[0].elts]
    if any(p is None for p in parts):
        return None
    return sep.join(p for p in parts if p is not None)


def _format(node: ast.Call, names: dict[str, str], depth: int) -> str | None:
    """`"trading.smars.{}".format(NAME)`: plain `{}`/`{0}`/`{name}` fields, no spec."""
    assert isinstance(node.func, ast.Attribute)
    template = _static_str(node.func.value, names, depth + 1)
    if template is None:
        return None
    args = [_static_str(a, names, depth + 1) for a in node.args]
    kwargs: dict[str, str] = {}
    for keyword in node.keywords:
        value = _static_str(keyword.value, names, depth + 1)
        if keyword.arg is None or value is None:  # `**mapping`: not fixed by the file
            return None
        kwargs[keyword.arg] = value
    if any(a is None for a in args):
        return None
    try:
        for _, field, spec, conversion in string.Formatter().parse(template):
            if field is None:
                continue
            if (
                spec
                or conversion not in (None, "s")
                or not (field.isidentifier() or field.isdigit() or not field)
            ):
                return None
        return template.format(*args, **kwargs)
    except (ValueError, IndexError, KeyError):
        return None


def _percent(node: ast.BinOp, names: dict[str, str], depth: int) -> str | None:
    """`"trading.smars.%s" % NAME`: only `%s` and `%%` directives."""
    template = _static_str(node.left, names, depth + 1)
    if template is None or _PERCENT.search(template.replace("%%", "")) is not None:
        return None
    operands = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
    values = [_static_str(e, names, depth + 1) for e in operands]
    if any(v is None for v in values):
        return None
    try:
        return template % tuple(values)
    except (TypeError, ValueError):
        return None


def _reference(
    path: Path,
    node: ast.expr,
    flag_id: str,
    via_accessor: bool,
    parents: dict[ast.AST, ast.AST],
) -> CodeReference:
    return CodeReference(str(path), node.lineno, flag_id, via_accessor, _guarded(node, parents))


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> tuple[int, int] | None:
    """Lines of the block whose condition contains the reference: the dead code."""
    child = node
    parent = parents.get(child)
    while parent is not None:
        if isinstance(parent, ast.If | ast.While | ast.IfExp) and parent.test is child:
            end = parent.end_lineno or parent.lineno
            return (parent.lineno, end)
        if isinstance(parent, ast.stmt) and not isinstance(parent, ast.If | ast.While):
            return None
        child, parent = parent, parents.get(parent)
    return None


def reference_findings(refs: Sequence[CodeReference], doc: RegistryDocument) -> list[Finding]:
    # a retired entry wins over a later one reusing its id: that code is the tombstone's
    ordered = sorted(doc.flags, key=lambda f: f.retired)
    known = {f.id: f for f in ordered}
    by_identity = {id_identity(f.id): f for f in ordered}
    findings: list[Finding] = []
    for ref in refs:
        span = ""
        if ref.guarded_lines is not None:
            span = f"; it guards lines {ref.guarded_lines[0]}-{ref.guarded_lines[1]}"
        flag = known.get(ref.flag_id)
        spelled = ""
        if flag is None and len(ref.flag_id) <= _FOLD_CHARS:
            # one id to the registry and the provider: another case, Unicode form, a space,
            # a look-alike letter of another script
            flag = by_identity.get(id_identity(ref.flag_id))
            if flag is None and not ref.flag_id.isascii():
                copied = lookalike_of(ref.flag_id, by_identity)
                flag = by_identity.get(copied) if copied is not None else None
            spelled = f" (spelled {quoted(ref.flag_id)})" if flag is not None else ""
        if flag is not None and flag.retired:
            findings.append(
                Finding(
                    FindingCode.RETIRED_FLAG_REFERENCE,
                    Severity.ERROR,
                    ref.path,
                    ref.line,
                    f"dead code: reference to retired flag {quoted(flag.id)}{spelled}{span}; "
                    "remove the code before the id can wake it",
                    flag.id,
                )
            )
        elif flag is not None and ref.typed_accessor:
            findings.append(
                Finding(
                    FindingCode.FLAG_TYPE_MISMATCH,
                    Severity.ERROR,
                    ref.path,
                    ref.line,
                    f"flag {quoted(flag.id)}{spelled} is boolean: {ref.typed_accessor}() "
                    "answers the caller's default, never its state or safe default; "
                    f"use a boolean evaluation{span}",
                    flag.id,
                )
            )
        elif (
            flag is not None
            and not spelled
            and ref.caller_default is not None
            and ref.caller_default != flag.safe_default
        ):
            # with no provider set, or one not ready, the client answers the caller's default:
            # `get_boolean_value(RLP, True)` turned a trading flag on where the registry
            # promises its safe default (off)
            findings.append(
                Finding(
                    FindingCode.UNSAFE_CALLER_DEFAULT,
                    Severity.ERROR if flag.trading_behaviour else Severity.WARNING,
                    ref.path,
                    ref.line,
                    f"flag {quoted(flag.id)}: default_value {ref.caller_default} is not its "
                    f"safe default {flag.safe_default}; the client answers it when no "
                    f"provider is ready: pass {flag.safe_default}{span}",
                    flag.id,
                )
            )
        elif flag is not None and spelled:
            findings.append(
                Finding(
                    FindingCode.UNKNOWN_FLAG_REFERENCE,
                    Severity.ERROR,
                    ref.path,
                    ref.line,
                    f"dead code: reference to flag {quoted(ref.flag_id)}, which spells registry "
                    f"id {quoted(flag.id)} another way (the provider answers its safe default)"
                    f"{span}",
                    ref.flag_id,
                )
            )
        elif flag is None:
            findings.append(
                Finding(
                    FindingCode.UNKNOWN_FLAG_REFERENCE,
                    Severity.ERROR,
                    ref.path,
                    ref.line,
                    f"dead code: reference to flag {quoted(ref.flag_id)}, which is not in the "
                    f"registry{span}",
                    ref.flag_id,
                )
            )
    return findings


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, check=False)


def _said(out: bytes) -> str:
    """git's own output (paths, author names, errors): only shown, never parsed strictly."""
    return out.decode("utf-8", "replace").strip()


def registry_history(registry_path: Path) -> list[tuple[str, str | RegistryError]]:
    """(label, text) of every committed version of the registry file, oldest first.

    A commit that deleted the file yields an empty text, i.e. every id removed. A
    version that is not UTF-8 comes as the error naming it (`history_findings` skips
    it, as it does any version that does not parse; a traceback ended lint before).
    The file is followed across renames (`git log --follow`): a move must not start
    its history afresh, without the tombstones the commit that moved it dropped.
    """
    directory = registry_path.resolve().parent
    top = _git(directory, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise RegistryError(f"{registry_path}: not inside a git repository: {_said(top.stderr)}")
    root = Path(os.fsdecode(top.stdout.strip()))
    rel = registry_path.resolve().relative_to(root).as_posix()
    log = _git(
        root,
        "-c",
        "core.quotePath=false",
        "log",
        "--follow",
        "--name-only",
        "--format=%x00%H %ad %an",
        "--date=short",
        "--",
        rel,
    )
    if log.returncode != 0:
        raise RegistryError(f"{registry_path}: git log failed: {_said(log.stderr)}")
    versions: list[tuple[str, str | RegistryError]] = []
    for entry in reversed(log.stdout.split(b"\0")):
        lines = [line for line in entry.splitlines() if line.strip()]
        if not lines:
            continue
        sha, _, rest = _said(lines[0]).partition(" ")
        # the file's path in that commit (another before a rename); git quotes odd names
        named = os.fsdecode(lines[-1]) if len(lines) > 1 else rel
        named = rel if named.startswith('"') else named
        label = f"commit {sha[:10]} ({rest})" + (f" as {named}" if named != rel else "")
        shown = _git(root, "show", f"{sha}:{named}")
        text: str | RegistryError = "version: 1\nflags: []\n"
        if shown.returncode == 0:
            try:
                text = decode_utf8(shown.stdout, named)
            except InputFileError as exc:
                text = RegistryError(str(exc))
        versions.append((label, text))
    return versions


def history_findings(registry_path: Path) -> tuple[list[Finding], int]:
    """Replay the file's git history and the working copy through one ledger."""
    try:
        versions = registry_history(registry_path)
    except RegistryError as exc:
        finding = Finding(
            FindingCode.HISTORY_UNAVAILABLE, Severity.ERROR, str(registry_path), 1, str(exc)
        )
        return [finding], 0
    if registry_path.exists():
        try:
            versions.append(("working tree", read_registry(registry_path)))
        except RegistryError as exc:
            finding = Finding(
                FindingCode.REGISTRY_INVALID, Severity.ERROR, str(registry_path), exc.line, str(exc)
            )
            return [finding], len(versions)
    ledger = RegistryLedger()
    findings: list[Finding] = []
    seen: set[tuple[FindingCode, str]] = set()
    for label, text in versions:
        try:
            if isinstance(text, RegistryError):
                raise text
            doc = parse_registry(text, str(registry_path))
        except RegistryError as exc:
            findings.append(
                Finding(
                    FindingCode.REGISTRY_INVALID,
                    Severity.WARNING,
                    str(registry_path),
                    1,
                    f"{label}: version could not be parsed and was skipped: {exc}",
                )
            )
            continue
        for finding in ledger.admit(doc, label):
            # Only evolution findings here; single-version findings come from the main pass.
            if finding.code in (FindingCode.REUSED_ID, FindingCode.HASH_MISMATCH):
                continue
            if finding.code is FindingCode.REDEFINED_ID and not finding.message.startswith(label):
                continue
            key = (finding.code, finding.flag_id)
            if key not in seen:
                seen.add(key)
                findings.append(finding)
    return findings, len(versions)


def run_lint(
    registry_path: Path,
    roots: Sequence[Path],
    today: date,
    *,
    history: bool = False,
    config: LintConfig | None = None,
    on_file: Callable[[Path, int], None] | None = None,
) -> LintReport:
    config = config or LintConfig()
    try:
        doc = parse_registry(read_registry(registry_path), str(registry_path))
    except RegistryError as exc:
        finding = Finding(
            FindingCode.REGISTRY_INVALID, Severity.ERROR, str(registry_path), exc.line, str(exc)
        )
        return LintReport((finding,), 0, 0)
    findings = RegistryLedger().admit(doc, "working tree")
    findings += hygiene_findings(doc, today)
    versions = 1
    if history:
        evolution, versions = history_findings(registry_path)
        findings += evolution
    namespaces = frozenset(f.id.split(".", 1)[0] for f in doc.flags if f.namespaced)
    known_ids = frozenset(f.id for f in doc.flags)
    retired_identities = frozenset(id_identity(f.id) for f in doc.flags if f.retired)
    files = collect_sources(roots, config)
    refs: list[CodeReference] = []
    for path in files:
        try:
            source = read_bytes(path, "source", SOURCE_MAX_BYTES, allow_empty=True)
            refs += find_references(path, source, namespaces, known_ids, config, retired_identities)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            findings.append(
                Finding(
                    FindingCode.SOURCE_UNPARSEABLE,
                    Severity.WARNING,
                    str(path),
                    getattr(exc, "lineno", None) or 1,
                    f"not scanned for flag references: {exc}",
                )
            )
        if on_file is not None:
            on_file(path, len(files))
    findings += reference_findings(refs, doc)
    ordered = sorted(findings, key=lambda f: (f.path, f.line, f.code, f.flag_id))
    return LintReport(tuple(ordered), len(files), versions)
