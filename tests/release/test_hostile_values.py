"""A value from an input file is quoted cut short, and an error names where it came from.

Release ids, artifact paths, subject names and payload types come from files and
from envelopes anyone can send to the admission service. Each used to be repeated
whole: a 100,000-character payload type became a 100,000-character finding, logged
as one ADMISSION line and sent back as the verdict. A rule a signed payload breaks
was reported by `release sign` without saying which envelope it was in.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from knightwatch.errors import QUOTE_LIMIT
from knightwatch.release.attestation import NodeRoster, open_attestation
from knightwatch.release.checkpoint import open_checkpoint
from knightwatch.release.contents import ReleaseContents
from knightwatch.release.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, add_signature, new_envelope
from knightwatch.release.errors import ReleaseInputError
from knightwatch.release.manifest import Manifest
from knightwatch.release.signing import sign_release, verify_release

from .release_world import World

HUGE = 100_000
LONGEST = 4 * QUOTE_LIMIT + 300
"""An error repeats at most a cut value and its own words."""
HASH = "a" * 64


def signed_statement(world: World, edit: Callable[[dict[str, object]], None]) -> Envelope:
    """The world's release statement, edited, put back in canonical form and signed by both."""
    statement = json.loads(Manifest(release_id="r1", contents=world.contents()).statement_bytes())
    edit(statement)
    payload = json.dumps(statement, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    envelope = new_envelope(IN_TOTO_PAYLOAD_TYPE, payload.encode())
    for key in (world.ci, world.rm):
        envelope = add_signature(envelope, key)
    return envelope


def add_subject(name: str) -> Callable[[dict[str, object]], None]:
    def edit(statement: dict[str, object]) -> None:
        subjects = statement["subject"]
        assert isinstance(subjects, list)
        subjects.append({"digest": {"sha256": HASH}, "name": name})

    return edit


def set_predicate_type(value: str) -> Callable[[dict[str, object]], None]:
    def edit(statement: dict[str, object]) -> None:
        statement["predicateType"] = value

    return edit


def error_of(call: Callable[[], object]) -> str:
    with pytest.raises(ReleaseInputError) as caught:
        call()
    return str(caught.value)


def assert_cut(text: str, *needles: str) -> None:
    assert len(text) < LONGEST, f"{len(text)} characters: {text[:200]}..."
    assert "cut" in text
    for needle in needles:
        assert needle in text


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("r" * HUGE + " ", "release_id"),
        ("r\n" * HUGE, "release_id"),
    ],
)
def test_a_huge_release_id_is_quoted_cut_naming_the_field(value: str, field: str) -> None:
    contents = ReleaseContents(artifacts={"a": HASH}, config_sha256=HASH, flag_schema={})
    assert_cut(error_of(lambda: Manifest(release_id=value, contents=contents)), field)


@pytest.mark.parametrize("path", ["../" + "x" * HUGE, "x" * HUGE + "/", "/" + "y" * HUGE])
def test_a_huge_artifact_path_is_quoted_cut_naming_the_rule(path: str) -> None:
    message = error_of(
        lambda: ReleaseContents(artifacts={path: HASH}, config_sha256=HASH, flag_schema={})
    )
    assert_cut(message, "artifacts", "normalised relative POSIX path")


def test_a_huge_artifact_path_with_a_bad_hash_is_quoted_cut() -> None:
    path = "p" * HUGE
    message = error_of(
        lambda: ReleaseContents(artifacts={path: "A" * 64}, config_sha256=HASH, flag_schema={})
    )
    assert_cut(message, "artifacts[", "64 lower-case hex digits")


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (add_subject("../" + "z" * HUGE), ("envelope payload", "normalised relative POSIX")),
        (add_subject("smars/router.py"), ("envelope payload", "listed twice")),
        (set_predicate_type("t" * HUGE), ("envelope payload", "predicateType")),
    ],
)
def test_a_signed_statement_breaking_a_rule_is_one_short_finding_naming_the_payload(
    world: World, edit: Callable[[dict[str, object]], None], needles: tuple[str, ...]
) -> None:
    envelope = signed_statement(world, edit)
    result = verify_release(envelope, world.policy)
    assert result.manifest is None
    (finding,) = result.findings
    assert finding.reason == "manifest_malformed"
    assert len(finding.detail) < LONGEST
    for needle in needles:
        assert needle in finding.detail
    # `release sign` refuses to sign it, saying which envelope
    message = error_of(lambda: sign_release(envelope, world.ci, source="envelope e.dsse.json"))
    assert "envelope e.dsse.json" in message and needles[1] in message
    assert len(message) < LONGEST


def test_a_huge_payload_type_is_quoted_cut_everywhere_it_is_judged(world: World) -> None:
    kind = "application/" + "x" * HUGE
    release = world.release()
    envelope = Envelope(release.payload, kind, release.signatures)
    findings = verify_release(envelope, world.policy).findings
    assert any(f.subject == "payloadType" for f in findings)
    for finding in findings:
        assert len(finding.detail) < LONGEST
    assert_cut(error_of(lambda: sign_release(envelope, world.ci)), "payloadType")
    roster: NodeRoster = world.roster
    opened, problems = open_attestation(envelope, roster)
    assert opened is None
    assert_cut(problems[0].detail, "attestation")
    checked = open_checkpoint(envelope, world.node_keys["n1"].public)
    assert checked.checkpoint is None
    assert_cut(checked.problem, "payloadType")


def test_a_payload_that_is_not_base64_still_names_its_rule(world: World) -> None:
    envelope = Envelope(base64.b64encode(b"{}").decode() + "!", IN_TOTO_PAYLOAD_TYPE)
    (finding,) = verify_release(envelope, world.policy).findings
    assert "not base64" in finding.detail
