"""Signed resume-ramp records and the check a node runs before it takes one.

A ramp record sets the fraction of its rate, notional and exposure limits every
node in a scope trades at while a resume ramps back, and when the ramp is done.
It is the one record besides a kill-state entry that nodes apply to their
Guard, so it is verified where it is applied, not trusted because NATS
authorization let someone write it: the writer (the operator or approver who
applies the resume, or the replay's operator) signs every record it stores,
and a node takes a record only if one signature verifies against its roster
by a key valid then (and now, for a record that arrives live), of a member with
the operator or approver role.

A record a node cannot verify (unsigned, forged, by a node's or an unknown key,
changed after signing) is held as the tightest stage there is (fail closed):
so a forged "done" written over a ramp, meant to lift its limits early, holds
the scope at 10% instead. A verified record older than the one a node already
holds for the slot (a replay of an earlier ramp's record) changes nothing.

A record counts only in the fleet it was written for. The same people hold keys on
the staging and the production roster: a staging ramp's record stored again in
production's ramp bucket verified there, and production's nodes took it as the slot's
ramp. The writer signs the record's bytes with the fleet of its roster (`Roster.fleet`)
added as one more field, `fleet`, and a reader refuses a record made for another fleet
(`wrong_fleet`), as it does a resume. A record of an unnamed fleet is signed over its
bytes alone, byte for byte as before.
"""

from __future__ import annotations

import msgspec

from knightwatch.inputs import UNDECODABLE
from knightwatch.release.dsse import Envelope, add_signature, new_envelope
from knightwatch.release.keys import SigningKey
from knightwatch.trust.command import Checked, Refused, TrustReason, opened, signers_of
from knightwatch.trust.roster import Role, Roster, fleet_mismatch

RAMP_PAYLOAD_TYPE = "application/vnd.knightwatch.ramp-record+json"
RAMP_WRITERS = frozenset({Role.OPERATOR, Role.APPROVER})
"""Who may sign a ramp record: the people who request and apply resumes."""


_SORTED = msgspec.json.Encoder(order="sorted")
_OBJECT = msgspec.json.Decoder(dict[str, object])


class _Named(msgspec.Struct):
    fleet: str = ""


_NAMED = msgspec.json.Decoder(_Named)


def _with_fleet(payload: bytes, fleet: str) -> bytes:
    """What is signed for a record whose canonical bytes are `payload`, in `fleet`: the
    bytes themselves for an unnamed fleet, else the record with `fleet` added (sorted)."""
    if not fleet:
        return payload
    return _SORTED.encode({**_OBJECT.decode(payload), "fleet": fleet})


def sign_ramp(payload: bytes, key: SigningKey, *, fleet: str = "") -> Envelope:
    """A proof over `payload`, the record's canonical bytes without its proof, for `fleet`
    (the writer's `Roster.fleet`; "" for an unnamed one)."""
    return add_signature(new_envelope(RAMP_PAYLOAD_TYPE, _with_fleet(payload, fleet)), key)


def _fleet_signed(signed: bytes, payload: bytes) -> str:
    """The fleet a proof's `signed` bytes name for a record whose bytes are `payload`
    ("" when they are `payload` itself); `Refused` when they are not that record."""
    if signed == payload:
        return ""
    try:
        fleet = _NAMED.decode(signed).fleet
        ok = bool(fleet) and _with_fleet(payload, fleet) == signed
    except UNDECODABLE:
        ok = False
    if not ok:
        raise Refused(TrustReason.PAYLOAD_MISMATCH, "the record differs from what was signed")
    return fleet


def check_ramp(
    proof: Envelope | None, payload: bytes, roster: Roster | None, *, at_ns: int, now_ns: int | None
) -> Checked:
    """Who signed a ramp record whose canonical bytes are `payload`; `Refused` with a
    reason code if a node must not take it (`wrong_fleet`: made for another fleet than
    `roster`'s).

    The signing key must be valid at `at_ns` (the record's own time) and, for a record
    that arrives as news (`now_ns` given), now as well; a stored record read at a
    restart is judged at its own time, as a stored kill is."""
    roster, proof, signed = opened(proof, roster, RAMP_PAYLOAD_TYPE, "the ramp record")
    fleet = _fleet_signed(signed, payload)
    members = signers_of(proof, signed, roster, at_ns, now_ns)
    allowed = [m for m in members if RAMP_WRITERS & set(m.roles)]
    if not allowed:
        names = ", ".join(sorted(m.name for m in members))
        raise Refused(
            TrustReason.ROLE_NOT_ALLOWED,
            f"signed by {names}: a ramp record needs an operator's or approver's signature",
        )
    wrong_fleet = fleet_mismatch("ramp record", fleet, roster)
    if wrong_fleet is not None:
        raise Refused(TrustReason.WRONG_FLEET, wrong_fleet)
    return Checked(allowed[0].name)
