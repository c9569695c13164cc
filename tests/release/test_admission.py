from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from knightwatch.clock import NS_PER_S, SimClock
from knightwatch.release.admission import Admitter, NodeStatus, check_release
from knightwatch.release.attestation import attest, sign_attestation
from knightwatch.release.contents import ReleaseContents, contents_from_directory
from knightwatch.release.flagschema import schema_from_table
from knightwatch.release.manifest import Manifest
from knightwatch.release.reasons import AdmissionReason as R
from knightwatch.release.signing import release_envelope

from .release_world import CONFIG, FILES, FLAGS, POWER_PEG, POWER_PEG_HASH, RLP, World

TARGET = "2012.08.01-rlp"


def admit_once(
    world: World,
    admitter: Admitter,
    clock: SimClock,
    node: str = "n1",
    contents: ReleaseContents | None = None,
) -> tuple[R, ...]:
    nonce = admitter.challenge(node)
    attestation = world.attestation(node, nonce, clock, contents)
    verdict = admitter.admit(attestation, world.release(), world.registry, target_release=TARGET)
    return verdict.reasons


def test_a_node_running_the_signed_release_is_admitted(world: World, clock: SimClock) -> None:
    admitter = world.admitter(clock)
    nonce = admitter.challenge("n1")
    verdict = admitter.admit(
        world.attestation("n1", nonce, clock),
        world.release(),
        world.registry,
        target_release=TARGET,
    )
    assert verdict.admitted, verdict.detail
    assert verdict.status is NodeStatus.ADMITTED is admitter.status("n1")
    assert verdict.findings == ()
    assert len(verdict.manifest_digest) == 64


def test_the_eighth_server_with_old_code_is_refused_naming_the_file(
    world: World, clock: SimClock
) -> None:
    admitter = world.admitter(clock)
    old = dict(FILES)
    old["smars/router.py"] = b"def route(order):\n    return power_peg(order)\n"
    nonce = admitter.challenge("n8")
    verdict = admitter.admit(
        world.attestation("n8", nonce, clock, world.contents(files=old)),
        world.release(),
        world.registry,
        target_release=TARGET,
    )
    assert not verdict.admitted
    assert verdict.status is NodeStatus.REFUSED
    assert [(f.reason, f.subject) for f in verdict.findings] == [
        (R.FILE_MISMATCH, "smars/router.py")
    ]
    assert "smars/router.py" in verdict.detail


def test_missing_unexpected_config_and_flag_differences_are_each_named(
    world: World, clock: SimClock
) -> None:
    files = {k: v for k, v in FILES.items() if k != "smars/rlp.py"}
    files["smars/power_peg.py"] = b"while True: send()\n"
    flags = {POWER_PEG: POWER_PEG_HASH}
    changed = world.contents(files=files, config=b"max_child_orders = 0\n", flags=flags)
    found = admit_once(world, world.admitter(clock), clock, contents=changed)
    assert set(found) == {
        R.FILE_MISSING,
        R.FILE_UNEXPECTED,
        R.CONFIG_MISMATCH,
        R.FLAG_MISSING,
        R.FLAG_UNEXPECTED,
    }


def test_reused_flag_id_with_another_meaning_is_a_flag_schema_mismatch(
    world: World, clock: SimClock
) -> None:
    admitter = world.admitter(clock)
    nonce = admitter.challenge("n8")
    verdict = admitter.admit(
        world.attestation("n8", nonce, clock, world.contents(flags={RLP: POWER_PEG_HASH})),
        world.release(),
        world.registry,
        target_release=TARGET,
    )
    assert [(f.reason, f.subject) for f in verdict.findings] == [(R.FLAG_SCHEMA_MISMATCH, RLP)]


def test_replayed_attestation_is_refused_without_changing_state(
    world: World, clock: SimClock
) -> None:
    admitter = world.admitter(clock)
    nonce = admitter.challenge("n1")
    attestation = world.attestation("n1", nonce, clock)
    first = admitter.admit(attestation, world.release(), world.registry, target_release=TARGET)
    assert first.admitted
    clock.advance(NS_PER_S)
    again = admitter.admit(attestation, world.release(), world.registry, target_release=TARGET)
    assert not again.admitted
    assert again.reasons == (R.ATTESTATION_REPLAYED,)
    assert admitter.status("n1") is NodeStatus.ADMITTED


def test_stale_attestation_is_refused(world: World, clock: SimClock) -> None:
    admitter = world.admitter(clock)
    nonce = admitter.challenge("n2")
    attestation = world.attestation("n2", nonce, clock)
    clock.advance(31 * NS_PER_S)
    verdict = admitter.admit(attestation, world.release(), world.registry, target_release=TARGET)
    assert verdict.reasons == (R.CHALLENGE_UNKNOWN,)  # the challenge itself expired
    nonce = admitter.challenge("n2")
    old = sign_attestation(
        msgspec.structs.replace(
            attest("n2", nonce, world.contents(), clock=clock),
            at_ns=clock.time_ns() - 40 * NS_PER_S,
        ),
        world.node_keys["n2"],
    )
    verdict = admitter.admit(old, world.release(), world.registry, target_release=TARGET)
    assert verdict.reasons == (R.ATTESTATION_STALE,)
    assert admitter.status("n2") is NodeStatus.UNKNOWN


def test_nonce_issued_to_another_node_or_never_issued_is_refused(
    world: World, clock: SimClock
) -> None:
    admitter = world.admitter(clock)
    nonce = admitter.challenge("n1")
    stolen = world.attestation("n2", nonce, clock)
    verdict = admitter.admit(stolen, world.release(), world.registry, target_release=TARGET)
    assert verdict.reasons == (R.CHALLENGE_UNKNOWN,)
    invented = world.attestation("n3", "made-up", clock)
    verdict = admitter.admit(invented, world.release(), world.registry, target_release=TARGET)
    assert verdict.reasons == (R.CHALLENGE_UNKNOWN,)


def test_attestation_signed_by_the_wrong_key_or_unknown_node(world: World, clock: SimClock) -> None:
    admitter = world.admitter(clock)
    nonce = admitter.challenge("n1")
    statement = attest("n1", nonce, world.contents(), clock=clock)
    impostor = sign_attestation(statement, world.node_keys["n2"])
    verdict = admitter.admit(impostor, world.release(), world.registry, target_release=TARGET)
    assert verdict.reasons == (R.ATTESTATION_SIGNATURE_INVALID,)
    stranger = sign_attestation(attest("n9", nonce, world.contents(), clock=clock), world.ci)
    verdict = admitter.admit(stranger, world.release(), world.registry, target_release=TARGET)
    assert verdict.reasons == (R.NODE_UNKNOWN,)
    assert verdict.node == "n9"
    # the genuine attestation still works: failed attempts did not burn the nonce
    genuine = sign_attestation(statement, world.node_keys["n1"])
    assert admitter.admit(genuine, world.release(), world.registry, target_release=TARGET).admitted


def test_drift_after_admission_fences_the_node(world: World, clock: SimClock) -> None:
    admitter = world.admitter(clock)
    assert admit_once(world, admitter, clock, "n3") == ()
    clock.advance(10 * NS_PER_S)
    edited = dict(FILES)
    edited["smars/rlp.py"] = b"def rlp(order):\n    return None\n"
    drifted = world.contents(files=edited)
    found = admit_once(world, admitter, clock, "n3", drifted)
    assert found == (R.FILE_MISMATCH, R.NODE_DRIFTED)
    assert admitter.status("n3") is NodeStatus.FENCED
    clock.advance(10 * NS_PER_S)
    assert admit_once(world, admitter, clock, "n3", world.contents(files=edited)) == (
        R.FILE_MISMATCH,
    )
    assert admitter.status("n3") is NodeStatus.FENCED
    assert admit_once(world, admitter, clock, "n3") == ()  # redeployed correctly
    assert admitter.status("n3") is NodeStatus.ADMITTED


def test_rollback_to_a_release_knowing_a_retired_flag_is_refused(
    world: World, clock: SimClock
) -> None:
    """Knight's rollback: the old release still understood the Power Peg flag."""
    legacy = world.contents(flags={POWER_PEG: POWER_PEG_HASH})
    rollback = world.release("2012.07.01-legacy", legacy)
    check = check_release(
        rollback, world.policy, world.registry, target_release="2012.07.01-legacy"
    )
    assert check.manifest is None
    assert [(f.reason, f.subject) for f in check.findings] == [
        (R.FLAG_RETIRED_IN_REGISTRY, POWER_PEG)
    ]
    admitter = world.admitter(clock)
    assert admit_once(world, admitter, clock, "n1") == ()
    nonce = admitter.challenge("n1")
    verdict = admitter.admit(
        world.attestation("n1", nonce, clock, legacy),
        rollback,
        world.registry,
        target_release="2012.07.01-legacy",
    )
    assert R.FLAG_RETIRED_IN_REGISTRY in verdict.reasons
    assert verdict.status is NodeStatus.FENCED


def test_release_with_a_redefined_or_unregistered_flag_is_refused(world: World) -> None:
    redefined = world.release("r-redef", world.contents(flags={RLP: POWER_PEG_HASH}))
    unknown = world.release("r-unknown", world.contents(flags={"trading.new": "a" * 64}))
    assert [
        f.reason
        for f in check_release(
            redefined, world.policy, world.registry, target_release="r-redef"
        ).findings
    ] == [R.FLAG_REDEFINED_IN_REGISTRY]
    assert [
        f.reason
        for f in check_release(
            unknown, world.policy, world.registry, target_release="r-unknown"
        ).findings
    ] == [R.FLAG_UNKNOWN_TO_REGISTRY]


def test_signed_release_that_is_not_the_target_is_refused(world: World, clock: SimClock) -> None:
    admitter = world.admitter(clock)
    nonce = admitter.challenge("n4")
    verdict = admitter.admit(
        world.attestation("n4", nonce, clock),
        world.release("2012.07.31-rlp-rc"),
        world.registry,
        target_release=TARGET,
    )
    assert verdict.reasons == (R.NOT_TARGET_RELEASE,)


def test_unsigned_target_release_refuses_every_node(world: World, clock: SimClock) -> None:
    unsigned = release_envelope(Manifest(release_id=TARGET, contents=world.contents()))
    admitter = world.admitter(clock)
    nonce = admitter.challenge("n5")
    verdict = admitter.admit(
        world.attestation("n5", nonce, clock), unsigned, world.registry, target_release=TARGET
    )
    assert verdict.reasons == (R.SIGNATURE_MISSING,)


def test_eight_node_fleet_admits_seven_and_refuses_the_stale_one(
    world: World, clock: SimClock
) -> None:
    admitter = world.admitter(clock)
    release = world.release()
    stale = world.contents(files={**FILES, "smars/router.py": b"power_peg()\n"})
    verdicts = {}
    for node in world.roster:
        nonce = admitter.challenge(node)
        contents = stale if node == "n8" else None
        verdicts[node] = admitter.admit(
            world.attestation(node, nonce, clock, contents),
            release,
            world.registry,
            target_release=TARGET,
        )
    assert [n for n, v in verdicts.items() if not v.admitted] == ["n8"]


def test_attestation_from_a_directory_matches_the_in_memory_release(
    tmp_path: Path, world: World, clock: SimClock
) -> None:
    for name, data in FILES.items():
        (tmp_path / "art" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "art" / name).write_bytes(data)
    (tmp_path / "config.toml").write_bytes(CONFIG)
    contents = contents_from_directory(
        tmp_path / "art", tmp_path / "config.toml", schema_from_table(FLAGS, where="flags")
    )
    admitter = world.admitter(clock)
    nonce = admitter.challenge("n6")
    verdict = admitter.admit(
        world.attestation("n6", nonce, clock, contents),
        world.release(),
        world.registry,
        target_release=TARGET,
    )
    assert verdict.admitted, verdict.detail


def test_admitter_rejects_a_nonpositive_max_age(world: World, clock: SimClock) -> None:
    with pytest.raises(ValueError, match="max_age_ns"):
        Admitter(world.policy, world.roster, clock=clock, max_age_ns=0)


def test_a_flood_of_challenges_costs_each_request_constant_work(
    world: World, clock: SimClock
) -> None:
    """Anyone may ask for a challenge in any name: every request rebuilt all pending
    challenges and used nonces, so 100,000 requests cost minutes and held the control plane
    meanwhile. Now expiry looks only at the oldest: a request costs one look while none
    has expired, and each expired one is looked at once, when it is forgotten."""
    admitter = world.admitter(clock)
    for i in range(3000):
        admitter.challenge(f"ghost{i}")
    assert admit_once(world, admitter, clock, "n1") == ()  # one used nonce kept too
    start = admitter.examined
    for _ in range(1000):
        admitter.challenge("n2")
    assert admitter.examined - start <= 2 * 1000  # the oldest challenge and used nonce
    clock.advance(31 * NS_PER_S)
    start = admitter.examined
    assert admit_once(world, admitter, clock, "n2") == ()  # forgets the 4000 expired, once
    assert admitter.examined - start <= 4000 + 2 * 2
    start = admitter.examined
    for _ in range(1000):
        admitter.challenge("n3")
    assert admitter.examined - start <= 2 * 1000
    # an expired challenge still admits nobody
    clock.advance(31 * NS_PER_S)
    nonce = admitter.challenge("n4")
    clock.advance(31 * NS_PER_S)
    late = world.attestation("n4", nonce, clock)
    verdict = admitter.admit(late, world.release(), world.registry, target_release=TARGET)
    assert verdict.reasons == (R.CHALLENGE_UNKNOWN,)
