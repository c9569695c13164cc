"""A flag state keeps each distinct proof once: its record grows linearly with the fleet.

A rollout stage's proof names every node of its rollout. Before, the state held a copy
of the proof that set each node's value, per node, so a stage over the whole fleet made
a record of the fleet's size squared (about 2.3 MB at 200 nodes with 15-character ids,
past NATS's 1 MB message bound: the stage could not be stored). Each node must still
hold exactly the proof of the change that set its value, and a record in the earlier
shape (per node, the proof) still reads the same. An index naming no proof of the
table, or a record in both shapes, is undecodable, never read as unsigned.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knightwatch.control.node.flags import ENCODER, STATE_DECODER, decode_state, state_key
from knightwatch.flags.state import FlagChange, FlagState, StateUnavailable, _commit
from knightwatch.flags.state import _StateFile as StateFile
from knightwatch.inputs import UNDECODABLE

FLAG = "risk.quote_wide"


def fleet(size: int) -> tuple[str, ...]:
    return tuple(f"node-{i:04d}-ldn4x" for i in range(size))  # 15 characters, as measured


def stage_proof(order: tuple[str, ...], stage: int) -> str:
    """Stands for a rollout stage's signed proof: it names the rollout's every node."""
    return msgspec.json.encode({"stage": stage, "rollout_nodes": order, "sig": "x" * 88}).decode()


def change(nodes: tuple[str, ...], value: bool, proof: str) -> FlagChange:
    return FlagChange(FLAG, value, nodes, "alice", "bob", "stage", "rollout", 1, {}, 0, proof)


@pytest.mark.parametrize("size", [50, 150, 200, 1000])
def test_a_full_fleet_rollout_keeps_the_record_linear_in_the_fleet(size: int) -> None:
    """Canary on one node, then the rest: every node's own proof, each proof stored once."""
    order = fleet(size)
    canary, rest = stage_proof(order, 0), stage_proof(order, 1)
    state = FlagState(FLAG).with_change(change(order[:1], True, canary))
    state = state.with_change(change(order[1:], True, rest))
    raw = ENCODER.encode(state)
    # the two proofs once each, plus a bounded amount per node (its id, value and index)
    assert len(raw) <= len(canary) + len(rest) + 64 * size, len(raw)
    back = decode_state(FLAG, raw)
    assert back.proof_for(order[0]) == canary
    assert all(back.proof_for(n) == rest for n in order[1:])
    assert len(raw) < 1 << 20  # NATS's default message bound


# a change: which of 6 nodes it names, its value, and which of 4 proofs ("" unsigned) it carries
changes = st.lists(
    st.tuples(
        st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True),
        st.booleans(),
        st.integers(0, 3),
    ),
    max_size=12,
)
PROOFS = ("", "proof-a", "proof-b", "proof-c")


@settings(max_examples=300, deadline=None)
@given(changes, st.booleans())
def test_every_node_holds_the_proof_of_the_change_that_set_its_value(
    history: list[tuple[list[int], bool, int]], legacy_start: bool
) -> None:
    """Against a model (per node: the last change naming it), through encode and decode,
    from an empty state or one in the earlier shape; no proof held that no node's is."""
    nodes = [f"n{i}" for i in range(6)]
    values: dict[str, bool] = {}
    proofs: dict[str, str] = {}
    if legacy_start:
        values = {"n0": True, "n5": False}
        proofs = {"n0": "old-0", "n5": "old-5"}
        raw = ENCODER.encode(FlagState(FLAG, 3, dict(values), {}, dict(proofs)))
        assert b'"proofs":{' in raw  # the earlier shape, as a record written before holds
        state = STATE_DECODER.decode(raw)
    else:
        state = FlagState(FLAG)
    for named, value, which in history:
        targets = tuple(nodes[i] for i in named)
        state = state.with_change(change(targets, value, PROOFS[which]))
        state = STATE_DECODER.decode(ENCODER.encode(state))
        for n in targets:
            values[n] = value
            proofs[n] = PROOFS[which]
    assert state.node_values == values
    for n in nodes:
        assert state.proof_for(n) == proofs.get(n, ""), n
    held = {p for p in proofs.values() if p}
    if history:
        assert sorted(state.proof_table) == sorted(held)  # each once, none left over


def test_the_memory_store_commits_in_the_new_shape_over_an_earlier_record() -> None:
    """A store holding a record in the earlier shape: the next change keeps every other
    node's own proof and writes the table."""
    data = StateFile(
        {FLAG: FlagState(FLAG, 2, {"n0": True, "n1": True}, {}, {"n0": "a", "n1": "b"})}
    )
    updated = _commit(data, change(("n1",), False, "c"), 2)
    assert updated.revision == 3 and not updated.proofs_by_node
    assert (updated.proof_for("n0"), updated.proof_for("n1")) == ("a", "c")


@pytest.mark.parametrize(
    ("record", "rule"),
    [
        ({"proof_table": ["a"], "proof_of": {"n1": 1}}, "proof_of['n1'] is 1"),
        ({"proof_table": [], "proof_of": {"n1": 0}}, "proof_table holds 0"),
        ({"proof_table": ["a"], "proof_of": {"n1": -1}}, "proof_of"),
        ({"proofs": {"n0": "a"}, "proof_table": ["b"], "proof_of": {"n1": 0}}, "in one shape"),
    ],
)
def test_a_record_naming_a_proof_it_does_not_hold_is_unreadable(
    record: dict[str, object], rule: str
) -> None:
    """Read as unsigned, the node would refuse even the stop direction and keep its value;
    unreadable, it drops to the safe default (the flags layer's rule for such records)."""
    raw = msgspec.json.encode(
        {"flag_id": FLAG, "revision": 4, "node_values": {"n1": True}, **record}
    )
    with pytest.raises(UNDECODABLE) as caught:
        STATE_DECODER.decode(raw)
    assert rule in str(caught.value), caught.value
    with pytest.raises(StateUnavailable, match=state_key(FLAG).replace(".", r"\.")):
        decode_state(FLAG, raw)
