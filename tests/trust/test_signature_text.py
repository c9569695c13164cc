"""A signature whose text is no base64 at all (a character outside ASCII) under a key on the
roster: every signed-record check refuses it as a signature that does not verify, never
with a traceback (a node's handler or its start-up walk of the stored history would die
on one such entry instead of refusing it)."""

from __future__ import annotations

import msgspec
import pytest

from knightwatch.release.dsse import Envelope, Signature
from knightwatch.state import Scope, TradingState
from knightwatch.trust.command import (
    Refused,
    StateCommand,
    TrustReason,
    check_state,
    sign_command,
)
from knightwatch.trust.rampproof import check_ramp, sign_ramp
from knightwatch.trust.target import TargetCommand, check_target, sign_target

from ..identities import ALICE, KIT

NOW = 10**18
HOUR = 3600 * 10**9
TEXTS = ["é" * 88, "Ω", "\u0430" * 88, "\x00" * 88, "=" * 88 + "é"]


def _garbled(proof: Envelope, text: str) -> Envelope:
    """`proof` with each signature's text replaced by `text` (its key id kept)."""
    signatures = tuple(Signature(s.keyid, text) for s in proof.signatures)
    return msgspec.structs.replace(proof, signatures=signatures)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("state", [TradingState.HALTED, TradingState.ACTIVE])
@pytest.mark.parametrize("live", [True, False])
def test_a_kill_switch_command_with_a_non_ascii_signature_is_refused(
    text: str, state: TradingState, live: bool
) -> None:
    command = StateCommand(Scope.FLEET, "fleet", state, "t", "alice", "c" * 32, NOW, NOW + HOUR)
    if state is TradingState.ACTIVE:
        command = msgspec.structs.replace(command, supersedes="k" * 32, decided_on=2)
    proof = _garbled(sign_command(command, ALICE.key), text)
    with pytest.raises(Refused) as caught:
        check_state(command, proof, KIT.roster, now_ns=NOW, live=live, stored_ns=NOW)
    assert caught.value.reason is TrustReason.SIGNATURE_INVALID


@pytest.mark.parametrize("text", TEXTS)
def test_a_ramp_record_with_a_non_ascii_signature_is_refused(text: str) -> None:
    payload = b'{"ramp":"record"}'
    proof = _garbled(sign_ramp(payload, ALICE.key), text)
    with pytest.raises(Refused) as caught:
        check_ramp(proof, payload, KIT.roster, at_ns=NOW, now_ns=NOW)
    assert caught.value.reason is TrustReason.SIGNATURE_INVALID


@pytest.mark.parametrize("text", TEXTS)
def test_a_target_request_with_a_non_ascii_signature_is_refused(text: str) -> None:
    command = TargetCommand("r1", "d" * 64, "t", "alice", "c" * 32, NOW, NOW + 10**9, 0)
    proof = _garbled(sign_target(command, ALICE), text)
    with pytest.raises(Refused) as caught:
        check_target(proof, KIT.roster, now_ns=NOW)
    assert caught.value.reason is TrustReason.SIGNATURE_INVALID
