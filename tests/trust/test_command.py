"""The kill-switch command check: a resume's signed ramp, and what it allows over time."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from knightwatch.release.dsse import add_signature, new_envelope
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import (
    COMMAND_PAYLOAD_TYPE,
    MAX_RAMP_S,
    MIN_HOLD_S,
    Refused,
    StateCommand,
    TrustReason,
    check_state,
    ramp_ends_ns,
    ramp_fraction,
    ramp_problem,
    sign_command,
)
from knightwatch.trust.kit import Kit
from knightwatch.trust.roster import Role

from ..identities import ALICE, BOB, KIT

NOW = 10**18
HOUR = 3600 * 10**9


def _command(state: TradingState, **fields: object) -> StateCommand:
    base: dict[str, object] = {
        "scope": Scope.FLEET,
        "key": "fleet",
        "state": state,
        "reason": "test",
        "actor": "alice",
        "command_id": "c" * 32,
        "issued_ns": NOW,
        "expires_ns": NOW + HOUR,
    }
    if state is TradingState.ACTIVE:
        base |= {"supersedes": "k" * 32, "decided_on": 2}
    return StateCommand(**{**base, **fields})  # type: ignore[arg-type]


def test_a_kill_carrying_a_ramp_is_refused() -> None:
    command = _command(TradingState.HALTED, ramp=((0.5, 1.0), (1.0, 0.0)))
    with pytest.raises(Refused) as caught:
        check_state(command, sign_command(command, ALICE.key), KIT.roster, now_ns=NOW, live=True)
    assert caught.value.reason is TrustReason.MALFORMED
    assert "only a resume carries one" in caught.value.detail


def test_a_resume_is_checked_with_its_ramp_and_a_changed_ramp_is_refused() -> None:
    command = _command(TradingState.ACTIVE, ramp=((0.1, 60.0), (1.0, 0.0)))
    proof = add_signature(sign_command(command, ALICE.key), BOB.key)
    checked = check_state(command, proof, KIT.roster, now_ns=NOW, live=True)
    assert (checked.actor, checked.approvers) == ("alice", ("bob",))
    quicker = msgspec.structs.replace(command, ramp=((1.0, 0.0),))
    with pytest.raises(Refused) as caught:
        check_state(quicker, proof, KIT.roster, now_ns=NOW, live=True)
    assert caught.value.reason is TrustReason.PAYLOAD_MISMATCH


def test_a_command_signed_before_resumes_carried_ramps_still_verifies() -> None:
    """Entries stored by an earlier version have no `ramp` in their signed payload."""
    command = _command(TradingState.HALTED)
    legacy = msgspec.json.encode(
        {k: v for k, v in msgspec.to_builtins(command).items() if k != "ramp"}
    )
    assert b"ramp" not in legacy
    proof = add_signature(new_envelope(COMMAND_PAYLOAD_TYPE, legacy), ALICE.key)
    checked = check_state(command, proof, KIT.roster, now_ns=NOW, live=True)
    assert checked.actor == "alice"


def test_a_signed_ramp_over_the_longest_allowed_is_refused() -> None:
    command = _command(TradingState.ACTIVE, ramp=((0.1, MAX_RAMP_S), (0.5, 1.0), (1.0, 0.0)))
    proof = add_signature(sign_command(command, ALICE.key), BOB.key)
    with pytest.raises(Refused, match="must total at most"):
        check_state(command, proof, KIT.roster, now_ns=NOW, live=True)


@pytest.mark.parametrize("hold", [0.0, 1e-300, 5e-324, 1e-9, 0.05, MIN_HOLD_S * 0.999])
def test_a_signed_ramp_with_a_stage_below_full_limits_held_too_short_is_refused(
    hold: float,
) -> None:
    """The ramp controller refuses a stage held under `MIN_HOLD_S` (no stage: it is stepped
    past at once, and was shown to both people as "10% for 1e-300 s"); a resume carrying
    one, written into the store by whoever may write it, was taken by every node, which
    stepped through it at once. The last stage (full limits) may hold 0."""
    command = _command(TradingState.ACTIVE, ramp=((0.1, hold), (1.0, 0.0)))
    proof = add_signature(sign_command(command, ALICE.key), BOB.key)
    with pytest.raises(Refused, match=r"ramp\[0\]\.hold_s: must be >= 0\.1 s below full"):
        check_state(command, proof, KIT.roster, now_ns=NOW, live=True)
    fine = msgspec.structs.replace(command, ramp=((0.1, MIN_HOLD_S), (1.0, 0.0)))
    proof = add_signature(sign_command(fine, ALICE.key), BOB.key)
    assert check_state(fine, proof, KIT.roster, now_ns=NOW, live=True).actor == "alice"


_fractions = st.lists(st.floats(0.01, 1.0), min_size=0, max_size=6).map(sorted)
_holds = st.floats(MIN_HOLD_S, 600.0)


@given(_fractions, st.lists(_holds, min_size=7, max_size=7), st.integers(0, 5 * HOUR))
def test_what_a_ramp_allows_never_falls_and_reaches_full_limits_when_it_ends(
    fractions: list[float], holds: list[float], elapsed_ns: int
) -> None:
    ramp = tuple(zip([*fractions, 1.0], holds, strict=False))
    assert ramp_problem(ramp) is None
    now = ramp_fraction(ramp, elapsed_ns)
    assert now in [f for f, _ in ramp]
    assert ramp_fraction(ramp, elapsed_ns + 10**9) >= now  # never tighter later
    assert ramp_fraction(ramp, 0) == ramp[0][0] or int(ramp[0][1] * 1e9) == 0  # sub-ns hold
    ends = ramp_ends_ns(ramp)
    assert ramp_fraction(ramp, ends) == 1.0
    # never looser than the stage signed for that time (a brute-force walk of the stages)
    at = 0.0
    for fraction, hold in ramp[:-1]:
        at += hold
        if elapsed_ns < int(at * 1e9):
            assert now <= fraction
            break
    else:
        assert now == 1.0


def test_an_approver_whose_role_a_newer_roster_removed_approves_nothing() -> None:
    """bob approved under version 1; version 2 keeps his key but not the approver role.
    A reader on version 2 counts no second person, live or stored: the roster judged is
    the reader's, never the one the signer had in mind."""
    kit = Kit(now_ns=0)
    command = _command(TradingState.ACTIVE)
    proof = add_signature(sign_command(command, kit.signer("alice").key), kit.signer("bob").key)
    assert check_state(command, proof, kit.roster, now_ns=NOW, live=True).approvers == ("bob",)
    members = [
        msgspec.structs.replace(m, roles=(Role.OPERATOR,)) if m.name == "bob" else m
        for m in kit.roster.members
    ]
    kit.next_version(members)
    newer = kit.store().roster
    assert newer is not None and newer.version == 2
    for live in (True, False):
        with pytest.raises(Refused) as caught:
            check_state(command, proof, newer, now_ns=NOW, live=live)
        assert caught.value.reason is TrustReason.APPROVAL_MISSING
        assert "bob signed but does not hold the approver role" in caught.value.detail


@pytest.mark.parametrize(
    ("actor", "signers", "reason"),
    [
        ("supervisor", ("supervisor", "bob"), TrustReason.ROLE_NOT_ALLOWED),
        ("alice", ("supervisor", "bob"), TrustReason.ACTOR_MISMATCH),
        ("guard:loss_limit", ("n1", "bob"), TrustReason.ACTOR_MISMATCH),
        ("n1", ("n1", "bob"), TrustReason.ROLE_NOT_ALLOWED),
    ],
)
def test_the_supervisor_or_a_node_never_requests_a_resume(
    actor: str, signers: tuple[str, ...], reason: TrustReason
) -> None:
    """Components stop (a kill, an automatic halt), never loosen: a resume they request or
    sign for someone else is refused even with an approver's signature on it."""
    kit = Kit(now_ns=0, nodes=("n1",))
    command = _command(TradingState.ACTIVE, actor=actor)
    proof = sign_command(command, kit.signer(signers[0]).key)
    for name in signers[1:]:
        proof = add_signature(proof, kit.signer(name).key)
    for live in (True, False):
        with pytest.raises(Refused) as caught:
            check_state(command, proof, kit.roster, now_ns=NOW, live=live)
        assert caught.value.reason is reason, caught.value


def test_a_stored_resume_is_judged_at_the_store_s_write_time_a_stored_kill_is_not() -> None:
    """Stored after its expiry, or more than 5 s before its claimed issue time: refused;
    its keys must be valid when stored. A kill stored late still stands."""
    resume = _command(TradingState.ACTIVE)
    proof = add_signature(sign_command(resume, ALICE.key), BOB.key)

    def stored_at(at_ns: int) -> TrustReason | None:
        try:
            check_state(resume, proof, KIT.roster, now_ns=0, live=False, stored_ns=at_ns)
        except Refused as exc:
            return exc.reason
        return None

    assert stored_at(NOW + 1) is None
    assert stored_at(NOW + HOUR + 1) is TrustReason.EXPIRED  # held back past its expiry
    assert stored_at(NOW - 6 * 10**9) is TrustReason.FROM_FUTURE  # dated ahead of its write
    kit = Kit(now_ns=0)
    late = _command(TradingState.ACTIVE, actor="alice")
    signed = add_signature(sign_command(late, kit.signer("alice").key), kit.signer("bob").key)
    kit.revoke("bob", NOW + 10)  # approved while valid, revoked after
    roster = kit.roster
    for at_ns, want in ((NOW + 5, None), (NOW + 20, TrustReason.KEY_NOT_VALID)):
        try:
            check_state(late, signed, roster, now_ns=0, live=False, stored_ns=at_ns)
            got = None
        except Refused as exc:
            got = exc.reason
        assert got is want, at_ns
    kill = _command(TradingState.HALTED)
    checked = check_state(
        kill, sign_command(kill, ALICE.key), KIT.roster, now_ns=0, live=False,
        stored_ns=NOW + 2 * HOUR,
    )  # fmt: skip
    assert checked.actor == "alice"


def _signed_bytes(payload: bytes) -> object:
    return add_signature(
        add_signature(new_envelope(COMMAND_PAYLOAD_TYPE, payload), ALICE.key), BOB.key
    )


@pytest.mark.parametrize(
    "edit",
    [
        # a field this reader does not know: a newer writer's narrowing ("only these
        # nodes") that this reader would drop, applying the resume to the whole scope
        lambda p: p[:-1] + b',"nodes":["n1"]}',
        # the key twice: this reader takes the last, another JSON reader the first
        lambda p: p.replace(b'"state":0', b'"state":2,"state":0'),
        # the same fields in another order, padded, or with an escaped character
        lambda p: b"{" + b",".join(sorted(p[1:-1].split(b","), reverse=True)) + b"}",
        lambda p: p.replace(b",", b", "),
        lambda p: p.replace(b'"fleet"', b'"\\u0066leet"'),
    ],
)
def test_a_resume_is_verified_over_exactly_the_bytes_its_encoder_writes(edit: object) -> None:
    """Both people's signatures must cover the bytes every reader applies: a resume
    whose signed payload is not the canonical encoding of the command it carries is
    refused as malformed. A kill in the same form still stops (never gated)."""
    resume = _command(TradingState.ACTIVE)
    payload = msgspec.json.Encoder(order="sorted").encode(resume)
    assert check_state(resume, _signed_bytes(payload), KIT.roster, now_ns=NOW, live=True)
    # an earlier version's resume (no `ramp` field written) is canonical too
    legacy = payload.replace(b',"ramp":[]', b"")
    assert legacy != payload
    assert check_state(resume, _signed_bytes(legacy), KIT.roster, now_ns=NOW, live=True)
    odd = edit(payload)  # type: ignore[operator]
    assert odd != payload
    with pytest.raises(Refused) as caught:
        check_state(resume, _signed_bytes(odd), KIT.roster, now_ns=NOW, live=True)  # type: ignore[arg-type]
    assert caught.value.reason is TrustReason.MALFORMED, caught.value
    kill = _command(TradingState.HALTED)
    stop = edit(msgspec.json.Encoder(order="sorted").encode(kill))  # type: ignore[operator]
    proof = add_signature(new_envelope(COMMAND_PAYLOAD_TYPE, stop), ALICE.key)
    assert check_state(kill, proof, KIT.roster, now_ns=NOW, live=True).actor == "alice"
